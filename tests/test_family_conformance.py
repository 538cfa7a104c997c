"""The checks every encoder family passes, one parametrized table (as FAMILY_MODELS in
tests/test_family_training.py): sentence-transformers CrossEncoder and SentenceTransformer give
the same scores / embeddings as ours (packed and unpacked), our saved ST folder loads in ST with
the same embeddings, and dp / fsdp / tp on 8 forced CPU devices equal one device.

Per-family math (per-layer parity, masks, bucket tables, strict loading, round trips) stays in
tests/test_family_<name>.py; training (gradients vs PyTorch, bf16) is tests/test_family_training.py.
Each family's model: a tiny random one sized to all-MiniLM-L6-v2's real WordPiece vocabulary
(the tokenizer is not under test, real text only needs real tokens), and an ST folder
Transformer + mean Pooling + Normalize over a bare tiny encoder.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
END_TOL = 1e-4   # fp32 whole model vs PyTorch, the project bound


@dataclass(frozen=True)
class Family:
    tokenizer: str                # tiny_hf function building the tokenizer from MiniLM's vocabulary
    dims: dict                    # make_tiny overrides shared by the cross-encoder and the encoder
    ce: dict                      # make_tiny overrides of the cross-encoder only
    enc: dict                     # make_tiny overrides of the ST folder's encoder only
    st_max_seq_length: int
    ce_max_length: int | None     # CrossEncoder / ST CrossEncoder max_length (None: the model's)
    ce_queries: int               # pairs: the first ce_queries queries x every text
    ce_buckets: tuple             # BucketConfig kwargs, each checked against ST
    be_buckets: dict              # BucketConfig kwargs of the unpacked run (its folder is saved)
    be_packed: dict               # BucketConfig kwargs of the packed run
    mid: tuple = (150, 153)      # texts: 3 shortest, passages[mid[0]:mid[1]], 3 longest, ...
    longest: int = 3
    meshes: dict = field(default_factory=dict)   # forced_devices.encoders_equal_on_meshes kwargs


def _ce_pack_default_and_pinned(max_len):
    # CrossEncoder's defaults (it packs by default on CPU), packing pinned to a few lengths
    return (dict(), dict(pack=True), dict(pack=True, lengths=(max_len,), max_segments=16))


FAMILIES = {
    "mpnet": Family(
        tokenizer="mpnet_tokenizer", dims=dict(max_position_embeddings=514, intermediate_size=64),
        ce=dict(), enc=dict(), st_max_seq_length=384, ce_max_length=None, ce_queries=3,
        ce_buckets=_ce_pack_default_and_pinned(512), be_buckets=dict(),
        be_packed=dict(pack=True, lengths=(64, 512), max_segments=8),
        # tp: 4 heads over model=2
        meshes=dict(words="the a of relative position bucket mpnet packed segment score pair", n_pairs=27,
                    lengths=(32, 128), ce={False: ("dp", "fsdp", "tp"), True: ("dp", "fsdp", "tp")},
                    be={False: ("dp", "fsdp", "tp"), True: ("dp", "fsdp", "tp")})),
    "deberta-v2": Family(
        tokenizer="deberta_tokenizer", dims=dict(max_position_embeddings=512, intermediate_size=64),
        # the cross-encoder: token types and separate position projections; the encoder v3-style
        ce=dict(type_vocab_size=2, share_att_key=False, position_buckets=32, max_relative_positions=128),
        enc=dict(position_buckets=16, max_relative_positions=64), st_max_seq_length=384,
        ce_max_length=None, ce_queries=3,
        ce_buckets=(dict(lengths=(128, 512), pack=False), dict(lengths=(128, 512), pack=True),  # few lengths:
                    dict(lengths=(512,), pack=True, max_segments=16)),                         # each compiles
        be_buckets=dict(lengths=(128, 512), pack=False),
        be_packed=dict(pack=True, lengths=(64, 512), max_segments=8),
        # the cross-encoder packed (segments, restarting positions), the bi-encoder not: both paths
        meshes=dict(words="the a of relative position bucket deberta packed segment score pair", n_pairs=27,
                    lengths=(128,), ce={True: ("dp", "fsdp", "tp")}, be={False: ("dp", "fsdp")})),
    "modernbert": Family(
        tokenizer="modernbert_tokenizer",
        dims=dict(max_position_embeddings=8192, intermediate_size=64, local_attention=16, num_hidden_layers=3),
        ce=dict(classifier_pooling="mean", norm_bias=True, attention_bias=True, mlp_bias=True,
                classifier_bias=True),
        enc=dict(), st_max_seq_length=1024, ce_max_length=1024, ce_queries=2,
        # on CPU CrossEncoder packs by default: pack=False is the unpacked case
        ce_buckets=(dict(pack=False, lengths=(256, 1024)), dict(pack=True, lengths=(1024,), max_segments=16)),
        be_buckets=dict(pack=False, lengths=(64, 256, 1024)),
        be_packed=dict(pack=True, lengths=(64, 1024), max_segments=8), mid=(150, 152), longest=2,
        # one shape per run: compiles dominate here; the bi-encoder's packed path is the
        # cross-encoder's, so one compile set fewer
        meshes=dict(words="the a of rotary local window global attention modern packed segment score pair",
                    n_pairs=19, lengths=(128,), ce={False: ("dp", "fsdp", "tp"), True: ("dp", "fsdp", "tp")},
                    be={False: ("dp", "fsdp", "tp")})),
}


def _tokenizer_extras(name: str, tok) -> dict:
    if name != "modernbert":
        return {}
    # ModernBERT's special ids come from the tokenizer (tiny_hf's defaults are past this vocab)
    return dict(pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dirs(request, tmp_path_factory, minilm_dir):
    """(name, spec, cross-encoder folder, ST bi-encoder folder) of one family."""
    import tiny_hf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules
    name, spec = request.param, FAMILIES[request.param]
    tok = getattr(tiny_hf, spec.tokenizer)(minilm_dir)
    dims = dict(vocab_size=len(tok), **spec.dims, **_tokenizer_extras(name, tok))
    ce_dir = tmp_path_factory.mktemp(f"{name}_ce")
    tiny_hf.make_tiny(name, ce_dir, num_labels=1, seed=21, **dims, **spec.ce)
    tok.save_pretrained(str(ce_dir))
    enc_dir = tmp_path_factory.mktemp(f"{name}_enc")
    tiny_hf.make_tiny(name, enc_dir, head=False, seed=3, **dims, **spec.enc)
    tok.save_pretrained(str(enc_dir))
    st_dir = tmp_path_factory.mktemp(f"{name}_st")
    SentenceTransformer(modules=[st_modules.Transformer(str(enc_dir), max_seq_length=spec.st_max_seq_length),
                                 st_modules.Pooling(32, "mean"), st_modules.Normalize()],
                        device="cpu").save(str(st_dir))
    return name, spec, ce_dir, st_dir


def _texts(data_dir, spec: Family):
    """Real queries and passages: the shortest, middle and longest ones (past every bucket and
    relative range), all of the longest joined (truncated), the empty text and one letter."""
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:6]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl")][:300]
    passages.sort(key=len)
    return queries, (passages[:3] + passages[spec.mid[0]:spec.mid[1]] + passages[-spec.longest:]
                     + [" ".join(passages[-6:]), "", "a"])


def test_cross_encoder_equals_sentence_transformers(family_dirs, data_dir):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    name, spec, ce_dir, _ = family_dirs
    queries, docs = _texts(data_dir, spec)
    pairs = [(q, d) for q in queries[:spec.ce_queries] for d in docs] + [(docs[-3], docs[-4]), ("", "")]
    length = {} if spec.ce_max_length is None else dict(max_length=spec.ce_max_length)
    want = STCrossEncoder(str(ce_dir), device="cpu", **length).predict(pairs)
    for kw in spec.ce_buckets:
        got = CrossEncoder(ce_dir, **length, **({"buckets": BucketConfig(**kw)} if kw else {})).predict(pairs)
        assert np.abs(got - want).max() <= END_TOL, (name, kw)


def test_bi_encoder_equals_sentence_transformers(family_dirs, data_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    name, spec, _, st_dir = family_dirs
    queries, docs = _texts(data_dir, spec)
    sentences = queries + docs
    want = SentenceTransformer(str(st_dir), device="cpu").encode(sentences, batch_size=5)
    unpacked = BiEncoder(st_dir, **({"buckets": BucketConfig(**spec.be_buckets)} if spec.be_buckets else {}))
    got = unpacked.encode(sentences)
    assert got.shape == want.shape == (len(sentences), 32)
    assert np.abs(got - want).max() <= END_TOL
    # the ST folder ends in Normalize: unit rows (the empty text too), to fp32 rounding
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    packed = BiEncoder(st_dir, buckets=BucketConfig(**spec.be_packed))
    assert np.abs(packed.encode(sentences) - want).max() <= END_TOL
    unpacked.save(tmp_path / "saved")
    reloaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert np.abs(reloaded.encode(sentences, batch_size=8) - got).max() <= END_TOL


def test_dp_fsdp_tp_on_8_devices_equal_one_device(family_dirs):
    from forced_devices import run_on_devices
    name, _, ce_dir, st_dir = family_dirs
    run_on_devices([__file__, name, str(ce_dir), str(st_dir)], devices=8)  # prints per-mesh diffs


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from forced_devices import encoders_equal_on_meshes
    family, ce_dir, st_dir = sys.argv[1:4]
    sys.exit(encoders_equal_on_meshes(family, ce_dir, st_dir, **FAMILIES[family].meshes))

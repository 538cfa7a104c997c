"""BiEncoder on Qwen3 decoders (a Qwen3-Embedding-like model): embeddings equal to
sentence-transformers' SentenceTransformer with lasttoken pooling, packed (several texts per row,
each read at its own last token) and unpacked, with the query prompt, texts truncated at
max_seq_length, truncate_dim, an empty text (a decoder tokenizer adds no special tokens, so ""
has no tokens), ST's default pooling for plain decoder folders, and save -> ST.

The reference is tests/tiny_llm.py's make_st_lasttoken_embedder: Qwen3Model -> Pooling(lasttoken)
-> Normalize, max_seq_length 48, tokenizer saved with padding_side="left" (as Qwen3-Embedding).
We right-pad and read each segment's last real token; ST's lasttoken finds the last mask==1
position, so the padding side changes nothing but rounding.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_llm import PAIRS, make_st_lasttoken_embedder, make_tiny_llm

# fp32 end to end, torch vs XLA op order, unit-norm vectors: measured <= 1e-6 here (~2e-6 for the
# 128-token plain folder); 1e-4 is the end-to-end bound of the other family tests.
END_TOL = 1e-4
MAX_SEQ = 48
LONG = " ".join(["my friend reads a long book near the sea."] * 8)   # ~80 tokens alone: cut at 48

TEXTS = ([q for q, _ in PAIRS] + [d for _, d in PAIRS]
         + ["yes", "the cat sees the red ball today.", LONG + " the end.", "", "yes"])


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """(ST folder, the base Qwen3Model folder) built once for the module."""
    root = tmp_path_factory.mktemp("qwen3_embedder")
    make_st_lasttoken_embedder(root, max_seq_length=MAX_SEQ)
    return root / "st", root / "hf"


@pytest.fixture(scope="module")
def st_model(embedder):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(embedder[0]), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def reference(st_model):
    """ST's embeddings of TEXTS, plain and with the "query" prompt (string concatenation)."""
    return st_model.encode(TEXTS), st_model.encode(TEXTS, prompt_name="query")


@pytest.fixture(scope="module")
def packed(embedder):
    from xenc_jax.bi_encoder import BiEncoder
    return BiEncoder(embedder[0])


def _max(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_reads_st_folder_settings(packed, st_model):
    """max_seq_length 48 (sentence_bert_config.json; ST also saves it as the tokenizer's
    model_max_length); the prompts and the lasttoken -> Normalize pipeline from the folder."""
    assert packed.max_seq_length == st_model.max_seq_length == MAX_SEQ
    assert packed.pooling_modes == ("lasttoken",)
    assert [kind for kind, _ in packed._ops] == ["normalize"]
    assert packed.prompts == st_model.prompts


def test_packed_and_unpacked_equal_sentence_transformers(embedder, packed, reference):
    """Default buckets pack several texts into one row; lasttoken must read each segment's own last
    token (a wrong index would read a neighbour or padding: differences of order 1, not 1e-6).
    The long texts are truncated at 48 tokens, where ST also cuts (right truncation, no suffix)."""
    from xenc_jax.batching import make_batches, tokenize_texts
    from xenc_jax.bi_encoder import BiEncoder
    tok = packed.tokenizer
    assert len(tok(LONG)["input_ids"]) > MAX_SEQ   # the truncation path is exercised
    assert len(tok(packed.prompts["query"] + TEXTS[0])["input_ids"]) > 10
    enc = tokenize_texts(tok, [t for t in TEXTS if t], MAX_SEQ)
    rows = [int((ids >= 0).sum()) for b in make_batches(enc, packed.buckets, MAX_SEQ, 0) for ids in b.example_ids]
    assert max(rows) >= 4, rows   # really packed: several texts share a row

    plain, query = reference
    unpacked = BiEncoder(embedder[0], buckets=dataclasses.replace(packed.buckets, pack=False))
    for name, model in (("packed", packed), ("unpacked", unpacked)):
        got, got_q = model.encode(TEXTS), model.encode(TEXTS, prompt_name="query")
        assert got.shape == plain.shape == (len(TEXTS), 32)
        d, dq = _max(got, plain), _max(got_q, query)
        print(f"{name}: max diff plain {d:.2e}, query {dq:.2e}")
        assert d <= END_TOL and dq <= END_TOL, (name, d, dq)
        # encode_query-style explicit prompt string == prompt_name
        assert _max(model.encode(TEXTS, prompt=model.prompts["query"]), got_q) == 0.0
    # duplicates ("yes" twice) get identical vectors: each distinct text is embedded once
    assert np.array_equal(got[TEXTS.index("yes")], got[len(TEXTS) - 1])


def test_empty_text_is_st_zero_vector(packed, reference):
    """"" has no tokens with this tokenizer; ST pads the whole row, lasttoken gathers from
    token_embeddings * mask = 0 and Normalize keeps 0: exactly zero, so the bound is exact."""
    i = TEXTS.index("")
    assert np.array_equal(reference[0][i], np.zeros(32, np.float32))
    assert np.array_equal(packed.encode(TEXTS)[i], reference[0][i])
    assert np.array_equal(packed.encode([""]), np.zeros((1, 32), np.float32))   # ST itself fails on this batch
    assert packed.encode([""], prompt_name="query")[0] @ reference[1][0] != 0   # the prompt alone has tokens


def test_empty_text_with_cls_pooling_is_refused(embedder):
    """ST's cls vector of an all-padding row is a padding token's hidden state: not reproduced,
    so it is an error that names the text instead of a silently different vector."""
    from xenc_jax.bi_encoder import BiEncoder
    model = BiEncoder(embedder[0], pooling="cls")
    with pytest.raises(ValueError, match=r"texts\[1\].*no tokens"):
        model.encode(["yes", ""])


def test_truncate_dim_equals_sentence_transformers(embedder, packed, reference):
    """ST slices after Normalize and does not renormalize: the norms of the 8-dim vectors are < 1.
    Same bound as the full vectors (a slice of them)."""
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    st8 = SentenceTransformer(str(embedder[0]), device="cpu", local_files_only=True, truncate_dim=8)
    want = st8.encode(TEXTS, prompt_name="query")
    got = BiEncoder(embedder[0], truncate_dim=8).encode(TEXTS, prompt_name="query")
    assert got.shape == want.shape == (len(TEXTS), 8)
    assert _max(got, want) <= END_TOL
    assert _max(packed.encode(TEXTS, prompt_name="query", truncate_dim=8), want) <= END_TOL
    norms = np.linalg.norm(got[[j for j, t in enumerate(TEXTS) if t]], axis=1)
    assert norms.max() < 0.99
    renorm = packed.encode(TEXTS, prompt_name="query", truncate_dim=8, normalize_embeddings=True)
    assert _max(renorm, st8.encode(TEXTS, prompt_name="query", normalize_embeddings=True)) <= END_TOL


def test_plain_decoder_folders_get_st_default_pooling(embedder, tmp_path):
    """A plain HF folder (no modules.json): ST pools a ...ForCausalLM checkpoint at the last token
    and anything else (the embedder's bare Qwen3Model) by mean, with no Normalize; max_seq_length
    is the tokenizer's 128. The bound is END_TOL (measured ~2e-6: unnormalized vectors)."""
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    make_tiny_llm("qwen3-causal", tmp_path / "causal", template=None)
    for folder, mode in ((tmp_path / "causal", "lasttoken"), (embedder[1], "mean")):
        ref = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        assert ref[1].get_config_dict()["pooling_mode"] == mode
        model = BiEncoder(folder)
        assert model.pooling_modes == (mode,) and model.max_seq_length == ref.max_seq_length == 128
        d = _max(model.encode(TEXTS), ref.encode(TEXTS))
        print(f"plain {folder.name} ({mode}): max diff {d:.2e}")
        assert d <= END_TOL, (folder, d)


def test_save_then_sentence_transformers_loads_same_embeddings(packed, reference, tmp_path):
    """BiEncoder.save writes an ST folder (Qwen3Model weights, tokenizer with its padding side,
    Pooling(lasttoken), Normalize, prompts, max_seq_length 48); ST's embeddings from it equal the
    original ST's (same weights: measured 0) and ours within END_TOL; reloading here is exact."""
    from sentence_transformers import SentenceTransformer

    from xenc_jax.bi_encoder import BiEncoder
    out = packed.save(tmp_path / "saved")
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling", "Normalize"]
    assert st.max_seq_length == MAX_SEQ and st.prompts == packed.prompts
    assert st[1].get_config_dict()["pooling_mode"] == "lasttoken"
    got_q = st.encode(TEXTS, prompt_name="query")
    assert _max(got_q, reference[1]) <= END_TOL
    assert _max(st.encode(TEXTS), reference[0]) <= END_TOL
    ours = packed.encode(TEXTS, prompt_name="query")
    assert _max(BiEncoder(out).encode(TEXTS, prompt_name="query"), ours) == 0.0


def test_bf16_params_embed_close_to_fp32(embedder, packed):
    """param_dtype="bfloat16": the decoder's params in bf16 (2^-9 relative rounding each), the
    embeddings still fp32 and unit-norm. 2e-2 on unit vectors: ~10x what bf16 weights move them
    through two layers, far below a wrong pooling row (another token's state: O(1))."""
    from xenc_jax.bi_encoder import BiEncoder
    b16 = BiEncoder(embedder[0], param_dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(b16.params["encoder"])} == {jnp.dtype(jnp.bfloat16)}
    want, got = packed.encode(TEXTS), b16.encode(TEXTS)
    assert got.dtype == np.float32
    assert _max(got, want) <= 2e-2, _max(got, want)

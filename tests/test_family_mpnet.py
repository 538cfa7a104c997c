"""MPNet (model_type mpnet): parity with PyTorch transformers per module and end to end (fp32),
strict loading, save -> PyTorch, sentence-transformers CrossEncoder / SentenceTransformer
(packed and unpacked), and dp / fsdp on 8 forced CPU devices.

Inputs are longer than the bucket range (relative distances past max_distance 128) so every
bucket, log-spaced ones included, is exercised. HF MPNet always buckets with 32 buckets (its
compute_position_bias never passes the config's count), so tables of 32 and 64 rows are tested;
fewer than 32 rows fails in PyTorch too and is rejected by name.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_TOL = 1e-5
END_TOL = 1e-4
LONG = dict(max_position_embeddings=202)
LENGTHS = (150, 9, 40, 1, 131)


def _ours(pt, ids, mask, **kw):
    import jax.numpy as jnp
    module = pt.module(**kw)
    return module.apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask),
                        capture_intermediates=True, mutable=["intermediates"])


def test_bucket_table_equals_torch():
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from xenc_jax.models.positions import relative_position_buckets
    d = 4100
    want = MPNetEncoder.relative_position_bucket(torch.arange(-d, d + 1)).numpy()
    np.testing.assert_array_equal(relative_position_buckets(d), want)


@pytest.mark.parametrize("buckets", [32, 64])
def test_encoder_parity_per_layer(buckets, tmp_path):
    import torch
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    ref = make_tiny("mpnet", tmp_path, head=False, seed=1, relative_attention_num_buckets=buckets, **LONG)
    pt = load_pretrained(tmp_path, head=False, with_tokenizer=False)
    assert pt.config.relative_attention_num_buckets == buckets and pt.config.position_offset == 2
    ids, mask, _ = random_batch("mpnet", lengths=LENGTHS, seed=buckets)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    for impl in (None, "xla_chunked"):
        hidden, inter = _ours(pt, ids, mask, attention_impl=impl)
        layers = inter["intermediates"]["encoder"]
        emb = np.asarray(layers["embeddings"]["__call__"][0])
        assert np.abs(emb - out.hidden_states[0].numpy()).max() <= MODULE_TOL
        for i in range(pt.config.num_layers):
            got = np.asarray(layers[f"layer_{i}"]["__call__"][0])
            want = out.hidden_states[i + 1].numpy()
            assert np.abs(got - want).max() <= MODULE_TOL, (impl, i, np.abs(got - want).max())
        # the whole last hidden state, padding positions included
        assert np.abs(np.asarray(hidden) - out.last_hidden_state.numpy()).max() <= END_TOL


@pytest.mark.parametrize("buckets", [32, 64])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_classifier_parity(num_labels, buckets, tmp_path):
    import jax.numpy as jnp
    import torch
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    ref = make_tiny("mpnet", tmp_path, head=True, num_labels=num_labels, seed=2,
                    relative_attention_num_buckets=buckets, **LONG)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    assert pt.config.num_labels == num_labels
    ids, mask, _ = random_batch("mpnet", lengths=LENGTHS, seed=3)
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    for impl in (None, "xla_chunked"):
        logits, inter = _ours(pt, ids, mask, attention_impl=impl)
        assert logits.shape == (len(LENGTHS), num_labels) and logits.dtype == jnp.float32
        assert np.abs(np.asarray(logits) - want).max() <= END_TOL
        head_out = np.asarray(inter["intermediates"]["head"]["__call__"][0])
        assert np.abs(head_out - want).max() <= END_TOL


def test_relative_positions_follow_position_ids(tmp_path):
    """Two texts packed in one row, positions restarting: each gets its own unpacked outputs."""
    import jax.numpy as jnp
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained
    make_tiny("mpnet", tmp_path, head=False, seed=4, **LONG)
    pt = load_pretrained(tmp_path, head=False, with_tokenizer=False)
    ids, mask, _ = random_batch("mpnet", lengths=(70, 45), seed=5)
    alone = np.asarray(pt.module().apply({"params": pt.params}, ids, mask))
    row = np.concatenate([ids[0, :70], ids[1, :45]])[None]
    seg = np.array([[1] * 70 + [2] * 45])
    pos = np.concatenate([np.arange(70), np.arange(45)])[None] + pt.config.position_offset
    packed = np.asarray(pt.module().apply({"params": pt.params}, jnp.asarray(row), jnp.asarray(seg),
                                          None, jnp.asarray(pos)))
    assert np.abs(packed[0, :70] - alone[0, :70]).max() <= MODULE_TOL
    assert np.abs(packed[0, 70:] - alone[1, :45]).max() <= MODULE_TOL


def test_round_trip_save_then_pytorch_loads_same_logits(tmp_path):
    import jax.numpy as jnp
    import torch
    import transformers as tf
    from safetensors.numpy import load_file
    from tiny_hf import make_tiny, random_batch

    from xenc_jax.hf.pretrained import load_pretrained, save_pretrained
    make_tiny("mpnet", tmp_path / "orig", head=True, num_labels=3, seed=7, relative_attention_num_buckets=64)
    pt = load_pretrained(tmp_path / "orig", head=True, with_tokenizer=False)
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=True)
    ref = tf.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "saved")).eval()
    assert type(ref).__name__ == "MPNetForSequenceClassification"
    ids, mask, _ = random_batch("mpnet", seed=8)
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    got = np.asarray(pt.module().apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask)))
    assert np.abs(got - want).max() <= END_TOL
    a, b = load_file(str(tmp_path / "orig" / "model.safetensors")), load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # bare encoder: MPNetModel's pooler is dropped on load (unused), the rest round-trips
    make_tiny("mpnet", tmp_path / "bare", head=False, seed=9)
    bare = load_pretrained(tmp_path / "bare", head=False, with_tokenizer=False)
    save_pretrained(tmp_path / "bare_saved", bare.config, bare.params, head=False)
    assert json.loads((tmp_path / "bare_saved" / "config.json").read_text())["architectures"] == ["MPNetModel"]
    a, b = load_file(str(tmp_path / "bare" / "model.safetensors")), load_file(str(tmp_path / "bare_saved" / "model.safetensors"))
    assert set(a) - set(b) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_strict_loading_names_the_problem(tmp_path):
    from safetensors.numpy import load_file, save_file
    from tiny_hf import make_tiny

    from xenc_jax.hf.configs import ConfigError
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.hf.weights import WeightsError
    make_tiny("mpnet", tmp_path, head=True, num_labels=1, seed=10)
    cfg_path, w_path = tmp_path / "config.json", tmp_path / "model.safetensors"
    cfg, tensors = json.loads(cfg_path.read_text()), load_file(str(w_path))

    def with_config(**changes):
        cfg_path.write_text(json.dumps({**cfg, **changes}))

    def with_tensors(t):
        save_file(t, str(w_path))

    for changes, message in ((dict(relative_attention_num_buckets=8), "relative_attention_num_buckets=8"),
                             (dict(pad_token_id=0), "pad_token_id=0"),
                             (dict(is_decoder=True), "is_decoder=True"),
                             (dict(position_embedding_type="relative_key"), "position_embedding_type"),
                             (dict(hidden_act="mish"), "hidden_act='mish'")):
        with_config(**changes)
        with pytest.raises(ConfigError, match=message):
            load_pretrained(tmp_path, with_tokenizer=False)
    with_config()
    key = "mpnet.encoder.relative_attention_bias.weight"
    with_tensors({k: v for k, v in tensors.items() if k != key})
    with pytest.raises(WeightsError, match=r"missing from the checkpoint.*relative_attention_bias"):
        load_pretrained(tmp_path, with_tokenizer=False)
    with_tensors({**tensors, "mpnet.encoder.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match=r"not used by a 'mpnet' model.*mpnet\.encoder\.extra\.weight"):
        load_pretrained(tmp_path, with_tokenizer=False)
    with_tensors({**tensors, key: np.zeros((33, 4), np.float32)})
    with pytest.raises(WeightsError, match=r"wrong shapes: mpnet\.encoder\.relative_attention_bias\.weight \(33, 4\)"):
        load_pretrained(tmp_path, with_tokenizer=False)


# ---- through sentence-transformers, with a real-vocabulary MPNet tokenizer ----

@pytest.fixture(scope="module")
def mpnet_dirs(tmp_path_factory, minilm_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules
    from tiny_hf import make_tiny, mpnet_tokenizer
    tok = mpnet_tokenizer(minilm_dir)
    dims = dict(vocab_size=len(tok), max_position_embeddings=514, intermediate_size=64)
    ce_dir = tmp_path_factory.mktemp("mpnet_ce")
    make_tiny("mpnet", ce_dir, num_labels=1, seed=21, **dims)
    tok.save_pretrained(str(ce_dir))
    enc_dir = tmp_path_factory.mktemp("mpnet_enc")
    make_tiny("mpnet", enc_dir, head=False, seed=3, **dims)
    tok.save_pretrained(str(enc_dir))
    st_dir = tmp_path_factory.mktemp("mpnet_st")
    SentenceTransformer(modules=[st_modules.Transformer(str(enc_dir), max_seq_length=384),
                                 st_modules.Pooling(32, "mean"), st_modules.Normalize()],
                        device="cpu").save(str(st_dir))
    return ce_dir, st_dir


@pytest.fixture(scope="module")
def texts(data_dir):
    root = data_dir / "msmarco-dl19-subset"
    queries = [json.loads(line)["text"] for line in open(root / "queries.jsonl")][:6]
    passages = [json.loads(line)["text"] for line in open(root / "corpus.jsonl")][:300]
    passages.sort(key=len)
    return queries, passages[:3] + passages[150:153] + passages[-3:] + [" ".join(passages[-6:]), "", "a"]


def test_cross_encoder_equals_sentence_transformers(mpnet_dirs, texts):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    ce_dir, _ = mpnet_dirs
    queries, docs = texts
    pairs = [(q, d) for q in queries[:3] for d in docs] + [(docs[-3], docs[-4]), ("", "")]
    want = STCrossEncoder(str(ce_dir), device="cpu").predict(pairs)
    got = CrossEncoder(ce_dir).predict(pairs)
    assert np.abs(got - want).max() <= END_TOL
    for buckets in (BucketConfig(pack=True), BucketConfig(pack=True, lengths=(512,), max_segments=16)):
        packed = CrossEncoder(ce_dir, buckets=buckets).predict(pairs)
        assert np.abs(packed - want).max() <= END_TOL, buckets


def test_bi_encoder_equals_sentence_transformers(mpnet_dirs, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    _, st_dir = mpnet_dirs
    queries, docs = texts
    sentences = queries + docs
    ref = SentenceTransformer(str(st_dir), device="cpu")
    want = ref.encode(sentences, batch_size=5)
    ours = BiEncoder(st_dir)
    got = ours.encode(sentences)
    assert got.shape == want.shape == (len(sentences), 32)
    assert np.abs(got - want).max() <= END_TOL
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    packed = BiEncoder(st_dir, buckets=BucketConfig(pack=True, lengths=(64, 512), max_segments=8))
    assert np.abs(packed.encode(sentences) - want).max() <= END_TOL
    ours.save(tmp_path / "saved")
    reloaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert np.abs(reloaded.encode(sentences, batch_size=8) - got).max() <= END_TOL


# ---- 8 forced CPU devices: dp, fsdp and tp equal one device ----

def test_dp_fsdp_tp_on_8_devices_equal_one_device(mpnet_dirs):
    from forced_devices import run_on_devices
    ce_dir, st_dir = mpnet_dirs
    run_on_devices([__file__, str(ce_dir), str(st_dir)], devices=8)


def _main(ce_dir: str, st_dir: str) -> int:
    sys.path.insert(0, str(REPO))
    import dataclasses

    import jax

    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.sharding import make_mesh
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    words = "the a of relative position bucket mpnet packed segment score pair".split()
    text = lambda n: " ".join(rng.choice(words, n))
    pairs = [(text(int(rng.integers(1, 8))), text(int(rng.integers(1, 90)))) for _ in range(27)] + [("", "")]
    failures = []
    buckets = BucketConfig(lengths=(32, 128), batch_size=8)
    # 4 heads over model=2 (the tiny MLP's 37 units do not divide: left replicated, as the rules say)
    meshes = (("data=8", "dp"), ("fsdp=8", "fsdp"), ("data=4,model=2", "tp"))
    mesh_of = {"data=8": lambda: make_mesh(8, 1), "fsdp=8": lambda: make_mesh(1, 1, fsdp=8),
               "data=4,model=2": lambda: make_mesh(4, 2)}
    for pack in (False, True):
        b = dataclasses.replace(buckets, pack=pack, max_segments=4) if pack else buckets
        want = CrossEncoder(ce_dir, max_length=128, buckets=b).predict(pairs)
        for name, strategy in meshes:
            mesh = mesh_of[name]()
            got = CrossEncoder(ce_dir, max_length=128, buckets=b, mesh=mesh, sharding=strategy).predict(pairs)
            diff = float(np.abs(got - want).max())
            print(f"mpnet cross-encoder {name} {strategy} pack={pack}: max diff {diff:.2e}")
            if got.shape != want.shape or diff > 1e-5:
                failures.append(f"CE {strategy} pack={pack}: {diff}")
        sentences = [p[1] for p in pairs]
        want = BiEncoder(st_dir, buckets=b).encode(sentences)
        for name, strategy in meshes:
            mesh = mesh_of[name]()
            got = BiEncoder(st_dir, buckets=b, mesh=mesh, sharding=strategy).encode(sentences)
            diff = float(np.abs(got - want).max())
            print(f"mpnet bi-encoder {name} {strategy} pack={pack}: max diff {diff:.2e}")
            if got.shape != want.shape or diff > 1e-5:
                failures.append(f"BE {strategy} pack={pack}: {diff}")
    for f in failures:
        print("FAIL", f)
    if failures:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))

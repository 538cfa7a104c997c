"""MPNet (model_type mpnet), its own math: HF's relative bucket table, a 64-row bucket table
(per layer and the last hidden state vs PyTorch, fp32; the classifier on top is the conformance
suite's, num_labels 1 and 3), its config saved back, a bare MPNetModel checkpoint
(pooler dropped by name), its rejected switches. The checks every family passes (per layer and
end to end with HF's 32 buckets, num_labels 1 and 3, packed = unpacked, save -> PyTorch, strict
loading of tensors, bf16, sentence-transformers, 8 forced devices): tests/test_family_conformance.py.

Inputs are longer than the bucket range (relative distances past max_distance 128) so every
bucket, log-spaced ones included, is exercised. HF MPNet always buckets with 32 buckets (its
compute_position_bias never passes the config's count), so tables of 32 and 64 rows are tested;
fewer than 32 rows fails in PyTorch too and is rejected by name.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

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

    from xenc_jax.models.blocks import relative_position_buckets
    d = 4100
    want = MPNetEncoder.relative_position_bucket(torch.arange(-d, d + 1)).numpy()
    np.testing.assert_array_equal(relative_position_buckets(d), want)


@pytest.mark.parametrize("buckets", [64])   # HF's 32: tests/test_family_conformance.py
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
    for impl in (None, "query_chunked"):
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


def test_rejected_switches_are_named(tmp_path):
    from tiny_hf import make_tiny

    from xenc_jax.hf.configs import ConfigError
    from xenc_jax.hf.pretrained import load_pretrained
    make_tiny("mpnet", tmp_path, head=True, num_labels=1, seed=10)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())

    def with_config(**changes):
        cfg_path.write_text(json.dumps({**cfg, **changes}))

    for changes, message in ((dict(relative_attention_num_buckets=8), "relative_attention_num_buckets=8"),
                             (dict(pad_token_id=0), "pad_token_id=0"),
                             (dict(is_decoder=True), "is_decoder=True"),
                             (dict(position_embedding_type="relative_key"), "position_embedding_type"),
                             (dict(hidden_act="mish"), "hidden_act='mish'")):
        with_config(**changes)
        with pytest.raises(ConfigError, match=message):
            load_pretrained(tmp_path, with_tokenizer=False)
    # a missing, unused or wrongly shaped tensor (relative_attention_bias): tests/test_family_conformance.py

"""Parity with PyTorch transformers for every family: per module and end to end, fp32."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tiny_hf import FAMILIES, make_tiny, random_batch
from xenc_jax.hf.pretrained import load_pretrained

MODULE_TOL = 1e-5
END_TOL = 1e-4


def _ours(pt, ids, mask, types, **kw):
    module = pt.module(**kw)
    return module.apply({"params": pt.params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types),
                        capture_intermediates=True, mutable=["intermediates"])


def _torch_inputs(family, ids, mask, types):
    kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if family != "distilbert":
        kw["token_type_ids"] = torch.tensor(types)
    return kw


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_parity_per_layer(family, tmp_path):
    ref = make_tiny(family, tmp_path, head=False, seed=1)
    pt = load_pretrained(tmp_path, head=False, with_tokenizer=False)
    ids, mask, types = random_batch(family)
    with torch.no_grad():
        out = ref(**_torch_inputs(family, ids, mask, types), output_hidden_states=True)
    hidden, inter = _ours(pt, ids, mask, types)
    layers = inter["intermediates"]["encoder"]
    for i in range(pt.config.num_layers):
        got = np.asarray(layers[f"layer_{i}"]["__call__"][0])
        want = out.hidden_states[i + 1].numpy()
        assert np.abs(got - want).max() <= MODULE_TOL, f"layer {i}: {np.abs(got - want).max()}"
    if pt.config.embedding_size == pt.config.hidden_size:
        emb = np.asarray(layers["embeddings"]["__call__"][0])
        assert np.abs(emb - out.hidden_states[0].numpy()).max() <= MODULE_TOL
    # the whole last hidden state, padding positions included
    assert np.abs(np.asarray(hidden) - out.last_hidden_state.numpy()).max() <= END_TOL


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_classifier_parity(family, num_labels, tmp_path):
    ref = make_tiny(family, tmp_path, head=True, num_labels=num_labels, seed=2)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    assert pt.config.num_labels == num_labels
    ids, mask, types = random_batch(family, lengths=(5, 17, 2, 11, 17), seed=3)
    with torch.no_grad():
        want = ref(**_torch_inputs(family, ids, mask, types)).logits.numpy()
    logits, inter = _ours(pt, ids, mask, types)
    assert logits.shape == (5, num_labels) and logits.dtype == jnp.float32
    assert np.abs(np.asarray(logits) - want).max() <= END_TOL
    head_out = np.asarray(inter["intermediates"]["head"]["__call__"][0])
    assert np.abs(head_out - want).max() <= END_TOL


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_bf16_compute_close_to_fp32(family, tmp_path):
    make_tiny(family, tmp_path, head=True, num_labels=3, seed=4)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    ids, mask, types = random_batch(family, seed=5)
    f32, _ = _ours(pt, ids, mask, types)
    b16, _ = _ours(pt, ids, mask, types, dtype=jnp.bfloat16)
    assert b16.dtype == jnp.float32  # logits upcast
    rel = np.abs(np.asarray(b16) - np.asarray(f32)).max() / np.abs(np.asarray(f32)).max()
    assert rel <= 2e-2, rel


def test_dropout_is_active_only_when_not_deterministic(tmp_path):
    make_tiny("bert", tmp_path, head=True, num_labels=1, seed=6)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    ids, mask, types = random_batch("bert")
    m = pt.module()
    det = m.apply({"params": pt.params}, ids, mask, types)
    det2 = m.apply({"params": pt.params}, ids, mask, types)
    drop = m.apply({"params": pt.params}, ids, mask, types, deterministic=False,
                   rngs={"dropout": jax.random.key(0)})
    np.testing.assert_array_equal(np.asarray(det), np.asarray(det2))
    assert np.abs(np.asarray(drop) - np.asarray(det)).max() > 1e-3


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("rows", [5, 12])
def test_chunked_cpu_attention_equals_whole_batch(family, rows, tmp_path):
    """The CPU default ('xla_chunked', rows in groups) computes the same logits as PyTorch."""
    ref = make_tiny(family, tmp_path, head=True, num_labels=3, seed=9)
    pt = load_pretrained(tmp_path, head=True, with_tokenizer=False)
    lengths = tuple(int(x) for x in np.random.default_rng(rows).integers(1, 40, rows))
    ids, mask, types = random_batch(family, lengths=lengths, seed=rows)
    got, _ = _ours(pt, ids, mask, types, attention_impl="xla_chunked")
    with torch.no_grad():
        want = ref(**_torch_inputs(family, ids, mask, types)).logits.numpy()
    assert np.abs(np.asarray(got) - want).max() <= END_TOL

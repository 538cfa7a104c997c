"""Dropout of the BERT family's modules: active only when not deterministic.

Parity with PyTorch per layer and end to end (fp32), bf16 and the CPU's query_chunked kernel for
every family are tests/test_family_conformance.py.
"""
from __future__ import annotations

import jax
import numpy as np

from tiny_hf import make_tiny, random_batch
from xenc_jax.hf.pretrained import load_pretrained


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

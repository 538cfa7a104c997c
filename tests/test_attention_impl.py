"""The attention seam's kernels against the written-out reference, on packed rows.

  - the lazy SegmentMask is, as an array, exactly the masks blocks/masks.py used to build;
  - splash attention (the TPU kernel) run by Pallas' interpreter on CPU equals the XLA path on
    the real tokens of packed rows, bidirectional and causal, with local windows and soft-caps;
  - query_chunked over blocks of query rows (long rows) equals the reference kernel;
  - a kernel whose constraints fail falls back to XLA with one log line, once.

Bound: 1e-5 absolute in fp32 on O(1) outputs (the module bound of DESIGN principle 6); the
kernels differ only in the order of fp32 sums (online softmax in blocks vs one softmax).
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xenc_jax.models import attention_impl as A
from xenc_jax.models.blocks import attention_mask_4d, causal_mask_4d, pair_mask_4d, sliding_window_mask
from xenc_jax.models.kernels import splash
from xenc_jax.models.kernels.segment_mask import SegmentMask

TOL = 1e-5


def packed(lengths, total, seed=0):
    """Segment ids and per-segment positions of one row packing `lengths` texts, padded to total."""
    seg = np.zeros(total, np.int32)
    pos = np.zeros(total, np.int32)
    start = 0
    for s, n in enumerate(lengths):
        seg[start:start + n], pos[start:start + n] = s + 1, np.arange(n)
        start += n
    return seg, pos


def rows(specs, total):
    segs, poss = zip(*(packed(lengths, total) for lengths in specs))
    return jnp.asarray(np.stack(segs)), jnp.asarray(np.stack(poss))


def qkv(batch, length, heads, dim, seed=0, spread=3.0):
    """Scores of ~spread**2 * sqrt(dim): past a soft-cap of 5, so the cap changes the result."""
    r = np.random.default_rng(seed)
    make = lambda s: jnp.asarray(r.standard_normal((batch, length, heads, dim)).astype(np.float32) * s)
    return make(spread), make(spread), make(1.0)


def test_segment_mask_dense_is_the_old_mask():
    seg, pos = rows([(5, 3, 7), (16,), (2,)], 16)
    q_rows = jnp.asarray([[0, 4, 7], [15, 3, 0], [1, 0, 0]])
    q, k = seg[:, None, :, None], seg[:, None, None, :]
    attend = (k != 0) & ((q == k) | (q == 0))
    np.testing.assert_array_equal(np.asarray(attention_mask_4d(seg)), attend)
    np.testing.assert_array_equal(np.asarray(pair_mask_4d(seg)), (q != 0) & (k != 0) & (q == k))
    idx = np.arange(16)
    causal = attend & (idx[None, None, None, :] <= idx[None, None, :, None])
    np.testing.assert_array_equal(np.asarray(causal_mask_4d(seg)), causal)
    window = np.abs(np.asarray(pos)[:, None, :, None] - np.asarray(pos)[:, None, None, :]) <= 2
    np.testing.assert_array_equal(np.asarray(causal_mask_4d(seg) & sliding_window_mask(pos, pos, 2)), causal & window)
    # asking rows: the rows of the full mask
    sub = np.asarray(causal_mask_4d(seg, q_rows))
    np.testing.assert_array_equal(sub, np.take_along_axis(causal, np.asarray(q_rows)[:, None, :, None], axis=2))
    # a block of query rows of a SegmentMask is the same block of its array
    m = causal_mask_4d(seg) & sliding_window_mask(pos, pos, 2)
    np.testing.assert_array_equal(np.asarray(m.query_rows(4, 8)), (causal & window)[:, :, 4:12])


CASES = [  # (causal, half_window, softcap)
    (False, None, None), (False, None, 5.0), (False, 24, None), (False, 24, 5.0),
    (True, None, None), (True, 40, 5.0),
]


@pytest.mark.parametrize("causal,half_window,softcap", CASES)
def test_splash_interpreted_equals_xla_on_packed_rows(causal, half_window, softcap):
    """Pallas' interpreter runs the TPU kernel on CPU. Two rows of 256 tokens (two 128 blocks:
    blocks that are full, partial and empty under the segments) with 3 and 2 packed texts and
    padding; every real token must match the XLA path (reference when a soft-cap is asked)."""
    specs = [(100, 60, 70), (200, 31)]
    seg, pos = rows(specs, 256)
    q, k, v = qkv(2, 256, 2, 16)
    mask = (causal_mask_4d(seg) if causal else attention_mask_4d(seg))
    if half_window is not None:
        mask = mask & sliding_window_mask(pos, pos, half_window)
    assert A.KERNELS["splash"].check(q, k, v, mask, {}) is None
    got = np.asarray(splash.attention(q, k, v, mask, scale=0.2, softcap=softcap, interpret=True))
    want = np.asarray(A.attention(q, k, v, mask, "xla", scale=0.2, softcap=softcap))
    real = np.asarray(seg) != 0
    assert np.abs(got - want)[real].max() <= TOL
    # the case is not trivial: without the window / cap / segments the result is far off
    plain = np.asarray(A.reference(q, k, v, jnp.ones((2, 1, 256, 256), bool), scale=0.2))
    assert np.abs(plain - want)[real].max() > 1e3 * TOL


def test_query_chunked_blocks_equal_reference():
    """A long row goes in blocks of query rows (here 64 of 256 with tokens_per_chunk=64): same
    result as the whole-row reference, with a bias, a soft-cap and a window."""
    seg, pos = rows([(100, 60, 70), (256,)], 256)
    q, k, v = qkv(2, 256, 2, 8, seed=1)
    mask = causal_mask_4d(seg) & sliding_window_mask(pos, pos, 30)
    bias = jnp.asarray(np.random.default_rng(2).standard_normal((1, 2, 256, 256)).astype(np.float32))
    assert A._query_block(256, 64) == 64
    got = A.query_chunked(q, k, v, mask, bias=bias, scale=0.3, softcap=5.0, tokens_per_chunk=64)
    want = A.reference(q, k, v, mask, bias=bias, scale=0.3, softcap=5.0)
    real = np.asarray(seg) != 0
    assert np.abs(np.asarray(got) - np.asarray(want))[real].max() <= TOL


def test_failed_constraint_falls_back_to_xla_with_one_log_line(caplog):
    seg, _ = rows([(50, 20)], 100)          # 100 tokens: not a multiple of splash's 128
    q, k, v = qkv(1, 100, 2, 8)
    mask = attention_mask_4d(seg)
    assert "multiple of 128" in A.KERNELS["splash"].check(q, k, v, mask, {})
    assert "dense mask" in A.KERNELS["splash"].check(q, k, v, mask.dense(), {})
    A._logged.clear()
    with caplog.at_level(logging.INFO, logger=A.__name__):
        got = [A.attention(q, k, v, mask, "splash") for _ in range(3)]
    lines = [r.getMessage() for r in caplog.records if r.name == A.__name__]
    assert len(lines) == 1 and "'splash'" in lines[0] and "'xla'" in lines[0], lines
    want = A.attention(q, k, v, mask, "xla")
    assert all(np.array_equal(np.asarray(g), np.asarray(want)) for g in got)
    # cuDNN on a machine without it: fp32 and no plugin, XLA again
    assert A.KERNELS["cudnn"].check(q, k, v, mask, {}) is not None


def test_default_kernel_per_platform():
    assert A.default_attention_impl(platform="tpu") == "splash"
    assert A.default_attention_impl(platform="cuda") == "cudnn"
    assert A.default_attention_impl(platform="cpu") == "query_chunked"
    assert A.default_attention_impl(object(), platform="cpu") is None   # a mesh: XLA's
    if jax.default_backend() == "cpu":
        assert A.default_attention_impl() == "query_chunked"
    assert isinstance(attention_mask_4d(jnp.ones((1, 4), jnp.int32)), SegmentMask)


def test_splash_off_tpu_runs_the_written_out_kernel():
    """A program with splash selected, run on CPU: lax.platform_dependent takes the non-TPU
    branch (the reference kernel), so asking for splash never breaks a CPU run."""
    seg, _ = rows([(100, 20)], 128)
    q, k, v = qkv(1, 128, 2, 8)
    fn = jax.jit(lambda q, k, v, seg: A.attention(q, k, v, causal_mask_4d(seg), "splash", scale=0.2, softcap=5.0))
    want = A.reference(q, k, v, causal_mask_4d(seg), scale=0.2, softcap=5.0)
    real = np.asarray(seg) != 0
    assert np.abs(np.asarray(fn(q, k, v, seg)) - np.asarray(want))[real].max() <= TOL


def test_splash_per_device_on_8_devices():
    """Under a mesh splash runs per device (shard_map over the batch and heads axes of the
    logical rules); on 8 forced CPU devices, data=4 x model=2 with heads split (tp), the
    interpreted kernel equals XLA's on packed rows."""
    from forced_devices import run_on_devices
    run_on_devices([__file__], devices=8, timeout=300)


def _child() -> None:
    from jax.sharding import NamedSharding, PartitionSpec as P

    from xenc_jax.sharding import ShardingPlan, make_mesh
    plan = ShardingPlan(make_mesh(data=4, model=2), "tp")
    seg, pos = rows([(100, 60, 70), (200, 31), (256,), (5,)] * 2, 256)
    q, k, v = qkv(8, 256, 4, 16, seed=3)
    heads = NamedSharding(plan.mesh, P("data", None, "model", None))
    q, k, v = (jax.device_put(x, heads) for x in (q, k, v))
    seg, pos = (jax.device_put(x, NamedSharding(plan.mesh, P("data", None))) for x in (seg, pos))
    masks = lambda s, p: causal_mask_4d(s) & sliding_window_mask(p, p, 40)
    fn = lambda q, k, v, s, p: splash.attention(q, k, v, masks(s, p), scale=0.2, softcap=5.0, interpret=True)
    with plan.context():
        assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v, seg, pos))   # per device, not as a whole
        got = jax.jit(fn)(q, k, v, seg, pos)
    want = A.reference(q, k, v, masks(seg, pos), scale=0.2, softcap=5.0)
    err = np.abs(np.asarray(got) - np.asarray(want))[np.asarray(seg) != 0].max()
    print("splash per device vs reference, max abs diff", err)
    assert err <= TOL
    print("ALL OK")


if __name__ == "__main__":
    _child()

"""BucketedRunner: concurrent streams keep batch order, results and the one-compile-per-shape
count."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from xenc_jax.batching import Batch
from xenc_jax.runner import BucketedRunner, default_streams


def _fn(params, a):
    # a per-row result that depends on every input field and on the row's length
    x = (a["input_ids"] * params["w"] + a["attention_mask"] + a["position_ids"]).astype(jnp.float32)
    return jnp.tanh(x / 100.0).sum(axis=1) + a["input_ids"].shape[1]


def _batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = [(4, 16), (2, 32), (1, 64), (8, 8)]
    out = []
    for i in range(n):
        rows, length = shapes[rng.integers(len(shapes))]
        ints = lambda hi: rng.integers(0, hi, (rows, length)).astype(np.int32)
        out.append(Batch(ints(1000), ints(3), ints(2), ints(length), np.zeros((rows, 1), np.int32),
                         np.arange(rows, dtype=np.int64)[:, None] + 100 * i))
    return out, shapes


@pytest.mark.parametrize("streams", [2, 3, 5])
def test_streams_keep_order_results_and_compile_count(streams):
    params = {"w": jnp.int32(3)}
    batches, shapes = _batches(40)
    one = BucketedRunner(_fn, streams=1).run(params, batches)
    runner = BucketedRunner(_fn, streams=streams)
    got = runner.run(params, batches)
    assert [b for b, _ in got] == batches  # batch order kept (same objects)
    for (_, y1), (_, y2) in zip(one, got):
        np.testing.assert_array_equal(y1, y2)
    # every shape's first call holds a lock: no shape is traced twice by racing streams
    assert runner.compile_count == len({b.shape for b in batches}) <= len(shapes)
    runner.run(params, _batches(25, seed=1)[0])
    assert runner.compile_count <= len(shapes)


def test_stream_errors_reach_the_caller():
    def boom(params, a):
        if a["input_ids"].shape[1] == 64:
            raise ValueError("bad shape 64")
        return _fn(params, a)
    batches, _ = _batches(20)
    with pytest.raises(ValueError, match="bad shape 64"):
        BucketedRunner(boom, streams=2).run({"w": jnp.int32(1)}, batches)


def test_default_streams_and_validation():
    assert default_streams(None, "cpu") == 2
    assert default_streams(None, "gpu") == 1
    assert default_streams(object(), "cpu") == 1  # sharded: one stream, same calls everywhere
    with pytest.raises(ValueError, match="streams must be >= 1"):
        BucketedRunner(_fn, streams=0)

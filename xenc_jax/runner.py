"""Run a jitted model function over fixed-shape batches: compile counting, warm-up, pipelining
and concurrent streams, the same schedule on every process, and the default bucket layouts.

Every batch from batching.make_batches has one of a few known shapes, so the jitted function
compiles at most once per bucket; `compile_count` counts traces so users and tests can check.
The function is a model_fns score_fn / embed_fn: (params, Batch.arrays()) -> [B, P, ...].
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import jax
import numpy as np

from .batching import Batch, BucketConfig
from .progress import progress


def default_buckets(kind: str, backend: str | None = None) -> BucketConfig:
    """The bucket layout that measured fastest for `kind` ("pairs" or "texts") on `backend`
    (default: jax's). On CPU (scripts/bench_*.py, docs/benchmarks.md): pack into short rows
    (192 tokens for pairs, 128 for texts) and keep ~1024 tokens per batch, so each layer's
    activations stay in cache; 8192-token batches were 1.3-1.5x slower. Packing is exact (block-
    diagonal attention, per-segment positions and pooling) and cuts padding; short rows keep the
    attention over masked-out neighbours cheap (longer inputs get rows of their own). For MS
    MARCO query-passage pairs (mean 88 tokens), rows of 192 computed 2.0x the attention the
    pairs need against 2.7x for rows of 256, and scored 5% faster; 128 and 160 were slower
    (more padding, more shapes). On accelerators, large batches; cross-encoder rows unpacked
    until packing is measured there.
    """
    if kind not in ("pairs", "texts"):
        raise ValueError(f"kind must be 'pairs' or 'texts', got {kind!r}")
    pack_length = 192 if kind == "pairs" else 128
    if (backend or jax.default_backend()) == "cpu":
        return BucketConfig(pack=True, pack_length=pack_length, tokens_per_batch=1024)
    return BucketConfig(pack=kind == "texts", pack_length=pack_length, tokens_per_batch=8192)


def default_streams(plan=None, backend: str | None = None) -> int:
    """Concurrent batch streams for BucketedRunner: 2 for unsharded work on CPU, else 1.

    On XLA:CPU one stream leaves the cores partly idle (host work between calls, thread-pool
    syncs inside each op); a second one fills those gaps: +6-8% pairs/s on 2 cores, while 3-4
    streams gained nothing more (docs/benchmarks.md). Sharded runs keep one stream: every
    process must issue the same calls in the same order. Accelerators overlap through async
    dispatch already.
    """
    return 2 if plan is None and (backend or jax.default_backend()) == "cpu" else 1


class BucketedRunner:
    """fn(params, arrays: dict[str, Array]) -> Array [B, ...], jitted once per batch shape.

    Single device (plan=None): `place_batch` (default jax.device_put) puts host arrays on the
    default device. With a sharding.ShardingPlan: jitted with explicit in_shardings (params as
    `param_shardings`, batch rows split over the mesh's data axes) and out_shardings (rows split
    the same way), traced under the plan's logical-axis rules; outputs come back as the rows
    this process supplied. With several processes every process must call `run` (a collective):
    pass `shapes` (all (rows, length) bucket shapes, in run order) and `segments`, and the
    schedule is padded with empty batches so all processes run the same shapes in the same order.
    """

    def __init__(self, fn: Callable, *, jit_kwargs: dict | None = None,
                 place_batch: Callable[[dict], dict] | None = None, queue_depth: int = 2,
                 plan=None, param_shardings=None, streams: int | None = None):
        self.compile_count = 0
        self.plan = plan
        self.streams = default_streams(plan) if streams is None else int(streams)
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams!r}")
        self._compiled: set = set()
        self._compile_lock = threading.Lock()
        count_lock = threading.Lock()  # `+=` is not atomic; a retrace may run outside _compile_lock

        def traced(params, arrays):
            with count_lock:  # Python side effect: runs once per trace, never per call
                self.compile_count += 1
            return fn(params, arrays)

        jit_kwargs = dict(jit_kwargs or {})
        if plan is None:
            self._fn = jax.jit(traced, **jit_kwargs)
            self._fetch = jax.device_get  # explicit transfers: clean under jax.transfer_guard
            place_batch = place_batch or jax.device_put
        else:
            rows = plan.batch_sharding(1)  # P(batch axes): any rank, dim 0 split
            jit_kwargs.setdefault("in_shardings", (param_shardings if param_shardings is not None
                                                   else plan.replicated, rows))
            jit_kwargs.setdefault("out_shardings", rows)
            self._fn = plan.jit(traced, **jit_kwargs)
            self._fetch = plan.local_rows
            place_batch = place_batch or plan.place_batch
        self._place = place_batch or (lambda a: a)
        self._depth = max(1, queue_depth)

    def arrays(self, batch: Batch) -> dict[str, np.ndarray]:
        return batch.arrays()

    def run(self, params, batches: list[Batch], *, show_progress: bool | None = None,
            desc: str = "Batches", shapes: list[tuple[int, int]] | None = None,
            segments: int | None = None) -> list[tuple[Batch, np.ndarray]]:
        """Outputs per batch, in batch order. Dispatch runs ahead of the host fetch by
        `queue_depth` batches so host work (padding, transfers) overlaps device compute; with
        `streams` > 1, that many threads each run every streams-th batch this way."""
        if jax.process_count() > 1 and self.plan is not None:
            batches = self._same_schedule_everywhere(batches, shapes, segments)
        bar = progress(None, len(batches), desc, show_progress)
        streams = min(self.streams, len(batches))
        try:
            if streams <= 1:
                return self._stream(params, batches, bar)
            with ThreadPoolExecutor(streams, thread_name_prefix="xenc-stream") as pool:
                parts = list(pool.map(lambda k: self._stream(params, batches[k::streams], bar), range(streams)))
        finally:
            bar.close()
        out = [None] * len(batches)
        for k, part in enumerate(parts):  # stream k ran batches k, k + streams, ...
            out[k::streams] = part
        return out

    def _stream(self, params, batches: list[Batch], bar) -> list[tuple[Batch, np.ndarray]]:
        out, pending = [], deque()
        for batch in batches:
            pending.append((batch, self._call(params, self.arrays(batch))))
            if len(pending) > self._depth:
                b, y = pending.popleft()
                out.append((b, self._fetch(y)))
                bar.update(1)
        for b, y in pending:
            out.append((b, self._fetch(y)))
            bar.update(1)
        return out

    def _call(self, params, arrays: dict):
        """self._fn on one batch; the first call of each shape holds a lock, so concurrent
        streams never trace (and count) the same shape twice."""
        key = tuple((k, v.shape) for k, v in arrays.items())
        if key in self._compiled:
            return self._fn(params, self._place(arrays))
        with self._compile_lock:
            y = self._fn(params, self._place(arrays))
            self._compiled.add(key)
        return y

    def _same_schedule_everywhere(self, batches, shapes, segments) -> list[Batch]:
        """Every process runs max-over-processes batches of each shape, in `shapes` order; a
        process short of real batches runs empty ones (example_ids -1, dropped on the host)."""
        from jax.experimental import multihost_utils
        if shapes is None or segments is None:
            raise ValueError("with several processes, BucketedRunner.run needs shapes= (every bucket "
                             "shape, in run order) and segments=, so all processes run the same calls")
        shapes = [tuple(s) for s in shapes]
        by_shape = {s: [] for s in shapes}
        for b in batches:
            if tuple(b.shape) not in by_shape:
                raise ValueError(f"batch shape {b.shape} is not one of the bucket shapes {shapes}")
            by_shape[tuple(b.shape)].append(b)
        counts = np.array([len(by_shape[s]) for s in shapes], np.int32)
        need = np.asarray(multihost_utils.process_allgather(counts, tiled=False)).max(axis=0)
        out = []
        for s, n in zip(shapes, need.tolist()):
            out += by_shape[s] + [empty_batch(*s, segments)] * (n - len(by_shape[s]))
        return out

    def warmup(self, params, shapes: Iterable[tuple[int, int]], segments: int) -> None:
        """Compile every (rows, length) shape ahead of time by running a dummy batch."""
        for rows, length in shapes:
            jax.block_until_ready(self._fn(params, self._place(self.arrays(empty_batch(rows, length, segments)))))


class InputError(ValueError):
    """An error about one input of a call, named in the message as `label` ("pairs[12]"): `index`
    is its place in the whole input. rank() / rank_many() build the pairs they score, so they
    re-label it with the caller's own arguments (`relabeled`): "(queries[3], documents[3][7])"."""

    def __init__(self, message: str, index: int | None = None, label: str | None = None):
        super().__init__(message)
        self.index, self.label = index, label

    def relabeled(self, label: str) -> "InputError":
        """The same error with `label` where the message named `self.label` (its first mention)."""
        if self.label is None:
            return self
        new = type(self)(str(self).replace(self.label, label, 1), self.index, label)
        return new.with_traceback(self.__traceback__)


class NonFiniteOutput(InputError):
    """A model output (a score or an embedding) came back NaN or inf."""


def check_outputs(out: np.ndarray, start: int, what: str, dtype) -> np.ndarray:
    """`out` (one chunk's outputs in input order, row i = input start + i) when every number is
    finite, else NonFiniteOutput naming the first bad input: a NaN score or embedding is never a
    result. One np.isfinite pass over the outputs: <1% of the model's time even for MiniLM."""
    ok = np.isfinite(out).reshape(len(out), -1).all(axis=1)
    if ok.all():
        return out
    i = int(np.argmin(ok))
    row = np.asarray(out[i]).reshape(-1)
    value, dtype = row[np.argmin(np.isfinite(row))], np.dtype(dtype)
    fix = ("load the model with dtype='float32' (CLI: --dtype float32); if that fails too, "
           if dtype != np.float32 else "the compute dtype is float32 already, so ")
    label = f"{what}[{start + i}]"
    raise NonFiniteOutput(f"the model's output for {label} is {value} (compute dtype {dtype.name}): a "
                          f"float16/bfloat16 overflow, or NaN/inf weights in the checkpoint; {fix}check the "
                          "checkpoint's weights for NaN/inf (a broken save, a diverged training run)", start + i, label)


def empty_batch(rows: int, length: int, segments: int) -> Batch:
    """A batch of padding only: every example id is -1, so scatter_results drops all its rows."""
    z = np.zeros((rows, length), np.int32)
    return Batch(z, z, z, z, np.zeros((rows, segments), np.int32), np.full((rows, segments), -1, np.int64))

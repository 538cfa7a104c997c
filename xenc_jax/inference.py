"""Run a jitted model function over fixed-shape batches: compile counting, warm-up, pipelining,
and JAX's persistent compilation cache.

Every batch from batching.make_batches has one of a few known shapes, so the jitted function
compiles at most once per bucket; `compile_count` counts traces so users and tests can check.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Batch, BucketConfig


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


CACHE_MAX_BYTES = 4 << 30  # least recently used entries go beyond this (a MiniLM bucket is ~1-3 MB)


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache so a second process reuses compiled buckets
    (a fresh process's first call then skips XLA's compile: docs/benchmarks.md, first call).

    `path`: a directory, else $XENC_COMPILATION_CACHE, else the user cache directory (default_compilation_cache()) unless jax already has a cache directory configured
    (JAX_COMPILATION_CACHE_DIR or jax.config), which is then left as it is. "0" in the variable
    turns it off, also over a path given here; path=False turns it off for this call.
    """
    env = os.environ.get("XENC_COMPILATION_CACHE")
    if path is False or (env is not None and env.strip().lower() in ("0", "off", "false", "no")):
        return None
    path = path or env
    if not path:
        if jax.config.jax_compilation_cache_dir:
            return jax.config.jax_compilation_cache_dir
        path = default_compilation_cache()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_compilation_cache_max_size in (None, -1):
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    # Our bucket programs compile in well under a second on small models: cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@functools.lru_cache(maxsize=None)
def cpu_info() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields ("model name", "cpu family", "model", "flags"
    or "Features" on ARM, ...); {} where there is no /proc/cpuinfo. The one reader of it for the
    compilation-cache key, the autotune and the benchmarks' machine line."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read(1 << 16)
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in info.splitlines()[:40]:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_key() -> str:
    """The CPU model and its feature flags, hashed: XLA:CPU compiles for the host's instruction
    set, so a cache shared between machines (a home directory on NFS) must not hand AVX-512 code
    to a CPU without it."""
    import hashlib
    import platform
    fields = cpu_info()
    text = platform.machine() + fields.get("model name", "") + fields.get("flags", fields.get("Features", ""))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def user_cache_root() -> str:
    """$XDG_CACHE_HOME (or ~/.cache)/xenc_jax: compiled programs and autotune results."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "xenc_jax")


def default_compilation_cache() -> str:
    """The CLI's cache directory: $XDG_CACHE_HOME (or ~/.cache)/xenc_jax/jax-<version>-<cpu>."""
    return os.path.join(user_cache_root(), f"jax-{jax.__version__}-{jax.default_backend()}-{_cpu_key()}")


def cli_compilation_cache() -> str | None:
    """On for the CLI (a second run does not compile again): $XENC_COMPILATION_CACHE if set
    ("0" turns it off), else default_compilation_cache(), also over a jax-configured one."""
    return enable_compilation_cache(os.environ.get("XENC_COMPILATION_CACHE") or default_compilation_cache())


def progress(iterable, total: int | None, desc: str, show: bool | None, unit: str = "batch"):
    """tqdm when asked, or by default only on an interactive terminal. With iterable=None, a
    bar to `update()` by hand (a no-op stand-in when hidden). total None: unknown (a stream)."""
    if show is None:
        show = sys.stderr.isatty() and (total is None or total > 1)
    if not show:
        return iterable if iterable is not None else _NoBar()
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit != "batch")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


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


def empty_batch(rows: int, length: int, segments: int) -> Batch:
    """A batch of padding only: every example id is -1, so scatter_results drops all its rows."""
    z = np.zeros((rows, length), np.int32)
    return Batch(z, z, z, z, np.zeros((rows, segments), np.int32), np.full((rows, segments), -1, np.int64))


@contextlib.contextmanager
def loading_on_host(mesh):
    """With a mesh, load weights into host memory (this process's CPU device): load_pretrained
    makes jnp arrays, which would otherwise land whole on the default accelerator before
    setup_sharding splits them, and a model too big for one device is a reason to shard."""
    if mesh is None:
        yield
        return
    try:
        cpu = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu: keep the default device
        yield
        return
    with jax.default_device(cpu):
        yield


def load_plan(mesh, strategy: str = "dp"):
    """The ShardingPlan load_pretrained(plan=) puts each param into as it is read (a sharded
    checkpoint never sits whole on the host or on one device), or None without a mesh."""
    if mesh is None:
        return None
    from .sharding import ShardingPlan, resolve_mesh
    resolved = resolve_mesh(mesh)
    return None if resolved is None else ShardingPlan(resolved, strategy)


def setup_sharding(module, params, buckets, mesh, strategy: str = "dp"):
    """-> (plan, params, param_shardings, buckets) for a model class taking `mesh=`.

    mesh None: (None, params, None, buckets) unchanged. Else params are placed with the
    strategy's shardings and buckets get row_multiple = a multiple of this process's
    data-parallel size, so every bucket's rows split evenly (shapes stay fixed).
    """
    from .sharding import ShardingPlan, resolve_mesh
    mesh = resolve_mesh(mesh)
    if mesh is None:
        return None, params, None, buckets
    plan = ShardingPlan(mesh, strategy)
    ids = np.zeros((1, 2), np.int32)
    by_module = plan.module_param_shardings(module, ids, ids)
    # Params the module does not own (e.g. BiEncoder's Dense layers) are replicated.
    shardings = {k: by_module[k] if k in by_module else jax.tree.map(lambda _: plan.replicated, v)
                 for k, v in params.items()}
    params = plan.put_params(params, shardings)
    multiple = math.lcm(buckets.row_multiple, plan.local_data_parallel_size)
    return plan, params, shardings, dataclasses.replace(buckets, row_multiple=multiple)


def as_dtype(dtype) -> jnp.dtype:
    """'float32' / 'bf16' / jnp.bfloat16 ... -> a jnp dtype, with a clear error."""
    names = {"fp32": "float32", "float32": "float32", "f32": "float32", "bf16": "bfloat16",
             "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "f16": "float16"}
    if isinstance(dtype, str):
        if dtype.lower() not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
        return jnp.dtype(names[dtype.lower()])
    return jnp.dtype(dtype)

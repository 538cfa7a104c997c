"""Run a jitted model function over fixed-shape batches: compile counting, warm-up, pipelining,
and JAX's persistent compilation cache.

Every batch from batching.make_batches has one of a few known shapes, so the jitted function
compiles at most once per bucket; `compile_count` counts traces so users and tests can check.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Batch

BATCH_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "cls_positions")


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache so a second process reuses compiled buckets.

    `path` defaults to $XENC_COMPILATION_CACHE; nothing happens when neither is set.
    """
    path = path or os.environ.get("XENC_COMPILATION_CACHE")
    if not path:
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Our bucket programs compile in well under a second on small models: cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def progress(iterable, total: int, desc: str, show: bool | None):
    """tqdm when asked, or by default only on an interactive terminal."""
    if show is None:
        show = sys.stderr.isatty() and total > 1
    if not show:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="batch")


class BucketedRunner:
    """fn(params, arrays: dict[str, Array]) -> Array [B, ...], jitted once per batch shape.

    `place_batch` puts the host arrays on devices (sharded over the mesh's data axis when one is
    used); by default jit transfers them to the default device.
    """

    def __init__(self, fn: Callable, *, jit_kwargs: dict | None = None,
                 place_batch: Callable[[dict], dict] | None = None, queue_depth: int = 2):
        self.compile_count = 0

        def traced(params, arrays):
            self.compile_count += 1  # Python side effect: runs once per trace, never per call
            return fn(params, arrays)

        self._fn = jax.jit(traced, **(jit_kwargs or {}))
        self._place = place_batch or (lambda a: a)
        self._depth = max(1, queue_depth)

    def arrays(self, batch: Batch) -> dict[str, np.ndarray]:
        return {k: getattr(batch, k) for k in BATCH_FIELDS}

    def run(self, params, batches: list[Batch], *, show_progress: bool | None = None,
            desc: str = "Batches") -> list[tuple[Batch, np.ndarray]]:
        """Outputs per batch, in batch order. Dispatch runs ahead of the host fetch by
        `queue_depth` batches so host work (padding, transfers) overlaps device compute."""
        out, pending = [], deque()
        for batch in progress(batches, len(batches), desc, show_progress):
            pending.append((batch, self._fn(params, self._place(self.arrays(batch)))))
            if len(pending) > self._depth:
                b, y = pending.popleft()
                out.append((b, np.asarray(y)))
        out.extend((b, np.asarray(y)) for b, y in pending)
        return out

    def warmup(self, params, shapes: Iterable[tuple[int, int]], segments: int) -> None:
        """Compile every (rows, length) shape ahead of time by running a dummy batch."""
        for rows, length in shapes:
            z = np.zeros((rows, length), np.int32)
            dummy = Batch(z, z, z, z, np.zeros((rows, segments), np.int32), np.full((rows, segments), -1))
            jax.block_until_ready(self._fn(params, self._place(self.arrays(dummy))))


def as_dtype(dtype) -> jnp.dtype:
    """'float32' / 'bf16' / jnp.bfloat16 ... -> a jnp dtype, with a clear error."""
    names = {"fp32": "float32", "float32": "float32", "f32": "float32", "bf16": "bfloat16",
             "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "f16": "float16"}
    if isinstance(dtype, str):
        if dtype.lower() not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
        return jnp.dtype(names[dtype.lower()])
    return jnp.dtype(dtype)

"""The attention mask as what it is computed from, not as a [B, 1, Lq, L] bool array.

blocks/masks.py builds masks from a batch's segment ids (0 = padding, 1..P = packed text) and
position ids. Materialising them is quadratic in the row length (an 8192-token row is a 64 MiB
bool mask per layer kind, and the [heads, L, L] fp32 scores that go with it are the real cost),
and the kernels that are linear in length need the parts, not the product:

  TPU splash attention   segment ids (dynamic) + a static causal / local-window mask
  query_chunked (CPU)    the mask of one block of query rows at a time
  cuDNN, XLA, reference  the dense array: `dense(mask)`

SegmentMask keeps the parts; its `dense()` is exactly the array masks.py used to return, and
`np.asarray(mask)` gives it too. Combining with a Window (`mask & sliding_window_mask(...)`)
stays lazy; combining with a plain array gives a plain array.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


def _distance_ok(q_positions, k_positions, half_window: int) -> jax.Array:
    d = q_positions[:, :, None].astype(jnp.int32) - k_positions[:, None, :].astype(jnp.int32)
    return (jnp.abs(d) <= half_window)[:, None]


@flax.struct.dataclass
class Window:
    """|position(q) - position(k)| <= half_window on position ids [B, Lq], [B, L]."""
    q_positions: jax.Array
    k_positions: jax.Array
    half_window: int = flax.struct.field(pytree_node=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.q_positions.shape[0], 1, self.q_positions.shape[1], self.k_positions.shape[1])

    def dense(self) -> jax.Array:
        return _distance_ok(self.q_positions, self.k_positions, self.half_window)

    def __and__(self, other):
        if isinstance(other, SegmentMask):
            return other & self
        return self.dense() & dense(other)

    __rand__ = __and__

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.dense(), dtype=dtype)


@flax.struct.dataclass
class SegmentMask:
    """Query i may attend key j iff (kind) and (causal: index(j) <= index(i)) and (window:
    |position(i) - position(j)| <= half_window).

    kind (pairwise False, HF BERT's): k != 0 and (q == k or q == 0): a padding query attends
    every real key. pairwise True (HF DeBERTa's m[i] * m[j]): q != 0 and k != 0 and q == k.
    Real query rows are the same under both, and the same as "same segment id" (splash's rule).
    """
    q_segments: jax.Array                 # [B, Lq] int: segment of each asking row (0: padding)
    k_segments: jax.Array                 # [B, L]
    q_index: jax.Array | None = None      # [B or 1, Lq] token index of each asking row; None: 0..Lq-1
    q_positions: jax.Array | None = None  # [B, Lq] position ids (with a window only)
    k_positions: jax.Array | None = None  # [B, L]
    pairwise: bool = flax.struct.field(pytree_node=False, default=False)
    causal: bool = flax.struct.field(pytree_node=False, default=False)
    half_window: int | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.q_segments.shape[0], 1, self.q_segments.shape[1], self.k_segments.shape[1])

    @property
    def all_rows(self) -> bool:
        """Every row asks, in order (q_index is 0..L-1): what a static kernel mask assumes."""
        return self.q_index is None and self.q_segments.shape[1] == self.k_segments.shape[1]

    def dense(self) -> jax.Array:
        """The [B, 1, Lq, L] bool mask."""
        q, k = self.q_segments[:, None, :, None], self.k_segments[:, None, None, :]
        if self.pairwise:
            m = (q != 0) & (k != 0) & (q == k)
        else:
            m = (k != 0) & ((q == k) | (q == 0))
        if self.causal:
            length = self.k_segments.shape[1]
            q_idx = (jnp.arange(self.q_segments.shape[1], dtype=jnp.int32)[None, :] if self.q_index is None
                     else self.q_index.astype(jnp.int32))
            m = m & (jnp.arange(length, dtype=jnp.int32)[None, None, :] <= q_idx[:, :, None])[:, None]
        if self.half_window is not None:
            m = m & _distance_ok(self.q_positions, self.k_positions, self.half_window)
        return m

    def query_rows(self, start, size: int) -> "SegmentMask":
        """The mask of query rows start .. start + size - 1 (start may be traced)."""
        cut = lambda x: None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)
        q_index = (jnp.arange(size, dtype=jnp.int32)[None, :] + start if self.q_index is None
                   else cut(self.q_index))
        return self.replace(q_segments=cut(self.q_segments), q_index=q_index, q_positions=cut(self.q_positions))

    def __and__(self, other):
        if isinstance(other, Window):
            if self.half_window is not None:
                raise ValueError("a mask with a window ANDed with another window: pass one window")
            return self.replace(q_positions=other.q_positions, k_positions=other.k_positions,
                                half_window=other.half_window)
        return self.dense() & dense(other)

    __rand__ = __and__

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.dense(), dtype=dtype)


def dense(mask) -> jax.Array:
    """A SegmentMask / Window as its bool array; an array as is."""
    return mask.dense() if isinstance(mask, (SegmentMask, Window)) else mask


def query_rows(mask, start, size: int):
    """Rows start .. start + size - 1 of a SegmentMask or of a [B, 1, Lq, L] array."""
    if isinstance(mask, SegmentMask):
        return mask.query_rows(start, size)
    return jax.lax.dynamic_slice_in_dim(dense(mask), start, size, axis=2)

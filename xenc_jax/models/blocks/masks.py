"""Attention masks from a batch's segment ids and positions: [B, 1, Lq, L] bool, True = query
may attend key. Rows are packed: `segments` [B, L] holds 0 on padding and the segment number
1..P of the text each token belongs to (a plain 0/1 padding mask is the one-segment case), and
position ids restart at 0 in each segment. So every mask here is block-diagonal by segment, and
each packed text sees exactly what it would see alone.

query_positions [B, P] (optional): only these rows ask (the last layer computes only the rows a
head reads), giving [B, 1, P, L].

Combine with `&`: a causal sliding window of W tokens (Mistral-style) is
causal_mask_4d(...) & sliding_window_mask(q_pos, k_pos, W - 1).

The masks are lazy (kernels/segment_mask.py: SegmentMask, Window): they keep the segment ids
and positions, so a kernel can take segment ids (TPU splash) or build one block of rows at a
time (the CPU's query_chunked) instead of an [L, L] array; `.dense()` / `np.asarray(mask)` is
the bool array.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..kernels.segment_mask import SegmentMask, Window


def _query_rows(segments: jax.Array, query_positions: jax.Array | None) -> jax.Array:
    return segments if query_positions is None else jnp.take_along_axis(
        segments, query_positions.astype(jnp.int32), axis=1)


def attention_mask_4d(segments: jax.Array, query_positions: jax.Array | None = None) -> SegmentMask:
    """Bidirectional, segment-aware: query i may attend key j iff mask[j] != 0 and (mask[i] ==
    mask[j] or mask[i] == 0). A plain 0/1 padding mask gives exactly HF's attention (padding
    queries attend every real key), segment numbers give block-diagonal attention."""
    return SegmentMask(_query_rows(segments, query_positions), segments, query_positions)


def pair_mask_4d(segments: jax.Array, query_positions: jax.Array | None = None) -> SegmentMask:
    """Both tokens real and in the same segment (HF DeBERTa's m[i] * m[j]): a padding query
    attends nothing, so its row is uniform over every key, as HF's masked_fill gives."""
    return SegmentMask(_query_rows(segments, query_positions), segments, query_positions, pairwise=True)


def causal_mask_4d(segments: jax.Array, query_positions: jax.Array | None = None) -> SegmentMask:
    """attention_mask_4d (segments, padding) AND key index <= query index: block-causal for
    packed rows (segments are contiguous, so inside one the index order is the token order)."""
    return SegmentMask(_query_rows(segments, query_positions), segments, query_positions, causal=True)


def sliding_window_mask(q_positions: jax.Array, k_positions: jax.Array, half_window: int) -> Window:
    """[B, Lq], [B, L] position ids -> [B, 1, Lq, L]: |position(q) - position(k)| <= half_window.

    HF ModernBERT's local layers (masking_utils.sliding_window_bidirectional_overlay with
    config.sliding_window = local_attention // 2): a window of half_window tokens on each side,
    both ends included. AND it with a segment mask: distances are taken on position ids, which
    restart per packed segment, so inside a segment they are token distances and across segments
    the segment mask already says no.
    """
    return Window(q_positions, k_positions, int(half_window))

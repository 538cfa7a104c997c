"""BucketConfig: the few fixed (rows, length) shapes that every batch takes.

XLA compiles once per input shape. If batches were padded to "the longest example in the batch"
(what sentence-transformers does in PyTorch), every new length would be a new compilation. Here
every batch has one of the shapes of `BucketConfig.resolve`, whatever the inputs, so the number
of compilations is bounded by the number of buckets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _positive_int(value, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"BucketConfig.{name} must be a positive int"
                         f"{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class BucketConfig:
    # Clipped to max_length (always a bucket). Finer than powers of two: on real query-passage
    # mixes doubling buckets left ~40% of computed tokens as padding; these leave ~15-20% for
    # a few more one-off compilations (scripts/bench_cross_encoder.py, docs/benchmarks.md).
    lengths: tuple[int, ...] = (32, 64, 96, 128, 160, 192, 256, 320, 384, 512)
    batch_size: int | None = None  # fixed rows per batch for every bucket, or
    tokens_per_batch: int | None = 8192  # rows = tokens_per_batch // bucket_len (>= 1)
    row_multiple: int = 1  # rows rounded up to a multiple of this (data-parallel device count)
    pack: bool = False  # pack several short examples into one row
    max_segments: int = 8  # P: max examples per packed row
    # Packed rows hold at most this many tokens (None: max_length). Attention over a packed row
    # costs O(row length^2) whatever the segments, so shorter rows waste less on masked pairs.
    pack_length: int | None = None
    # The last batch of each bucket may also have ceil(rows / 2**k) rows, k = 1..tail_halvings
    # (rounded up to row_multiple): a small call (a reranking request of 20-100 pairs) then
    # computes a few real rows instead of a full batch that is mostly padding. Each halving is
    # at most one more shape per bucket to compile (resolve() lists them all; warmup compiles
    # them); 0 keeps one shape per bucket.
    tail_halvings: int = 0

    def __post_init__(self):
        lengths = tuple(self.lengths) if not isinstance(self.lengths, int) else (self.lengths,)
        if not lengths:
            raise ValueError("BucketConfig.lengths must name at least one length")
        for length in lengths:
            _positive_int(length, "lengths entries")
        # Normalized so equal configs compare and hash equal (the config may key a compile cache).
        object.__setattr__(self, "lengths", tuple(sorted({int(x) for x in lengths})))
        _positive_int(self.batch_size, "batch_size", allow_none=True)
        _positive_int(self.tokens_per_batch, "tokens_per_batch", allow_none=True)
        if self.batch_size is None and self.tokens_per_batch is None:
            raise ValueError("BucketConfig needs batch_size or tokens_per_batch (both are None)")
        _positive_int(self.row_multiple, "row_multiple")
        _positive_int(self.max_segments, "max_segments")
        _positive_int(self.pack_length, "pack_length", allow_none=True)
        if isinstance(self.tail_halvings, bool) or not isinstance(self.tail_halvings, (int, np.integer)) \
                or self.tail_halvings < 0:
            raise ValueError(f"BucketConfig.tail_halvings must be an int >= 0, got {self.tail_halvings!r}")

    @property
    def segments(self) -> int:
        """P, the second axis of cls_positions/example_ids (1 when not packing)."""
        return self.max_segments if self.pack else 1

    def bucket_lengths(self, max_length: int) -> list[int]:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
                or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        return [x for x in self.lengths if x < max_length] + [int(max_length)]

    def rows(self, length: int) -> int:
        rows = self.batch_size if self.batch_size is not None else max(
            1, self.tokens_per_batch // length)
        return -(-rows // self.row_multiple) * self.row_multiple

    def row_counts(self, length: int) -> tuple[int, ...]:
        """The rows a batch of this bucket may have, most first: rows(length), then the tails'
        halvings (distinct, multiples of row_multiple)."""
        counts = [self.rows(length)]
        for _ in range(self.tail_halvings):
            half = -(-counts[-1] // 2)
            half = -(-half // self.row_multiple) * self.row_multiple
            if half >= counts[-1]:
                break
            counts.append(half)
        return tuple(counts)

    def resolve(self, max_length: int) -> list[tuple[int, int]]:
        """Every (rows, length) shape make_batches can produce: shortest length first, and
        within a length fewest rows first (reversed, the order make_batches runs them)."""
        return [(rows, length) for length in self.bucket_lengths(max_length)
                for rows in reversed(self.row_counts(length))]


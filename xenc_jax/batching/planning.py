"""Plan the fixed-shape batches of a list of encodings: sort or pack examples into rows, give
each row the smallest bucket (BucketConfig) that holds it, and lay the rows out (batch.fill_rows).
"""
from __future__ import annotations

import itertools

import numpy as np

from .batch import Batch, TokenTable, fill_rows
from .buckets import BucketConfig
from .inputs import describe
from .tokenization import Encoding


def _pack(lens: np.ndarray, capacity: int, max_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit-decreasing bin packing; returns (examples in row order, segments per row).

    Best fit instead of first fit because the tightest open row can be found in O(1): open rows
    are kept in stacks indexed by their free space, and a Python int used as a bitset over free
    space finds the smallest free space >= the item length with one shift and one lowest-bit
    trick. Same packing quality guarantees as FFD, ~1 us per example instead of a scan.
    """
    order = np.argsort(-lens, kind="stable")
    smallest = int(lens.min())
    open_rows: list[list[int]] = [[] for _ in range(capacity + 1)]
    nonempty = 0  # bit c set <=> some open row has exactly c free tokens
    rows: list[list[int]] = []
    for i, n in zip(order.tolist(), lens[order].tolist()):
        fits = nonempty >> n
        if fits:
            free = n + (fits & -fits).bit_length() - 1
            stack = open_rows[free]
            r = stack.pop()
            if not stack:
                nonempty ^= 1 << free
            rows[r].append(i)
            count = len(rows[r])
        else:  # a new row; an example longer than the capacity gets a row of its own
            r, free, count = len(rows), max(capacity, n), 1
            rows.append([i])
        free -= n
        if count < max_segments and free >= smallest:
            if not open_rows[free]:
                nonempty |= 1 << free
            open_rows[free].append(r)
    counts = np.fromiter(map(len, rows), np.int64, len(rows))
    seg_ex = np.fromiter(itertools.chain.from_iterable(rows), np.int64, len(lens))
    return seg_ex, counts


def _batch_rows(n: int, counts: tuple[int, ...]) -> list[int]:
    """Row counts of the batches that hold n rows of one bucket, largest first: full batches of
    counts[0], and the rest (with one full batch: two halves may hold what a full batch and a
    small tail would) in the fewest slots, then the fewest batches, that the allowed counts
    (BucketConfig.row_counts) give. With halvings the padding left is under the smallest
    count, in a few extra batches, instead of up to a whole batch."""
    full, rest = divmod(n, counts[0])
    if not rest or len(counts) == 1:
        return [counts[0]] * (full + (rest > 0))
    keep = max(full - 1, 0)
    target = n - keep * counts[0]  # < 2 * counts[0]: a few hundred steps at most
    best = [(0, 0, 0)]  # best[x]: (slots, batches, count of one batch) of the cheapest cover of x rows
    for x in range(1, target + 1):
        best.append(min((best[max(0, x - c)][0] + c, best[max(0, x - c)][1] + 1, c) for c in counts))
    out, x = [], target
    while x > 0:
        out.append(best[x][2])
        x -= best[x][2]
    return [counts[0]] * keep + sorted(out, reverse=True)


def _assign_buckets(row_tokens: np.ndarray, buckets: np.ndarray,
                    row_counts: list[tuple[int, ...]]) -> tuple[np.ndarray, list[list[int]]]:
    """Bucket index of every row, and the row counts of each bucket's batches (_batch_rows of
    the rows that need the bucket). A row goes to the smallest bucket that fits it, except that
    the last batch of each bucket is topped up with the longest rows of smaller buckets.

    Those slots would otherwise be empty padding rows that the device computes anyway, so
    promotion never adds work and often saves a batch in a smaller bucket. The set of shapes
    (hence compilations) is unchanged. Since the batches are the cheapest cover of the rows
    that need the bucket, every batch but the last holds only such rows.
    """
    fit = np.searchsorted(buckets, row_tokens)  # smallest bucket >= row content
    order = np.argsort(-row_tokens, kind="stable")
    assigned = np.empty_like(fit)
    covers: list[list[int]] = [[] for _ in buckets]
    pos, n = 0, len(order)
    for b in range(len(buckets) - 1, -1, -1):
        # Rows still unassigned all fit bucket b; those that need it come first (longest first).
        must = int(np.count_nonzero(fit[order[pos:]] == b))
        covers[b] = _batch_rows(must, row_counts[b]) if must else []
        take = min(sum(covers[b]), n - pos)
        # Never split rows of equal length between two buckets: identical inputs (duplicates)
        # must see identical shapes to get bit-identical scores.
        while must < take < n - pos and row_tokens[order[pos + take]] == row_tokens[order[pos + take - 1]]:
            take -= 1
        assigned[order[pos:pos + take]] = b
        pos += take
    return assigned, covers


def _slots(covers: list[list[int]], buckets: np.ndarray) -> int:
    """Token slots (rows x length, padding included) that a plan's batches compute."""
    return sum(sum(rows) * int(length) for rows, length in zip(covers, buckets))


def make_batches(encodings: list[Encoding], config: BucketConfig, max_length: int,
                 pad_token_id: int) -> list[Batch]:
    """Fixed-shape batches covering every encoding once; longest bucket first (so an
    out-of-memory shape fails at the start, as in ST which also sorts longest first).

    Unpacked: each example gets its own row in the smallest bucket that fits it.
    Packed: examples are packed best-fit-decreasing into rows of max_length tokens and at most
    P segments, then each row goes to the smallest bucket that holds its content. Packing
    within each example's own bucket would almost never pack anything: with doubling buckets
    every example in a bucket is longer than half of it.

    Within a bucket, full batches come first, then (config.tail_halvings) smaller tail batches
    instead of one mostly empty full batch.
    """
    if not isinstance(config, BucketConfig):
        raise TypeError(f"config must be a BucketConfig, got {describe(config)}")
    buckets = np.asarray(config.bucket_lengths(max_length))
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)):
        raise TypeError(f"pad_token_id must be an int, got {describe(pad_token_id)} (a tokenizer "
                        "without a pad token returns None: pass another id, e.g. 0; padding "
                        "is masked out anyway)")
    encodings = list(encodings)
    if not encodings:
        return []
    table = _table(encodings, max_length)
    lens = table.lens

    if config.pack and config.max_segments > 1:
        capacity = min(int(max_length), config.pack_length or int(max_length))
        seg_ex, counts = _pack(lens, capacity, config.max_segments)
    else:
        seg_ex, counts = np.argsort(-lens, kind="stable"), np.ones(len(lens), np.int64)
    row_tokens = np.add.reduceat(lens[seg_ex], np.cumsum(counts) - counts)
    row_counts = [config.row_counts(int(x)) for x in buckets]
    row_bucket, covers = _assign_buckets(row_tokens, buckets, row_counts)
    if any(len(c) > 1 for c in row_counts):
        # A tight tail in one bucket can push a row into a smaller bucket's own new batch, where
        # full batches would have taken it into free slots: keep the plan that computes fewer
        # token slots, so tails never cost more than full batches (on a tie, full batches).
        plain = _assign_buckets(row_tokens, buckets, [c[:1] for c in row_counts])
        if _slots(plain[1], buckets) <= _slots(covers, buckets):
            row_bucket, covers = plain
    # Rows longest first (stable), so rows promoted from smaller buckets sit in each bucket's
    # last batch only, where they replace padding rows.
    order = np.argsort(-row_tokens, kind="stable")
    first = np.cumsum(counts) - counts
    seg_ex = np.concatenate([seg_ex[first[r]:first[r] + counts[r]] for r in order]) if len(order) else seg_ex
    counts, row_bucket = counts[order], row_bucket[order]
    seg_bucket = np.repeat(row_bucket, counts)
    batches = []
    for b in range(len(buckets) - 1, -1, -1):
        in_bucket = row_bucket == b
        if not in_bucket.any():
            continue
        length, b_seg_ex, b_counts = int(buckets[b]), seg_ex[seg_bucket == b], counts[in_bucket]
        r0, s0 = 0, 0
        for rows, same in itertools.groupby(covers[b]):
            r1 = min(r0 + rows * len(list(same)), len(b_counts))  # batches of one shape: one call
            s1 = s0 + int(b_counts[r0:r1].sum())
            batches += fill_rows(table, b_seg_ex[s0:s1], b_counts[r0:r1], (rows, length), config.segments,
                                 int(pad_token_id))
            r0, s0 = r1, s1
    return batches


def _table(encodings: list, max_length: int) -> TokenTable:
    for i, e in enumerate(encodings):
        if not isinstance(e, Encoding):
            raise TypeError(f"encodings[{i}] is {describe(e)}; make it with tokenize_pairs or "
                            "tokenize_texts")
    table = TokenTable.of(encodings)
    lens = table.lens
    if (bad := np.flatnonzero((lens < 1) | (lens > max_length))).size:
        raise ValueError(f"encodings[{bad[0]}] has {lens[bad[0]]} tokens, outside 1..max_length="
                         f"{max_length}; tokenize with the same max_length you batch with")
    return table

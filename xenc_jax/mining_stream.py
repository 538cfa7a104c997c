"""sentence-transformers' mining plan for (anchor, positive) rows that are streamed, not held:
what `xenc mine` (cli/mine.py) needs to mine a file chunk by chunk and still return the rows
`mine_hard_negatives` returns for the same rows.

ST groups rows by anchor (first appearance), excludes each anchor's positives from every row's
negatives, derives range_max from the most rows of one anchor, and adds positives missing from
the corpus. All of that needs the whole file, so it is read twice:

1. `scan_pairs`: one pass that keeps, per input row, a 128-bit hash of its anchor and its
   positive's corpus id (24 bytes a row, ~100 while they are grouped; no texts are kept, except
   positives that join the corpus). From them: each anchor's unique id in first-appearance order, its positives (CSR
   arrays), the rows where an anchor is its own positive, and the largest group.
2. `anchor_chunks`: a second pass that picks each anchor's text at its first row and hands out
   chunks of `chunk` anchors with their positives: memory per chunk, whatever the file's size.

Two different anchors share a 128-bit blake2b hash with probability ~n^2 / 2^129 (n = 10^9
anchors: 10^-21).
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

import numpy as np

__all__ = ["StreamPlan", "scan_pairs", "anchor_chunks"]


@dataclass
class StreamPlan:
    corpus: list                # the given corpus (deduplicated), then the positives not in it
    index: dict                 # corpus text -> id
    rows: int                   # input rows
    first_rows: np.ndarray      # int64 [anchors]: each anchor's first row (ascending)
    pos_start: np.ndarray       # int64 [anchors + 1]: CSR offsets into pos_flat
    pos_flat: np.ndarray        # int64: each anchor's unique positives' corpus ids, first-appearance order
    self_positive: np.ndarray   # bool [anchors]: some row has the anchor as its own positive
    max_positives: int          # most rows of one anchor (ST's groupby count)
    added: int                  # positives not in the given corpus (joined it)
    first_added: str | None     # where the first of them is

    @property
    def anchors(self) -> int:
        return len(self.first_rows)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def scan_pairs(pairs, corpus: list | None, missing_positive: str = "add", source: str = "the pairs") -> StreamPlan:
    """pairs: iterable of (where, anchor, positive), `where` naming the row for errors. corpus:
    the given texts (None: the positives alone, as ST). A positive missing from a given corpus
    joins it ("add", ST's behaviour) or is an error naming its row ("error")."""
    given = corpus is not None
    corpus = list(dict.fromkeys(corpus or []))
    if given and not corpus:
        raise ValueError("the corpus is empty (0 texts): give a corpus, or none to mine among the positives")
    index = {t: i for i, t in enumerate(corpus)}
    hashes, pids, self_rows = bytearray(), array("q"), array("q")
    added, first_added = 0, None
    for row, (where, anchor, positive) in enumerate(pairs):
        pid = index.get(positive)
        if pid is None:
            pid = index[positive] = len(corpus)
            corpus.append(positive)
            if given:
                added += 1
                first_added = first_added or (where, positive)
        hashes += _digest(anchor)
        pids.append(pid)
        if anchor == positive:
            self_rows.append(row)
    if not pids:
        raise ValueError(f"{source}: no (anchor, positive) rows (the file is empty or has only blank lines)")
    if added and missing_positive == "error":
        raise ValueError(f"{first_added[0]}: the positive {first_added[1][:60]!r} is not in the corpus ({added} "
                         "positives are not); add them to the corpus, or let them join it (missing_positive='add', "
                         "`xenc mine --missing-positive add`: sentence-transformers' behaviour)")
    return _group(corpus, index, np.frombuffer(bytes(hashes), np.uint64).reshape(-1, 2),
                  np.frombuffer(pids, np.int64), np.frombuffer(self_rows, np.int64), added,
                  None if first_added is None else first_added[0])


def _group(corpus, index, h, pids, self_rows, added, first_added) -> StreamPlan:
    """Anchor ids in first-appearance order from the hashes (sorted, no table of texts), then each
    anchor's unique positives in row order."""
    n = len(pids)
    order = np.lexsort((h[:, 1], h[:, 0]))  # stable: equal hashes keep row order
    hs = h[order]
    new = np.ones(n, bool)
    new[1:] = (hs[1:] != hs[:-1]).any(1)
    group = np.cumsum(new) - 1                # id in hash order
    first = order[new]                        # each group's first row
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    row_uid = np.empty(n, np.int64)
    row_uid[order] = rank[group]
    by_anchor = np.argsort(row_uid, kind="stable")  # rows grouped by anchor, in row order within
    uid_s, pid_s = row_uid[by_anchor], pids[by_anchor]
    _, keep = np.unique(uid_s * (len(corpus) + 1) + pid_s, return_index=True)
    keep.sort()                               # first (anchor, positive) occurrences, grouped, row order
    counts = np.bincount(uid_s[keep], minlength=len(first))
    self_positive = np.zeros(len(first), bool)
    self_positive[row_uid[self_rows]] = True
    return StreamPlan(corpus, index, n, np.sort(first), np.concatenate([[0], np.cumsum(counts)]),
                      pid_s[keep], self_positive, int(np.bincount(row_uid).max()), added, first_added)


def anchor_chunks(plan: StreamPlan, anchors, chunk: int, include_positives: bool):
    """anchors: the input rows' anchor texts again, in row order. Yields (k, lo, queries,
    positive_ids, query_corpus) per chunk of `chunk` unique anchors: ids lo.., their texts, their
    positives' corpus ids (lists), each one's own corpus id (-1: not in the corpus, or its own
    positive with include_positives, as ST)."""
    queries, k, next_first, seen = [], 0, 0, 0
    for row, text in enumerate(anchors):
        seen += 1
        if next_first < plan.anchors and row == plan.first_rows[next_first]:
            queries.append(text)
            next_first += 1
            if len(queries) == chunk:
                yield _chunk(plan, k, k * chunk, queries, include_positives)
                queries, k = [], k + 1
    if seen != plan.rows or next_first != plan.anchors:
        raise ValueError(f"the pairs changed while mining: {seen} rows now, {plan.rows} in the first pass")
    if queries:
        yield _chunk(plan, k, k * chunk, queries, include_positives)


def _chunk(plan: StreamPlan, k: int, lo: int, queries: list, include_positives: bool):
    positive_ids = [plan.pos_flat[plan.pos_start[u]:plan.pos_start[u + 1]].tolist()
                    for u in range(lo, lo + len(queries))]
    query_corpus = np.array([plan.index.get(q, -1) for q in queries], np.int64)
    if include_positives:
        query_corpus[plan.self_positive[lo:lo + len(queries)]] = -1
    return k, lo, queries, positive_ids, query_corpus

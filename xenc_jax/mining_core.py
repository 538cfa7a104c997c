"""The work of hard-negative mining, shared by `mine_hard_negatives` (mining.py) and `xenc mine`
(cli/mine.py): the plan (sentence-transformers' corpus and per-anchor positives), the corpus
embedded once into device blocks (`Miner`), and, per chunk of anchors, the exact search, the
optional cross-encoder rescoring and the selection.

A chunk's result depends only on the corpus, the chunk's anchors with their positives and the
options (and, for random sampling, the chunk's own random stream, `chunk_rng`), never on other
chunks: that is what lets the CLI write one part per chunk and resume at any of them.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

import jax
import numpy as np

from .mining_embed import embed_corpus
from .mining_options import Options
from .search import search_blocks

__all__ = ["Plan", "make_plan", "Mined", "Miner", "chunk_rng", "pairwise_scores", "select"]


@dataclass
class Plan:
    """ST's bookkeeping: unique queries, the deduplicated corpus, positives per query."""
    queries: list        # unique anchors, first-appearance order
    corpus: list         # the given corpus (deduplicated), then the positives not in it
    positive_ids: list   # per query: its unique positives' corpus ids, first-appearance order
    query_corpus: np.ndarray  # corpus id of each query's own text (never a negative), or -1
    max_positives: int   # most rows of one anchor (ST's pandas groupby count)


def make_plan(anchors, positives, corpus, include_positives: bool, missing_positive: str, log=None) -> Plan:
    corpus = list(dict.fromkeys(positives if corpus is None else corpus))
    n_given = len(corpus)
    index = {t: i for i, t in enumerate(corpus)}
    for p in positives:
        if p not in index:
            index[p] = len(corpus)
            corpus.append(p)
    added = len(corpus) - n_given
    if added:  # only with a given corpus: without one, the corpus is the positives
        row = next(i for i, p in enumerate(positives) if index[p] >= n_given)
        if missing_positive == "error":
            raise ValueError(f"dataset row {row}: the positive {positives[row][:60]!r} is not in the corpus "
                             f"({added} positives are not); add them to the corpus, or pass "
                             "missing_positive='add' to add them (sentence-transformers' behaviour)")
        if log is not None:
            log.info("%d positives are not in the given corpus (first: dataset row %d); added to it as "
                     "sentence-transformers does", added, row)
    queries = list(dict.fromkeys(anchors))
    q_index = {q: i for i, q in enumerate(queries)}
    query_corpus = np.array([index.get(q, -1) for q in queries], np.int64)
    positive_ids = [[] for _ in queries]
    for q, p in zip(anchors, positives):
        qi, pid = q_index[q], index[p]
        if pid not in positive_ids[qi]:
            positive_ids[qi].append(pid)
        if include_positives and q == p:
            query_corpus[qi] = -1
    return Plan(queries, corpus, positive_ids, query_corpus, max(Counter(anchors).values()))


def chunk_rng(seed: int | None, k: int):
    """Random sampling's stream for chunk k: its own when seeded (a chunk's rows do not depend on
    the chunks before it, so a resumed job draws what an uninterrupted one drew); else Python's
    global `random`, as ST (`random.seed(s)` before either gives the same rows)."""
    return random if seed is None else random.Random(f"xenc-mine/{seed}/{k}")


def pairwise_scores(fn: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """search._score_pairs on the host (chunk sizes vary: no compile per size)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    if fn == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    if fn in ("cosine", "dot"):
        return np.einsum("nd,nd->n", a, b).astype(np.float32)
    if fn == "euclidean":
        return -np.linalg.norm(a - b, axis=1).astype(np.float32)
    return -np.abs(a - b).sum(axis=1).astype(np.float32)


def select(scores, ids, query_corpus, positive_ids, n_corpus: int, pos_scores, o: Options, rng, skipped: Counter):
    """ST's selection for a chunk of queries: mask padding, the query itself and its positives,
    apply the margins (against the query's lowest positive score) and score bounds, keep ranks
    range_min..range_max of what is left, then the top or a random num_negatives."""
    n, inf = len(scores), np.float32(np.inf)
    s = np.where((ids == -1) | (ids == query_corpus[:, None]), -inf, scores).astype(np.float32)
    n_pos = np.array([len(p) for p in positive_ids])
    rows = np.repeat(np.arange(n), n_pos)
    if not o.include_positives:
        stride = n_corpus + 1
        pos_keys = rows * stride + np.concatenate([np.asarray(p, np.int64) for p in positive_ids]) + 1
        s[np.isin(np.arange(n)[:, None] * stride + ids + 1, pos_keys)] = -inf
    skipped["candidates"] += s.size
    hardest = np.minimum.reduceat(pos_scores, np.cumsum(n_pos) - n_pos)[:, None]
    for name, bound, drop in (
            ("absolute_margin", o.absolute_margin, lambda b: s + b > hardest),
            ("relative_margin", o.relative_margin, lambda b: s > hardest - np.abs(hardest) * b),
            ("max_score", o.max_score, lambda b: s > b),
            ("min_score", o.min_score, lambda b: (s < b) & (s != -inf))):
        if bound is not None:
            removed = drop(np.float32(bound))
            skipped[name] += int(removed.sum())
            s[removed] = -inf
    order = np.argsort(-s, axis=1, kind="stable")[:, o.range_min:o.range_max]  # torch.topk(range_max), ties: bi rank
    s, ids = np.take_along_axis(s, order, 1), np.take_along_axis(ids, order, 1)
    if o.sampling_strategy == "top":
        return ids[:, :o.num_negatives], s[:, :o.num_negatives]
    options = np.maximum(s.shape[1] - np.isinf(s).sum(1), o.num_negatives)
    picked = np.array([rng.sample(range(k), k=o.num_negatives) for k in options.tolist()]).reshape(n, -1)
    s, ids = np.take_along_axis(s, picked, 1), np.take_along_axis(ids, picked, 1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(s, order, 1)


def _rescore(cross_encoder, queries, corpus, ids, pair_q, pair_p, batch_size, verbose):
    """Cross-encoder scores of every candidate (padding stays -inf) and of the (query, positive) pairs."""
    r, c = np.nonzero(ids >= 0)
    scores = np.full(ids.shape, -np.inf, np.float32)
    scores[r, c] = cross_encoder.predict([(queries[i], corpus[j]) for i, j in zip(r.tolist(), ids[r, c].tolist())],
                                         batch_size=batch_size, show_progress_bar=verbose)
    pos = cross_encoder.predict([(queries[i], corpus[j]) for i, j in zip(pair_q.tolist(), pair_p.tolist())],
                                batch_size=batch_size, show_progress_bar=False)
    return scores, np.asarray(pos, np.float32)


@dataclass
class Mined:
    """One chunk's result: negative ids and scores [Q, W] (-inf: none found), the (query,
    positive) pairs' scores (flat, query by query), each query's hardest positive's rank."""
    neg_ids: np.ndarray
    neg_scores: np.ndarray
    pos_scores: np.ndarray
    ranks: np.ndarray


class Miner:
    """The corpus embedded once into device blocks (plus the positives' embeddings on the host);
    `mine` runs one chunk of anchors. `stats` receives wall seconds per phase; `skipped` what
    each filter removed (ST's summary)."""

    def __init__(self, model, cross_encoder, options: Options, corpus: list, positive_rows: np.ndarray, *,
                 max_positives: int, prompt, dtype, batch_size, cache, block_size: int, query_chunk_size: int,
                 mesh, axis: str, verbose: bool, stats: Counter):
        self.model, self.cross_encoder, self.o, self.corpus = model, cross_encoder, options, corpus
        self.fn, self.batch_size, self.query_chunk_size, self.verbose = (model.similarity_fn_name, batch_size,
                                                                         query_chunk_size, verbose)
        self.stats, self.skipped, self._clock = stats, Counter(), time.perf_counter()
        self.pos_rows = np.unique(np.asarray(positive_rows, np.int64))
        if mesh is None and model.plan is not None:  # the model's devices
            mesh = model.plan.mesh
        self.blocks, self.pos_emb = embed_corpus(model, corpus, prompt=prompt, dtype=dtype, batch_size=batch_size,
                                                 cache=cache, block_size=block_size, mesh=mesh, axis=axis,
                                                 positive_rows=self.pos_rows, verbose=verbose)
        jax.block_until_ready(self.blocks.blocks)
        # ST's candidate count: room for the positives and the query itself
        self.width = options.range_max + max_positives + 1
        self.lap("embed_corpus")

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.stats[phase] += now - self._clock
        self._clock = now

    def mine(self, q_emb: np.ndarray, queries: list, positive_ids: list, query_corpus: np.ndarray, rng) -> Mined:
        """q_emb [Q, D]: the chunk's query embeddings; positive_ids: per query, its positives'
        corpus ids; query_corpus: each query's own corpus id (-1: none)."""
        n_pos = np.array([len(p) for p in positive_ids])
        pair_r = np.repeat(np.arange(len(queries)), n_pos)
        pair_p = np.concatenate([np.asarray(p, np.int64) for p in positive_ids])
        pos_s = pairwise_scores(self.fn, q_emb[pair_r], self.pos_emb[np.searchsorted(self.pos_rows, pair_p)])
        # each query's hardest positive (the margins' reference): its rank comes with the top-k
        hardest = np.lexsort((pos_s, pair_r))[np.cumsum(n_pos) - n_pos]
        s, ids, above = search_blocks(q_emb, self.blocks, top_k=self.width, score_function=self.fn,
                                      query_chunk_size=self.query_chunk_size, thresholds=pos_s[hardest],
                                      exclude_ids=pair_p[hardest])
        self.lap("search")
        missing = self.width - s.shape[1]  # a corpus smaller than the window: padded as ST does
        s = np.pad(s, ((0, 0), (0, missing)), constant_values=-np.inf)
        ids = np.pad(ids.astype(np.int64), ((0, 0), (0, missing)), constant_values=-1)
        if self.cross_encoder is not None:
            s, pos_s = _rescore(self.cross_encoder, queries, self.corpus, ids, pair_r, pair_p, self.batch_size,
                                self.verbose)
            self.lap("rescore")
        neg_ids, neg_s = select(s, ids, np.asarray(query_corpus, np.int64), positive_ids, len(self.corpus), pos_s,
                                self.o, rng, self.skipped)
        self.lap("select")
        return Mined(neg_ids, neg_s, pos_s, above + 1)

"""Retrieve-and-rerank: a bi-encoder retrieves candidates, a cross-encoder re-ranks them; and the
IR metrics to judge both rankings against graded relevance judgments (qrels).

Retrieval embeds all queries in one bucketed stream and searches them together with the exact,
jitted `search.semantic_search`; re-ranking scores every (query, candidate) pair of every query in
one bucketed stream with `CrossEncoder.rank_many`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .search import semantic_search
from .train.evaluation import mrr_at_k, ndcg_at_k

__all__ = ["evaluate_retrieval", "retrieve_rerank"]


def _texts(items, name: str) -> list[str]:
    if items is None or isinstance(items, (str, bytes, dict)):
        raise TypeError(f"{name} must be a list of str, got {type(items).__name__}"
                        + ("; wrap a single text in a list" if isinstance(items, str) else ""))
    items = list(items)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, not a str")
    return items


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def retrieve_rerank(bi_encoder, cross_encoder, queries: Sequence[str], corpus: Sequence[str], top_k: int = 100,
                    rerank_top_k: int | None = None, corpus_embeddings=None, *, batch_size: int | None = None,
                    rerank_batch_size: int | None = None, show_progress_bar: bool | None = None,
                    query_chunk_size: int = 100, corpus_chunk_size: int = 500_000) -> list[dict]:
    """For each query: {"retrieved": [...], "reranked": [...]}.

    retrieved: the bi-encoder's top_k, [{"corpus_id", "score"}] best first (score with the
      bi-encoder's similarity_fn_name), exactly `semantic_search`'s output.
    reranked: the first `rerank_top_k` (default: all top_k) candidates re-ordered by the
      cross-encoder, then the remaining candidates in bi-encoder order:
      [{"corpus_id", "cross_score", "bi_score"}], cross_score None beyond rerank_top_k.
      `cross_encoder=None` skips re-ranking (reranked keeps the retrieval order).

    corpus_embeddings: precomputed [len(corpus), D] embeddings of `corpus` (encode once, search
    many times); None encodes the corpus here.
    """
    queries, corpus = _texts(queries, "queries"), _texts(corpus, "corpus")
    top_k = _positive(top_k, "top_k")
    rerank_top_k = top_k if rerank_top_k is None else min(_positive(rerank_top_k, "rerank_top_k"), top_k)
    if corpus_embeddings is None:
        corpus_embeddings = bi_encoder.encode(corpus, batch_size=batch_size, show_progress_bar=show_progress_bar)
    corpus_embeddings = np.asarray(corpus_embeddings, np.float32)
    if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] != len(corpus):
        raise ValueError(f"corpus_embeddings must be [len(corpus)={len(corpus)}, dim], "
                         f"got shape {corpus_embeddings.shape}")
    query_embeddings = bi_encoder.encode(queries, batch_size=batch_size, show_progress_bar=show_progress_bar)
    if not queries:
        return []
    hits = semantic_search(query_embeddings, corpus_embeddings, top_k=top_k,
                           score_function=bi_encoder.similarity_fn_name,
                           query_chunk_size=query_chunk_size, corpus_chunk_size=corpus_chunk_size)
    if cross_encoder is None:
        ranked = [[{"corpus_id": i, "score": None} for i in range(min(rerank_top_k, len(h)))] for h in hits]
    else:
        candidates = [[corpus[h["corpus_id"]] for h in hs[:rerank_top_k]] for hs in hits]
        ranked = cross_encoder.rank_many(queries, candidates, batch_size=rerank_batch_size,
                                         show_progress_bar=show_progress_bar)
    out = []
    for hs, rk in zip(hits, ranked):
        head = [{"corpus_id": hs[r["corpus_id"]]["corpus_id"], "cross_score": r["score"],
                 "bi_score": hs[r["corpus_id"]]["score"]} for r in rk]
        tail = [{"corpus_id": h["corpus_id"], "cross_score": None, "bi_score": h["score"]}
                for h in hs[len(rk):]]
        out.append({"retrieved": hs, "reranked": head + tail})
    return out


def _doc_id(item, corpus_ids):
    cid = item["corpus_id"] if isinstance(item, Mapping) else item
    return corpus_ids[cid] if corpus_ids is not None else cid


def evaluate_retrieval(rankings: Mapping, qrels: Mapping[str, Mapping[str, int]], *, corpus_ids=None,
                       ndcg_k: int = 10, mrr_k: int = 10, recall_k: int = 100,
                       relevance_threshold: int = 1, per_query: bool = False) -> dict:
    """Mean NDCG@ndcg_k, MRR@mrr_k and Recall@recall_k over the queries that have a relevant judgment.

    rankings: {qid: ranked list, best first} of document ids, or of hit dicts with "corpus_id"
      (indices into `corpus_ids` when given, e.g. retrieve_rerank's "retrieved"/"reranked").
    qrels: {qid: {doc_id: grade}} graded judgments (TREC style, 0 = not relevant).

    Definitions (those of trec_eval / BEIR, which use pytrec_eval):
      NDCG@k: linear gains (gain = grade, as `train.evaluation.ndcg_at_k`, i.e. sklearn and
        trec_eval's ndcg_cut), discount 1/log2(rank + 1); the ideal ranking is built from ALL the
        query's judgments, so relevant documents that were not retrieved lower the score.
      MRR@k: 1 / rank of the first document with grade >= relevance_threshold in the top k, else 0.
      Recall@k: |relevant in top k| / |relevant| with relevant = grade >= relevance_threshold.
    relevance_threshold: 1 counts every positive grade as relevant (BEIR/MTEB); TREC DL's official
      binary metrics use 2.
    Queries without any document of grade >= relevance_threshold are skipped (as BEIR skips queries
    absent from qrels); queries in qrels but missing from `rankings` count as retrieving nothing.
    """
    for name, k in (("ndcg_k", ndcg_k), ("mrr_k", mrr_k), ("recall_k", recall_k)):
        _positive(k, name)
    if not isinstance(rankings, Mapping) or not isinstance(qrels, Mapping):
        raise TypeError("rankings and qrels must be dicts keyed by query id")
    unknown = [q for q in rankings if q not in qrels]
    scores = {"ndcg": {}, "mrr": {}, "recall": {}}
    for qid, judged in qrels.items():
        grades = {str(d): float(g) for d, g in judged.items()}
        relevant = {d for d, g in grades.items() if g >= relevance_threshold}
        if not relevant:
            continue
        docs = [str(_doc_id(item, corpus_ids)) for item in rankings.get(qid, [])]
        if len(set(docs)) != len(docs):
            raise ValueError(f"ranking of query {qid!r} lists a document twice")
        # The ranked list, padded with unjudged placeholders up to the largest cut-off, then every
        # judged document that was not retrieved: these sit below every cut-off, so they only enter
        # the ideal DCG and the recall denominator.
        depth = max(ndcg_k, mrr_k, len(docs))
        missing = [d for d in grades if d not in set(docs)]
        y_true = np.array([grades.get(d, 0.0) for d in docs] + [0.0] * (depth - len(docs))
                          + [grades[d] for d in missing])
        y_score = -np.arange(y_true.size, dtype=np.float64)  # strictly decreasing: the given order
        scores["ndcg"][qid] = ndcg_at_k(np.maximum(y_true, 0.0), y_score, ndcg_k)
        binary = (y_true >= relevance_threshold).astype(np.float64)
        scores["mrr"][qid] = mrr_at_k(binary, y_score, mrr_k)
        scores["recall"][qid] = len(relevant & set(docs[:recall_k])) / len(relevant)
    if not scores["ndcg"]:
        raise ValueError("no query in qrels has a relevant judgment; nothing to evaluate")
    out = {f"ndcg@{ndcg_k}": float(np.mean(list(scores["ndcg"].values()))),
           f"mrr@{mrr_k}": float(np.mean(list(scores["mrr"].values()))),
           f"recall@{recall_k}": float(np.mean(list(scores["recall"].values()))),
           "num_queries": len(scores["ndcg"])}
    if unknown:
        out["unjudged_queries"] = len(unknown)
    if per_query:
        out["per_query"] = scores
    return out

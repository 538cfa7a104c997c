"""Evaluation metrics: plain numpy in, Python floats out (host side, never inside jit).

Each metric reproduces the reference sentence-transformers (ST) evaluators report, so numbers
are comparable with PyTorch runs without importing scikit-learn or scipy here:

* re-ranking (ST ``CrossEncoderRerankingEvaluator.compute_metrics``): MRR@k on ST's ranking
  ``argsort(scores)[::-1]``, NDCG@k as ``sklearn.metrics.ndcg_score`` (linear gains, ties in
  scores averaged), AP as ``sklearn.metrics.average_precision_score``;
* correlation (ST ``CrossEncoderCorrelationEvaluator``): ``scipy.stats.pearsonr`` / ``spearmanr``;
* classification (ST ``CrossEncoderClassificationEvaluator``): accuracy, F1 (binary / macro, as
  ``sklearn.metrics.f1_score`` with zero_division=0), AP, and the best-threshold accuracy/F1 of
  ST's ``BinaryClassificationEvaluator`` used for single-logit models.

The model-calling evaluator loop lives elsewhere; it turns predictions into these arrays.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "average_precision",
    "best_accuracy_and_threshold",
    "best_f1_and_threshold",
    "f1_score",
    "mrr_at_k",
    "ndcg_at_k",
    "pearson",
    "rankdata",
    "reranking_metrics",
    "spearman",
]


# --------------------------------------------------------------------------- re-ranking
def mrr_at_k(y_true, y_score, k: int = 10) -> float:
    """Reciprocal rank of the first relevant (> 0) document within the top k, else 0.

    Ranking is ``np.argsort(y_score)[::-1]`` exactly as ST, so ties in scores resolve the same
    way ST's do (numpy's default sort, reversed).
    """
    y_true = np.asarray(y_true)
    ranking = np.argsort(np.asarray(y_score))[::-1][:k]
    hits = np.flatnonzero(y_true[ranking] > 0)
    return float(1.0 / (hits[0] + 1)) if hits.size else 0.0


def _tie_averaged_dcg(y_true: np.ndarray, y_score: np.ndarray, k: int | None) -> float:
    """DCG with linear gains where tied scores share the mean gain of their group (sklearn)."""
    discount = 1.0 / np.log2(np.arange(y_true.size) + 2.0)
    if k is not None:
        discount[k:] = 0.0
    discount_cumsum = np.cumsum(discount)
    _, inv, counts = np.unique(-y_score, return_inverse=True, return_counts=True)
    ranked = np.zeros(len(counts))
    np.add.at(ranked, inv.reshape(-1), y_true)
    ranked /= counts
    groups = np.cumsum(counts) - 1
    discount_sums = np.diff(discount_cumsum[groups], prepend=0.0)
    return float((ranked * discount_sums).sum())


def ndcg_at_k(y_true, y_score, k: int | None = 10) -> float:
    """NDCG@k of one query as ``sklearn.metrics.ndcg_score([y_true], [y_score], k=k)``.

    Graded relevance is used linearly (gain = label, not 2^label - 1) with discount
    1/log2(rank + 1); a query without any relevant document scores 0.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if np.any(y_true < 0):
        raise ValueError("ndcg_at_k: relevance must be non-negative (as sklearn)")
    ideal = _tie_averaged_dcg(y_true, y_true, k)
    if ideal == 0.0:
        return 0.0
    return _tie_averaged_dcg(y_true, y_score, k) / ideal


def average_precision(y_true, y_score) -> float:
    """``sklearn.metrics.average_precision_score`` for one binary problem (relevance > 0 is
    positive): sum over distinct score thresholds of (R_n - R_{n-1}) * P_n. 0 with no positive."""
    y = (np.asarray(y_true) > 0).astype(np.float64)
    y_score = np.asarray(y_score)
    if y.sum() == 0:
        return 0.0
    order = np.argsort(-y_score, kind="mergesort")
    s, y = y_score[order], y[order]
    # Last index of every group of tied scores: a threshold admits a whole tie group at once.
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[ends]
    precision = tps / (ends + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def reranking_metrics(y_trues: Sequence, y_scores: Sequence, k: int = 10,
                      mask=None) -> dict[str, float]:
    """Mean MRR@k, NDCG@k and MAP over queries, as ST ``CrossEncoderRerankingEvaluator``.

    y_trues/y_scores: one relevance / score array per query (ragged lists), or [Q, L] arrays
    with a [Q, L] validity ``mask``. A query with no relevant document counts 0 for all three
    metrics (ST keeps it in the mean that way).
    Returns {"map", "mrr@k", "ndcg@k"}.
    """
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        y_trues = [np.asarray(t)[m] for t, m in zip(y_trues, mask, strict=True)]
        y_scores = [np.asarray(s)[m] for s, m in zip(y_scores, mask, strict=True)]
    mrr, ndcg, ap = [], [], []
    for t, s in zip(y_trues, y_scores, strict=True):
        t, s = np.asarray(t), np.asarray(s)
        if not np.any(t > 0):
            mrr.append(0.0), ndcg.append(0.0), ap.append(0.0)
            continue
        mrr.append(mrr_at_k(t, s, k))
        ndcg.append(ndcg_at_k(t, s, k))
        ap.append(average_precision(t, s))
    if not mrr:
        raise ValueError("reranking_metrics: no queries")
    return {"map": float(np.mean(ap)), f"mrr@{k}": float(np.mean(mrr)),
            f"ndcg@{k}": float(np.mean(ndcg))}


# --------------------------------------------------------------------------- correlation
def pearson(x, y) -> float:
    """Pearson r as ``scipy.stats.pearsonr(x, y).statistic`` (NaN for a constant input)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("pearson: need two 1-D arrays of equal length >= 2")
    xm, ym = x - x.mean(), y - y.mean()
    nx, ny = np.linalg.norm(xm), np.linalg.norm(ym)
    if nx == 0.0 or ny == 0.0:
        return float("nan")
    # Normalize first (as scipy) so large-magnitude inputs do not overflow the product.
    r = float(np.dot(xm / nx, ym / ny))
    return max(-1.0, min(1.0, r))


def rankdata(a) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``, 'average')."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1
    bounds = np.r_[np.flatnonzero(starts), a.size]
    avg = 0.5 * (bounds[:-1] + 1 + bounds[1:])  # mean of ranks start+1 .. end
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(x, y) -> float:
    """Spearman rho as ``scipy.stats.spearmanr(x, y).statistic``: Pearson of average ranks."""
    return pearson(rankdata(x), rankdata(y))


# --------------------------------------------------------------------------- classification
def accuracy(y_true, y_pred) -> float:
    """Fraction of exact label matches."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("accuracy: need non-empty arrays of equal shape")
    return float(np.mean(y_true == y_pred))


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0  # sklearn zero_division=0 (with a warning there)


def f1_score(y_true, y_pred, average: str = "binary", pos_label=1, labels=None) -> float:
    """``sklearn.metrics.f1_score``: "binary" (F1 of ``pos_label``) or "macro" (unweighted
    mean over ``labels``, default: every label present in y_true or y_pred)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if average == "binary":
        t, p = y_true == pos_label, y_pred == pos_label
        return float(_f1(np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)))
    if average == "macro":
        labels = np.union1d(y_true, y_pred) if labels is None else np.asarray(labels)
        return float(np.mean([f1_score(y_true, y_pred, "binary", pos_label=c) for c in labels]))
    raise ValueError(f"f1_score: average must be 'binary' or 'macro', got {average!r}")


def _group_ends_desc(scores: np.ndarray, labels: np.ndarray):
    """Sort by score descending; return sorted scores, labels and the last index of each tie
    group (ST's threshold search only stops between distinct scores)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    return s, y, ends


def _threshold(s: np.ndarray, i: int):
    """ST's threshold after group end i: midpoint to the next score (in the scores' dtype),
    or the score itself if last or if the rounded midpoint hits the next score."""
    if i == s.size - 1:
        return s[i]
    mid = (s[i] + s[i + 1]) / 2
    return s[i] if mid == s[i + 1] else mid


def best_accuracy_and_threshold(scores, labels) -> tuple[float, float]:
    """ST ``BinaryClassificationEvaluator.find_best_acc_and_threshold`` (high score = positive):
    the best accuracy of "score > threshold" over all cut points, and that threshold."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.size == 0:
        return 0.0, -1.0
    n = labels.size
    s, y, ends = _group_ends_desc(scores, labels)
    pos_so_far = np.cumsum(y == 1)[ends]
    neg_left = np.sum(labels == 0) - np.cumsum(y != 1)[ends]
    accs = (pos_so_far + neg_left) / n
    # Start: everything predicted negative; a cut replaces it only when strictly better.
    best_acc = np.sum(labels == 0) / n
    dtype = np.result_type(scores.dtype, np.float16)
    best_thr = np.nextafter(s[0].astype(dtype), np.asarray(np.inf, dtype=dtype))
    j = int(np.argmax(accs))
    if accs[j] > best_acc:
        best_acc, best_thr = accs[j], _threshold(s, ends[j])
    return float(best_acc), float(best_thr)


def best_f1_and_threshold(scores, labels) -> tuple[float, float, float, float]:
    """ST ``BinaryClassificationEvaluator.find_best_f1_and_threshold`` (high score = positive):
    (best F1, its precision, its recall, threshold)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    s, y, ends = _group_ends_desc(scores, labels)
    ncorrect = np.cumsum(y == 1)[ends].astype(np.float64)
    nextract = ends + 1.0
    total = np.sum(labels)  # ST divides by sum(labels): binary 0/1 labels expected
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = ncorrect / nextract
        recall = ncorrect / total
        f1 = np.where(ncorrect > 0, 2 * precision * recall / (precision + recall), 0.0)
    j = int(np.argmax(f1))
    if f1[j] <= 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(f1[j]), float(precision[j]), float(recall[j]), float(_threshold(s, ends[j]))

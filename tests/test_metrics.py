"""Metrics against scikit-learn / scipy / the ST evaluators' own code, plus hand-checked cases."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from xenc_jax.train import evaluation as E

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")


def _st_rerank(k, y_true, y_score):
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    return CrossEncoderRerankingEvaluator.compute_metrics(SimpleNamespace(at_k=k), y_true, y_score)


def _queries(seed, n=40, graded=False, ties=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        size = int(rng.integers(2, 15))
        y = rng.integers(0, 4 if graded else 2, size)
        if not y.any():
            y[rng.integers(size)] = 1
        s = rng.integers(0, 4, size).astype(np.float32) if ties else \
            rng.normal(size=size).astype(np.float32)
        out.append((y, s))
    return out


# ------------------------------------------------------------------- re-ranking
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_reranking_matches_st_evaluator(ties, k):
    qs = _queries(0, ties=ties)
    for y, s in qs:
        mrr, ndcg, ap = _st_rerank(k, y, s)
        assert E.mrr_at_k(y, s, k) == pytest.approx(mrr, abs=1e-12)
        assert E.ndcg_at_k(y, s, k) == pytest.approx(ndcg, abs=1e-12)
        assert E.average_precision(y, s) == pytest.approx(ap, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_ndcg_graded_matches_sklearn(ties):
    for y, s in _queries(1, graded=True, ties=ties):
        for k in (None, 2, 5):
            ref = sklearn_metrics.ndcg_score([y], [s], k=k)
            assert E.ndcg_at_k(y, s, k) == pytest.approx(ref, abs=1e-12)


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(2, 30))
        y = rng.integers(0, 2, n)
        y[0] = 1
        s = np.round(rng.normal(size=n), 1)  # many ties
        assert E.average_precision(y, s) == pytest.approx(
            sklearn_metrics.average_precision_score(y, s), abs=1e-12)


def test_reranking_hand_checked():
    # Ranking by score: d2 (rel), d0 (not), d1 (rel)
    y, s = np.array([0, 1, 1]), np.array([0.5, 0.1, 0.9])
    assert E.mrr_at_k(y, s, 10) == 1.0
    assert E.mrr_at_k([1, 0, 0], s, 10) == 0.5  # d0 is second
    assert E.mrr_at_k([0, 1, 0], s, 2) == 0.0  # d1 is third: outside top 2
    assert E.average_precision(y, s) == pytest.approx((1 / 1 + 2 / 3) / 2)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert E.ndcg_at_k(y, s, 10) == pytest.approx(dcg / idcg)
    assert E.ndcg_at_k([0, 0, 0], s) == 0.0
    # Ties: both documents share the mean gain of their group.
    assert E.ndcg_at_k([1, 0], [0.3, 0.3]) == pytest.approx(
        (0.5 * (1 + 1 / math.log2(3))) / 1.0)


def test_reranking_metrics_aggregate_and_mask():
    qs = _queries(3)
    qs.append((np.zeros(4, int), np.arange(4.0)))  # no relevant doc: counts as 0 (as ST)
    ys, ss = [y for y, _ in qs], [s for _, s in qs]
    out = E.reranking_metrics(ys, ss, k=5)
    ref = np.array([_st_rerank(5, y, s) if y.any() else (0, 0, 0) for y, s in qs])
    assert out["mrr@5"] == pytest.approx(ref[:, 0].mean())
    assert out["ndcg@5"] == pytest.approx(ref[:, 1].mean())
    assert out["map"] == pytest.approx(ref[:, 2].mean())
    # Same thing from a padded [Q, L] layout with a mask (padding values are garbage).
    width = max(len(y) for y in ys)
    y2 = np.full((len(ys), width), 7)
    s2 = np.full((len(ys), width), 1e9)
    m = np.zeros((len(ys), width), bool)
    for i, (y, s) in enumerate(qs):
        y2[i, :len(y)], s2[i, :len(s)], m[i, :len(y)] = y, s, True
    assert E.reranking_metrics(y2, s2, k=5, mask=m) == pytest.approx(out)


# ------------------------------------------------------------------- correlation
@pytest.mark.parametrize("ties", [False, True])
def test_correlation_matches_scipy(ties):
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(3, 50))
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        if ties:
            x, y = np.round(x), np.round(y * 2)
        assert E.pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0], abs=1e-12)
        assert E.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0], abs=1e-12)
        np.testing.assert_allclose(E.rankdata(y), scipy_stats.rankdata(y))


def test_correlation_hand_checked():
    assert E.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert E.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert E.spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    np.testing.assert_allclose(E.rankdata([10, 20, 10, 5]), [2.5, 4, 2.5, 1])
    assert math.isnan(E.pearson([1, 1, 1], [1, 2, 3]))


# ------------------------------------------------------------------- classification
def test_classification_matches_sklearn():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        yt, yp = rng.integers(0, 3, n), rng.integers(0, 3, n)
        assert E.accuracy(yt, yp) == pytest.approx(sklearn_metrics.accuracy_score(yt, yp))
        assert E.f1_score(yt, yp, "macro") == pytest.approx(
            sklearn_metrics.f1_score(yt, yp, average="macro", zero_division=0))
        bt, bp = yt % 2, yp % 2
        assert E.f1_score(bt, bp) == pytest.approx(
            sklearn_metrics.f1_score(bt, bp, zero_division=0))
        scores = rng.normal(size=n).astype(np.float32)
        if bt.any():
            assert E.average_precision(bt, scores) == pytest.approx(
                sklearn_metrics.average_precision_score(bt, scores), abs=1e-12)


def test_classification_hand_checked():
    assert E.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    # tp=2, fp=1, fn=1 -> F1 = 4 / 6
    assert E.f1_score([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(2 / 3)
    assert E.f1_score([0, 0], [0, 0]) == 0.0  # no positive anywhere: zero_division=0
    # class 0: tp0=0 fp=1 fn=1 -> 0; class 1: tp=2 fp=1 fn=1 -> 2/3; class 2 absent from
    # y_true/y_pred unless passed explicitly.
    assert E.f1_score([1, 0, 1, 1], [1, 1, 1, 0], "macro") == pytest.approx(1 / 3)
    assert E.f1_score([1, 0, 1, 1], [1, 1, 1, 0], "macro", labels=[0, 1, 2]) == pytest.approx(2 / 9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_best_threshold_matches_st(dtype, ties):
    from sentence_transformers.sentence_transformer.evaluation import (
        BinaryClassificationEvaluator as BCE,
    )
    rng = np.random.default_rng(6)
    for _ in range(30):
        n = int(rng.integers(1, 40))
        labels = rng.integers(0, 2, n)
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
        if ties:
            scores = np.round(scores, 0)
        scores = scores.astype(dtype)
        acc, thr = BCE.find_best_acc_and_threshold(scores, labels, True)
        assert E.best_accuracy_and_threshold(scores, labels) == pytest.approx(
            (acc, float(thr)), abs=0)
        ref = BCE.find_best_f1_and_threshold(scores, labels, True)
        assert E.best_f1_and_threshold(scores, labels) == pytest.approx(
            tuple(float(v) for v in ref), abs=1e-15)


def test_best_threshold_hand_checked():
    # Scores 0.9(1) 0.6(0) 0.4(1) 0.1(0): best acc 3/4 cutting after 0.9 (thr 0.75) -- first
    # of the ties in accuracy wins, as ST.
    acc, thr = E.best_accuracy_and_threshold([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0])
    assert acc == 0.75 and thr == pytest.approx(0.75)
    # F1: cut after 0.4 -> p=2/3, r=1 -> 0.8 beats cut after 0.9 (p=1, r=.5 -> 2/3).
    f1, p, r, thr = E.best_f1_and_threshold([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0])
    assert (f1, p, r) == pytest.approx((0.8, 2 / 3, 1.0)) and thr == pytest.approx(0.25)


@pytest.mark.parametrize("lists, where", [
    ([["a", "b"], ["the zebra", "c", "d"]], "list 1, its documents[0]"),   # the first pair past a list's end
    ([["a", "b"], ["c", "d", "the zebra"]], "list 1, its documents[2]"),
    ([["the zebra"], ["a"]], "list 0, its documents[0]"),
])
def test_reranking_evaluator_names_the_list_and_document_of_a_nan_score(lists, where):
    """A NaN score in training's reranking evaluation named `pairs[k]`, k counting the documents of
    every list before it: no row or line of the user's lists file. Now the list and its document.
    The scorer is the Scorer contract in miniature (outputs in input order through
    runner.check_outputs, as Scorer._run): a NaN for the document holding "zebra"."""
    from xenc_jax.runner import NonFiniteOutput, check_outputs
    from xenc_jax.train.data import Examples
    from xenc_jax.train.evaluators import RerankingEvaluator

    class NaNOnZebra:
        def logits(self, params, pairs):
            out = np.array([[np.nan if "zebra" in d else 1.0] for _, d in pairs], np.float32)
            return check_outputs(out, 0, "pairs", np.float32)

    ex = Examples("lists", [(f"q{i}", docs) for i, docs in enumerate(lists)], [[1] + [0] * (len(d) - 1) for d in lists],
                  "lists.jsonl")
    with pytest.raises(NonFiniteOutput, match=re.escape(f"output for (the query of {where}) is nan")):
        RerankingEvaluator(ex)(NaNOnZebra(), None)


@pytest.mark.parametrize("side", [0, 1])
def test_embedding_similarity_evaluator_names_the_pair_and_side_of_a_nan_embedding(side):
    """A bi-encoder's NaN embedding in training's evaluation named `texts[i]`, the same words for
    a pair's first and second text. Now `pairs[i][0]` / `pairs[i][1]` (the scorer as above)."""
    from xenc_jax.runner import NonFiniteOutput, check_outputs
    from xenc_jax.train.data import Examples
    from xenc_jax.train.evaluators import EmbeddingSimilarityEvaluator

    class NaNOnZebra:
        def embed(self, params, texts):
            out = np.array([[np.nan if "zebra" in t else 1.0, 0.5] for t in texts], np.float32)
            return check_outputs(out, 0, "texts", np.float32)

    pairs = [("a dog", "a cat"), ("a car", "a bus")] + [("the zebra", "a horse")[::1 - 2 * side]]
    ex = Examples("pairs", pairs, [0.5, 0.2, 0.9], "sts.tsv")
    with pytest.raises(NonFiniteOutput, match=re.escape(f"output for pairs[2][{side}] is nan")):
        EmbeddingSimilarityEvaluator(ex)(NaNOnZebra(), None)

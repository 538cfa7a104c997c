"""semantic_search and the similarity functions against brute force and sentence-transformers."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from jax.sharding import Mesh
from sentence_transformers import util

from xenc_jax import search

DIM = 16
ST_MATRIX = {"cosine": util.cos_sim, "dot": util.dot_score,
             "euclidean": util.euclidean_sim, "manhattan": util.manhattan_sim}
ST_PAIRWISE = {"cosine": util.pairwise_cos_sim, "dot": util.pairwise_dot_score,
               "euclidean": util.pairwise_euclidean_sim, "manhattan": util.pairwise_manhattan_sim}


def _emb(rng, n, dim=DIM):
    # Continuous random rows at the scale of real (roughly unit-norm) sentence embeddings, so
    # exact ties have probability zero and scores are O(1).
    return (rng.normal(size=(n, dim)) / np.sqrt(dim)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1234)
    return _emb(rng, 9), _emb(rng, 50)


def _brute_force(queries, corpus, fn, top_k):
    """Full score matrix in float64 numpy, then (score desc, id asc) order per query."""
    q, c = queries.astype(np.float64), corpus.astype(np.float64)
    if fn == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    scores = q @ c.T
    ids = np.arange(len(c))
    out = []
    for row in scores:
        order = np.lexsort((ids, -row))[:top_k]
        out.append([(int(i), float(row[i])) for i in order])
    return out


def _ids(results):
    return [[r["corpus_id"] for r in q] for q in results]


def _assert_same(got, want_ids, want_scores, atol=1e-5):
    assert _ids(got) == want_ids
    for q_got, q_scores in zip(got, want_scores):
        np.testing.assert_allclose([r["score"] for r in q_got], q_scores, rtol=0, atol=atol)


@pytest.mark.parametrize("fn", ["cosine", "dot"])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("top_k", [1, 5, 77])
def test_matches_brute_force(data, fn, chunk, top_k):
    queries, corpus = data
    got = search.semantic_search(queries, corpus, top_k=top_k, corpus_chunk_size=chunk,
                                 query_chunk_size=4, score_function=fn)
    want = _brute_force(queries, corpus, fn, top_k)
    assert len(got) == len(queries)
    assert all(len(q) == min(top_k, len(corpus)) for q in got)
    _assert_same(got, [[i for i, _ in q] for q in want], [[s for _, s in q] for q in want])
    assert all(isinstance(r["corpus_id"], int) and isinstance(r["score"], float)
               for q in got for r in q)


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
@pytest.mark.parametrize("top_k,chunk", [(1, 7), (5, 1000), (60, 13)])
def test_matches_sentence_transformers(data, fn, top_k, chunk):
    queries, corpus = data
    got = search.semantic_search(queries, corpus, top_k=top_k, corpus_chunk_size=chunk,
                                 query_chunk_size=4, score_function=fn)
    want = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=top_k,
                                corpus_chunk_size=chunk, query_chunk_size=4,
                                score_function=ST_MATRIX[fn])
    _assert_same(got, _ids(want), [[r["score"] for r in q] for q in want])


def test_ties_break_to_lower_corpus_id():
    # Small integer rows: every dot product is exact in float32, so there are many exact ties.
    rng = np.random.default_rng(7)
    queries = rng.integers(-1, 2, size=(5, 6)).astype(np.float32)
    corpus = rng.integers(-1, 2, size=(40, 6)).astype(np.float32)
    want = _brute_force(queries, corpus, "dot", 12)
    for chunk in (1, 3, 16, 100):
        got = search.semantic_search(queries, corpus, top_k=12, corpus_chunk_size=chunk,
                                     score_function="dot")
        _assert_same(got, [[i for i, _ in q] for q in want], [[s for _, s in q] for q in want],
                     atol=0)


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_matches_st(data, fn):
    queries, corpus = data
    ta, tb = torch.from_numpy(queries), torch.from_numpy(corpus)
    got = search.similarity(queries, corpus, fn)
    assert got.dtype == np.float32 and got.shape == (len(queries), len(corpus))
    np.testing.assert_allclose(got, ST_MATRIX[fn](ta, tb).numpy(), rtol=0, atol=1e-5)
    # jax inputs and a single (1-D) vector, which ST treats as a batch of one
    np.testing.assert_allclose(search.similarity(jax.numpy.asarray(queries), corpus[3], fn),
                               ST_MATRIX[fn](ta, tb[3]).numpy(), rtol=0, atol=1e-5)
    pairs = search.pairwise_similarity(queries, corpus[:9], fn)
    assert pairs.dtype == np.float32 and pairs.shape == (9,)
    np.testing.assert_allclose(pairs, ST_PAIRWISE[fn](ta, tb[:9]).numpy(), rtol=0, atol=1e-5)
    one = search.pairwise_similarity(queries[0], corpus[0], fn)
    assert one.shape == ()
    np.testing.assert_allclose(one, ST_PAIRWISE[fn](ta[0], tb[0]).numpy(), rtol=0, atol=1e-5)


def test_distance_signs_and_zero_vectors():
    a = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    b = np.array([[0.0, 0.0]], np.float32)
    np.testing.assert_allclose(search.similarity(a, b, "euclidean"), [[0.0], [-5.0]])
    np.testing.assert_allclose(search.similarity(a, b, "manhattan"), [[0.0], [-7.0]])
    # a zero vector scores 0 under cosine (torch normalize's eps), not NaN
    np.testing.assert_array_equal(search.similarity(a, b, "cosine"), [[0.0], [0.0]])


def test_accepts_st_callables_torch_and_jax_inputs(data):
    queries, corpus = data
    want = search.semantic_search(queries, corpus, top_k=3, score_function="dot")
    assert search.semantic_search(torch.from_numpy(queries), jax.numpy.asarray(corpus), top_k=3,
                                  score_function=util.dot_score) == want
    # a single 1-D query is one query, as in ST
    single = search.semantic_search(queries[2], corpus, top_k=3, score_function="dot")
    assert single == [want[2]]


def test_bad_inputs(data):
    queries, corpus = data
    with pytest.raises(ValueError, match="query_embeddings is None"):
        search.semantic_search(None, corpus)
    with pytest.raises(ValueError, match="corpus_embeddings is None"):
        search.semantic_search(queries, None)
    with pytest.raises(ValueError, match=r"query_embeddings has dim 16, corpus_embeddings has dim 5"):
        search.semantic_search(queries, corpus[:, :5])
    with pytest.raises(ValueError, match=r"a has dim 16, b has dim 3"):
        search.similarity(queries, corpus[:, :3])
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
            search.semantic_search(queries, corpus, top_k=bad)
    with pytest.raises(ValueError, match="corpus_chunk_size must be an integer >= 1"):
        search.semantic_search(queries, corpus, corpus_chunk_size=0)
    with pytest.raises(ValueError, match="query_chunk_size must be an integer >= 1"):
        search.semantic_search(queries, corpus, query_chunk_size=0)
    with pytest.raises(ValueError, match=r"corpus_embeddings must be 2-D.*\(16,\)"):
        search.semantic_search(queries, corpus[0])
    with pytest.raises(ValueError, match=r"must be 1-D \[dim\] or 2-D.*\(2, 3, 16\)"):
        search.semantic_search(np.zeros((2, 3, DIM)), corpus)
    with pytest.raises(ValueError, match="unknown score function 'cos'"):
        search.semantic_search(queries, corpus, score_function="cos")
    with pytest.raises(ValueError, match="as many rows in a as in b, got 9 and 50"):
        search.pairwise_similarity(queries, corpus)
    with pytest.raises(TypeError, match="positional"):  # ST's positional order is refused
        search.semantic_search(queries, corpus, 100, 500000, 10)
    mesh = Mesh(np.array(jax.devices()[:1]), ("x",))
    with pytest.raises(ValueError, match=r"corpus_axis 'data' is not a mesh axis \('x',\)"):
        search.semantic_search(queries, corpus, mesh=mesh)
    # empty inputs: no error, like ST
    assert search.semantic_search(queries, np.zeros((0, DIM), np.float32)) == [[]] * len(queries)
    assert search.semantic_search(np.zeros((0, DIM), np.float32), corpus) == []


def test_no_recompile_for_other_corpus_and_query_sizes():
    rng = np.random.default_rng(3)
    kwargs = dict(top_k=4, corpus_chunk_size=11, query_chunk_size=3, score_function="cosine")
    dim = 13  # a shape no other test uses, so the first call below is the only trace
    search.semantic_search(_emb(rng, 5, dim), _emb(rng, 40, dim), **kwargs)
    traced = search.trace_counts["search_step"]
    # Inputs at least one chunk long reuse the one compiled step. (Smaller ones use a
    # power-of-two chunk instead, to not pad 1 query to 100: at most log2(chunk) more shapes.)
    for n_q, n_c in ((7, 95), (4, 23), (3, 12)):
        queries, corpus = _emb(rng, n_q, dim), _emb(rng, n_c, dim)
        got = search.semantic_search(queries, corpus, **kwargs)
        want = _brute_force(queries, corpus, "cosine", 4)
        assert _ids(got) == [[i for i, _ in q] for q in want]
    assert search.trace_counts["search_step"] == traced, "step recompiled for a new corpus size"


def test_no_implicit_transfers(data):
    queries, corpus = data
    with jax.transfer_guard("disallow"):
        got = search.semantic_search(queries, corpus, top_k=3, corpus_chunk_size=7)
        search.similarity(queries, corpus)
    assert len(got) == len(queries)

"""Similarity functions and exact top-k semantic search, on one device or sharded over a mesh.

Semantics follow sentence-transformers 6.2 (`sentence_transformers.util`): cosine and dot are
similarities, euclidean and manhattan are NEGATIVE distances, so "higher is better" everywhere.

`semantic_search` is exact (no approximate top-k). Shapes are fixed per call pattern: the corpus
is cut into blocks of one size (the last padded, padded rows scored -inf) and the queries into
chunks of one size, so the jitted step compiles once per (query chunk, block, dim, k) shape,
whatever the corpus size. Ties are broken deterministically: equal scores rank the lower corpus
id first (`lax.top_k` keeps the lower index first, and every merge sorts on (-score, id)).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from enum import Enum

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["similarity", "pairwise_similarity", "semantic_search", "CorpusBlocks", "corpus_blocks",
           "search_blocks"]

SCORE_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
# ST's callables and enum values map onto our names, so code ported from ST keeps working.
_ALIASES = {"cos_sim": "cosine", "pytorch_cos_sim": "cosine", "dot_score": "dot",
            "dot_product": "dot", "euclidean_sim": "euclidean", "manhattan_sim": "manhattan"}
# Incremented at trace time only: tests read it to prove the step compiles once per shape.
trace_counts: collections.Counter = collections.Counter()

_HI = lax.Precision.HIGHEST  # fp32 parity with torch: no TF32 / bf16 passes on GPU and TPU
_EPS = 1e-12                 # torch.nn.functional.normalize's eps: zero vectors score 0, not NaN
_NO_ID = np.iinfo(np.int32).max  # id of the empty running top-k slots: sorts after any real id


def _fn_name(fn) -> str:
    fn = getattr(fn, "value", fn) if isinstance(fn, Enum) else fn  # ST's SimilarityFunction
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))
    name = _ALIASES.get(name, name)
    if name not in SCORE_FUNCTIONS:
        raise ValueError(f"unknown score function {fn!r}; expected one of {SCORE_FUNCTIONS}")
    return name


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def _score_matrix(fn: str, a, b):
    """[A, D] x [B, D] -> [A, B] scores."""
    if fn == "cosine":
        a, b = _normalize(a), _normalize(b)
    if fn in ("cosine", "dot"):
        return jnp.matmul(a, b.T, precision=_HI)
    if fn == "euclidean":
        # The matmul form (what torch.cdist does for more than 25 rows, hence what ST runs):
        # runs on the MXU / tensor cores, at the price of cancellation for near-identical
        # vectors (distance error up to ~sqrt(eps * |a|^2)), exactly as in torch.
        sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
              - 2.0 * jnp.matmul(a, b.T, precision=_HI))
        return -jnp.sqrt(jnp.maximum(sq, 0.0))
    # manhattan has no matmul form; XLA fuses broadcast-subtract-abs-reduce into one loop.
    return -jnp.sum(jnp.abs(a[:, None, :] - b[None, :, :]), axis=-1)


def _score_pairs(fn: str, a, b):
    """[N, D] x [N, D] -> [N] scores of row i against row i."""
    if fn == "cosine":
        a, b = _normalize(a), _normalize(b)
    if fn in ("cosine", "dot"):
        return jnp.sum(a * b, axis=-1)
    if fn == "euclidean":
        return -jnp.linalg.norm(a - b, axis=-1)
    return -jnp.sum(jnp.abs(a - b), axis=-1)


_similarity_jit = jax.jit(_score_matrix, static_argnums=0)
_pairwise_jit = jax.jit(_score_pairs, static_argnums=0)


# Every row given to a search must be finite with a squared L2 norm below a quarter of float32's
# largest value (a norm below ~9.2e18): then no score can overflow, for any score function (dot
# <= |a||b|, euclidean <= (|a| + |b|)^2 <= 4 max|x|^2, manhattan <= sqrt(D)(|a| + |b|), cosine's
# norms fit), so real scores are finite and the top-k never sees a NaN or +inf (padding is -inf).
_SQ_NORM_LIMIT = float(np.finfo(np.float32).max) / 4
_CHECK_ROWS = 65536  # rows per pass of the check: its float32 temporaries stay small


def first_bad_row(x: np.ndarray) -> int | None:
    """First row holding a NaN / inf or a squared norm >= _SQ_NORM_LIMIT, else None. One pass of
    row dot products in float32: a NaN entry makes the row's sum NaN, an inf one makes it inf
    (all terms are >= 0), a huge row overflows; every such sum fails `sq < limit`."""
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, x.shape[0], _CHECK_ROWS):
            rows = np.asarray(x[start:start + _CHECK_ROWS], np.float32)
            ok = np.einsum("ij,ij->i", rows, rows) < _SQ_NORM_LIMIT
            if not ok.all():
                return start + int(np.argmin(ok))
    return None


_CAUSE = ("a NaN or inf comes from a model that overflowed, e.g. in float16/bfloat16: use float32, or from a "
          "corrupt embeddings file")


def bad_row_error(label: str, row: np.ndarray, cause: str = _CAUSE) -> ValueError:
    """What is wrong with one refused row (see first_bad_row) and how to fix it."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(row, np.float32)))
    if bad.size:
        return ValueError(f"{label} holds {row[bad[0]]} at column {bad[0]}: embeddings must be finite numbers "
                          f"({cause}); recompute or drop that row")
    norm = float(np.linalg.norm(np.asarray(row, np.float64)))
    return ValueError(f"{label} has L2 norm {norm:.3g}, above {np.sqrt(_SQ_NORM_LIMIT):.3g}, where float32 scores "
                      "overflow to inf or NaN; scale the embeddings down (e.g. normalize them)")


def _check_rows(x: np.ndarray, name: str) -> np.ndarray:
    """x, refused with the first bad row's index (see first_bad_row)."""
    row = first_bad_row(x)
    if row is not None:
        raise bad_row_error(f"{name}[{row}]", x[row])
    return x


def _as_f32(x, name: str) -> np.ndarray:
    """x as float32 [n, dim] on the host, every row finite and of a safe norm (_check_rows). A jax
    array is fetched first: every caller here needs the rows on the host anyway (to pad and block
    them), so the check reads memory that is already there, where an on-device check would cost a
    second pass and a device sync and still need the host to find the row."""
    if x is None:
        raise ValueError(f"{name} is None; expected an array of embeddings")
    if isinstance(x, jax.Array):
        x = jax.device_get(x)  # explicit transfer: fine under jax.transfer_guard("disallow")
    elif hasattr(x, "detach"):  # torch tensor (possibly requiring grad / bf16)
        x = x.detach().float().cpu().numpy()
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused by name below
        x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]  # like ST: a single vector is a batch of one
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D [dim] or 2-D [n, dim], got shape {x.shape}")
    return _check_rows(x, name)


def _check_dims(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dims differ: {na} has dim {a.shape[1]}, "
                         f"{nb} has dim {b.shape[1]}")


def similarity(a, b, fn="cosine") -> np.ndarray:
    """Score matrix [len(a), len(b)] (float32), like `SentenceTransformer.similarity`."""
    fn = _fn_name(fn)
    a, b = _as_f32(a, "a"), _as_f32(b, "b")
    _check_dims(a, b, "a", "b")
    return np.asarray(jax.device_get(_similarity_jit(fn, jax.device_put(a), jax.device_put(b))))


def pairwise_similarity(a, b, fn="cosine") -> np.ndarray:
    """Scores [n] (float32) of a[i] against b[i], like `SentenceTransformer.similarity_pairwise`.

    Two 1-D vectors give a 0-d array, as in ST."""
    fn = _fn_name(fn)
    scalar = np.ndim(a) == 1 and np.ndim(b) == 1
    a, b = _as_f32(a, "a"), _as_f32(b, "b")
    _check_dims(a, b, "a", "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"pairwise_similarity needs as many rows in a as in b, "
                         f"got {a.shape[0]} and {b.shape[0]}")
    out = np.asarray(jax.device_get(_pairwise_jit(fn, jax.device_put(a), jax.device_put(b))))
    return out[0] if scalar else out


# ---------------------------------------------------------------------------------------------
# semantic search


def _merge(s1, i1, s2, i2, k: int):
    """Exact top-k of the union of two candidate sets, ranked by (score desc, id asc)."""
    s, i = jnp.concatenate([s1, s2], axis=1), jnp.concatenate([i1, i2], axis=1)
    neg, ids = lax.sort((-s, i), dimension=1, num_keys=2)
    return -neg[:, :k], ids[:, :k]


def _block_scores(fn, queries, block, base, n_valid):
    """Scores [Q, B] of one corpus block whose first row has global id `base`, and the ids [B];
    rows >= n_valid are padding and score -inf (their ids stay >= n_valid, so they also lose
    every tie). A 16-bit block is upcast first: the scores are those of an fp32 corpus holding
    the rounded values."""
    ids = base + jnp.arange(block.shape[0], dtype=jnp.int32)
    scores = _score_matrix(fn, queries, block.astype(jnp.float32))
    return jnp.where(ids[None, :] < n_valid, scores, -jnp.inf), ids


def _top_k(scores, k: int):
    """lax.top_k(scores [Q, B], k), exact, ties to the lower index, in two cheap stages when B
    is large: XLA's CPU top_k costs ~4 ns per element (a [128, 8192] tile: 3x the matmul that
    made it), while a max over groups of G columns is a vectorized reduce. The top k lie in the k
    groups with the highest maxima (ties: lower group first; any element of a group not picked
    ranks below k picked groups' maxima, each higher or equal with a lower index), so top_k of
    B/G maxima, then of those k groups' k*G scores taken in column order, is the same result.
    Equal to lax.top_k with -inf and +inf too (tests/test_nonfinite.py), but not with NaN (XLA:CPU's
    max-reduce drops it, lax.top_k ranks it first): no NaN score reaches this, since every input
    row is checked against _SQ_NORM_LIMIT (_as_f32, corpus_blocks), where no score overflows."""
    q, b = scores.shape
    g = 1 << max(round(np.log2(max(b // max(k, 1), 1)) / 2), 0)  # ~sqrt(B/k): B/G ~ k*G
    # measured on XLA:CPU only; accelerators keep their own top_k until measured there
    if jax.default_backend() != "cpu" or b % g or b // g < 4 * k or g < 4:
        return lax.top_k(scores, k)
    grouped = scores.reshape(q, b // g, g)
    _, groups = lax.top_k(jnp.max(grouped, axis=2), k)
    groups = jnp.sort(groups, axis=1)  # column order: top_k's lower-index tie rule stays the id rule
    cand = jnp.take_along_axis(grouped, groups[:, :, None], axis=1).reshape(q, k * g)
    top, pos = lax.top_k(cand, k)
    return top, jnp.take_along_axis(groups, pos // g, axis=1) * g + pos % g


def _block_topk(fn, queries, block, base, n_valid, k):
    """Top-k of one corpus block (see _block_scores)."""
    scores, ids = _block_scores(fn, queries, block, base, n_valid)
    top, pos = _top_k(scores, min(k, block.shape[0]))
    return top, ids[pos]


@functools.partial(jax.jit, static_argnames=("fn", "k", "mesh", "axis"))
def _search_step(run_s, run_i, queries, block, offset, n_valid, *, fn, k, mesh, axis):
    """Fold one corpus block into the running top-k [Q, k] of one query chunk.

    Cosine renormalizes the block once per query chunk (ST normalizes once per corpus chunk):
    D flops per row against Q*D for the scores, fused, and it saves a compiled program."""
    trace_counts["search_step" if mesh is None else "search_step_sharded"] += 1
    if mesh is None:
        cand_s, cand_i = _block_topk(fn, queries, block, offset, n_valid, k)
    else:
        # Each device scores only its rows of the block; its local top-k holds every global
        # top-k member among those rows, so merging the per-device candidates is exact.
        def local(q, blk, off, nv):
            base = off + lax.axis_index(axis).astype(jnp.int32) * blk.shape[0]
            return _block_topk(fn, q, blk, base, nv, k)

        cand_s, cand_i = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(axis), P(), P()),
            out_specs=(P(None, axis), P(None, axis)))(queries, block, offset, n_valid)
    return _merge(run_s, run_i, cand_s, cand_i, k)


def _bucket(n: int, cap: int) -> int:
    """Chunk size: `cap`, or the next power of two >= n when the data is smaller than one chunk,
    so small inputs neither pad to a huge chunk nor compile once per exact size."""
    return min(cap, 1 << max(n - 1, 0).bit_length())


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def semantic_search(query_embeddings, corpus_embeddings, *, top_k: int = 10,
                    corpus_chunk_size: int = 500_000, query_chunk_size: int = 100,
                    score_function="cosine", mesh: Mesh | None = None,
                    corpus_axis: str = "data") -> list[list[dict[str, int | float]]]:
    """Exact top-k search; same results as `sentence_transformers.util.semantic_search`.

    Returns, per query, up to `top_k` dicts {"corpus_id": int, "score": float}, highest score
    first, equal scores by lower corpus id. A 1-D query is one query. An empty corpus gives
    `[[] for each query]` (as in ST). Options after the corpus are keyword-only, because ST's
    positional order (query_chunk_size, corpus_chunk_size, top_k) differs and a silent swap
    would be wrong results, not an error.

    `score_function`: "cosine" | "dot" | "euclidean" | "manhattan" (or ST's `cos_sim`, ...).
    A row holding a NaN or inf, or with an L2 norm above ~9.2e18 (where float32 scores overflow),
    is refused with its index (here and in every function of this module), never ranked.
    `mesh`: a `jax.sharding.Mesh`; each corpus block is then sharded over `corpus_axis`
    (NamedSharding, block size a multiple of that axis' size), each device takes the top-k of
    its rows, and the candidates are merged exactly; results equal the unsharded ones.
    """
    fn = _fn_name(score_function)
    _check_positive_int(top_k, "top_k")
    _check_positive_int(corpus_chunk_size, "corpus_chunk_size")
    _check_positive_int(query_chunk_size, "query_chunk_size")
    queries = _as_f32(query_embeddings, "query_embeddings")
    corpus = _as_f32(corpus_embeddings, "corpus_embeddings")
    if np.ndim(corpus_embeddings) == 1:
        raise ValueError(f"corpus_embeddings must be 2-D [num_docs, dim], "
                         f"got 1-D shape {np.shape(corpus_embeddings)}")
    _check_dims(queries, corpus, "query_embeddings", "corpus_embeddings")
    n_queries, n_corpus = queries.shape[0], corpus.shape[0]
    if n_queries == 0 or n_corpus == 0:
        return [[] for _ in range(n_queries)]
    if n_corpus >= _NO_ID:
        raise ValueError(f"corpus of {n_corpus} rows does not fit int32 ids")

    if mesh is None:
        shards, put = 1, jax.device_put  # uncommitted: lives on the default device
    else:
        if corpus_axis not in mesh.axis_names:
            raise ValueError(f"corpus_axis {corpus_axis!r} is not a mesh axis {mesh.axis_names}")
        shards = mesh.shape[corpus_axis]
        replicated = NamedSharding(mesh, P())
        put = functools.partial(jax.device_put, device=replicated)
    block = _bucket(n_corpus, corpus_chunk_size)
    block = -(-block // shards) * shards  # every device gets the same number of rows
    q_chunk = _bucket(n_queries, query_chunk_size)
    k = _bucket(n_corpus, top_k)  # running top-k width; > n only by power-of-two padding

    # Place the corpus once, block by block (padded with zero rows that the step masks).
    block_sharding = None if mesh is None else NamedSharding(mesh, P(corpus_axis))
    blocks = []
    for start in range(0, n_corpus, block):
        rows = corpus[start:start + block]
        rows = np.pad(rows, ((0, block - rows.shape[0]), (0, 0)))
        blocks.append(jax.device_put(rows, block_sharding))
    offsets = [put(np.int32(s)) for s in range(0, n_corpus, block)]
    n_valid = put(np.int32(n_corpus))

    outputs = []
    for start in range(0, n_queries, q_chunk):
        rows = queries[start:start + q_chunk]
        q = put(np.pad(rows, ((0, q_chunk - rows.shape[0]), (0, 0))))
        run_s = put(np.full((q_chunk, k), -np.inf, np.float32))
        run_i = put(np.full((q_chunk, k), _NO_ID, np.int32))
        for blk, off in zip(blocks, offsets):
            run_s, run_i = _search_step(run_s, run_i, q, blk, off, n_valid,
                                        fn=fn, k=k, mesh=mesh, axis=corpus_axis)
        outputs.append((run_s, run_i))

    # One device->host transfer at the end; drop padded query rows and slots beyond the corpus.
    n_out = min(top_k, n_corpus)
    outputs = jax.device_get(outputs)
    scores = np.concatenate([s for s, _ in outputs])[:n_queries, :n_out]
    ids = np.concatenate([i for _, i in outputs])[:n_queries, :n_out]
    return [[{"corpus_id": c, "score": s} for c, s in zip(row_i, row_s)]
            for row_i, row_s in zip(ids.tolist(), scores.tolist())]


# ---------------------------------------------------------------------------------------------
# a corpus placed once as device blocks, searched chunk after chunk (mining.py)


@dataclasses.dataclass(frozen=True)
class CorpusBlocks:
    """Embeddings on device as fixed-size blocks in their stored dtype (the last block padded
    with zero rows, which the search masks), sharded over `axis` when a mesh is given."""
    blocks: tuple
    offsets: tuple
    n: int
    dim: int
    mesh: Mesh | None
    axis: str


def corpus_blocks(chunks, n: int, dim: int, *, dtype=np.float32, block_size: int = 32768,
                  mesh: Mesh | None = None, corpus_axis: str = "data") -> CorpusBlocks:
    """Place `n` embedding rows, given as an iterable of [rows, dim] arrays (e.g. an encoder's
    stream), on device as blocks of `block_size` rows in `dtype` (float32, float16, bfloat16).
    Only the block being filled is held on the host, so a corpus costs its size in `dtype` once."""
    _check_positive_int(block_size, "block_size")
    if mesh is not None and corpus_axis not in mesh.axis_names:
        raise ValueError(f"corpus_axis {corpus_axis!r} is not a mesh axis {mesh.axis_names}")
    if n >= _NO_ID:
        raise ValueError(f"corpus of {n} rows does not fit int32 ids")
    shards = 1 if mesh is None else mesh.shape[corpus_axis]
    block = -(-_bucket(max(n, 1), block_size) // shards) * shards
    sharding = None if mesh is None else NamedSharding(mesh, P(corpus_axis))
    put = jax.device_put if mesh is None else functools.partial(jax.device_put, device=NamedSharding(mesh, P()))
    blocks, buf, fill, seen = [], np.zeros((block, dim), dtype), 0, 0
    for index, rows in enumerate(chunks):
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != dim:
            raise ValueError(f"corpus chunk has shape {rows.shape}, expected [rows, {dim}]")
        rows = _check_chunk(rows, np.dtype(dtype), index, seen)  # refused before any of it is placed
        seen += rows.shape[0]
        while rows.shape[0]:
            take = min(block - fill, rows.shape[0])
            buf[fill:fill + take], fill, rows = rows[:take], fill + take, rows[take:]
            if fill == block:
                blocks.append(jax.device_put(buf, sharding))
                buf, fill = np.zeros((block, dim), dtype), 0
    if seen != n:
        raise ValueError(f"the corpus stream gave {seen} rows, expected {n}")
    if fill or not blocks:
        blocks.append(jax.device_put(buf, sharding))  # zero rows past n: masked by n_valid
    offsets = tuple(put(np.int32(i * block)) for i in range(len(blocks)))
    return CorpusBlocks(tuple(blocks), offsets, n, dim, mesh, corpus_axis)


def _check_chunk(rows: np.ndarray, dtype: np.dtype, index: int, start: int) -> np.ndarray:
    """Chunk number `index` (its first row is corpus row `start`) in `dtype`, checked as stored
    (first_bad_row): a finite float32 beyond float16's range (65504) becomes inf there."""
    with np.errstate(over="ignore"):  # beyond float16's range becomes inf: refused by name below
        stored = rows.astype(dtype, copy=False)
    row = first_bad_row(stored)
    if row is None:
        return stored
    cause = _CAUSE
    if np.isfinite(np.asarray(rows[row], np.float32)).all():
        cause = f"this row is finite as given but out of range once stored as {dtype.name}: use dtype=float32"
    raise bad_row_error(f"corpus chunk {index} row {row} (corpus row {start + row})", stored[row], cause)


@functools.partial(jax.jit, static_argnames=("fn", "k", "mesh", "axis", "count"))
def _blocks_step(run_s, run_i, run_c, queries, thr, excl, block, offset, n_valid, *, fn, k, mesh, axis, count):
    """_search_step plus, when `count`, the number of rows scoring strictly above thr[q] other
    than row excl[q] (a positive's rank, found in the same pass as the top-k)."""
    trace_counts["blocks_step" if mesh is None else "blocks_step_sharded"] += 1

    def local(q, t, e, blk, base, nv):
        scores, ids = _block_scores(fn, q, blk, base, nv)
        top, pos = _top_k(scores, min(k, blk.shape[0]))
        above = (scores > t[:, None]) & (ids[None, :] != e[:, None]) if count else scores[:, :0] > 0
        # summed as float32 where exact (< 2^24 rows), which XLA's CPU vectorizes: 2.6x faster
        # than an int32 sum of the booleans on a [128, 8192] tile
        if blk.shape[0] < 1 << 24:
            return top, ids[pos], jnp.sum(jnp.where(above, 1.0, 0.0), axis=1).astype(jnp.int32)
        return top, ids[pos], jnp.sum(above, axis=1, dtype=jnp.int32)

    if mesh is None:
        cand_s, cand_i, c = local(queries, thr, excl, block, offset, n_valid)
    else:
        def sharded(q, t, e, blk, off, nv):
            top, ids, c = local(q, t, e, blk, off + lax.axis_index(axis).astype(jnp.int32) * blk.shape[0], nv)
            return top, ids, lax.psum(c, axis)

        cand_s, cand_i, c = jax.shard_map(
            sharded, mesh=mesh, in_specs=(P(), P(), P(), P(axis), P(), P()),
            out_specs=(P(None, axis), P(None, axis), P()))(queries, thr, excl, block, offset, n_valid)
    s, i = _merge(run_s, run_i, cand_s, cand_i, k)
    return s, i, run_c + c


def search_blocks(queries, corpus: CorpusBlocks, *, top_k: int, score_function="cosine",
                  query_chunk_size: int = 1024, thresholds=None, exclude_ids=None):
    """Exact top-k of `queries` [Q, D] over a CorpusBlocks, ranked as semantic_search (score
    desc, then lower id). Returns numpy (scores [Q, k] float32, ids [Q, k] int32, counts) with
    k = min(top_k, corpus.n); counts [Q] int32 when `thresholds` [Q] is given: rows scoring
    strictly above thresholds[q], row exclude_ids[q] (default none) not counted; else None.
    A NaN threshold is refused (no row compares above it: a silent count of 0)."""
    fn = _fn_name(score_function)
    _check_positive_int(top_k, "top_k")
    _check_positive_int(query_chunk_size, "query_chunk_size")
    queries = _as_f32(queries, "queries")
    if queries.shape[1] != corpus.dim:
        raise ValueError(f"embedding dims differ: queries have dim {queries.shape[1]}, the corpus {corpus.dim}")
    n_q = queries.shape[0]
    k_out = min(top_k, corpus.n)
    count = thresholds is not None
    thr = np.full(n_q, np.inf, np.float32) if thresholds is None else np.asarray(thresholds, np.float32)
    if np.isnan(thr).any():
        raise ValueError(f"thresholds[{int(np.flatnonzero(np.isnan(thr))[0])}] is NaN; give each query's "
                         "threshold as a number (inf: count nothing)")
    excl = np.full(n_q, -1, np.int32) if exclude_ids is None else np.asarray(exclude_ids, np.int32)
    if n_q == 0 or k_out == 0:
        return (np.zeros((n_q, k_out), np.float32), np.zeros((n_q, k_out), np.int32),
                np.zeros(n_q, np.int32) if count else None)
    put = (jax.device_put if corpus.mesh is None
           else functools.partial(jax.device_put, device=NamedSharding(corpus.mesh, P())))
    q_chunk, k = _bucket(n_q, query_chunk_size), _bucket(corpus.n, top_k)
    n_valid, outputs = put(np.int32(corpus.n)), []
    for start in range(0, n_q, q_chunk):
        pad = q_chunk - min(q_chunk, n_q - start)
        q = put(np.pad(queries[start:start + q_chunk], ((0, pad), (0, 0))))
        t = put(np.pad(thr[start:start + q_chunk], (0, pad), constant_values=np.inf))
        e = put(np.pad(excl[start:start + q_chunk], (0, pad), constant_values=-1))
        run = (put(np.full((q_chunk, k), -np.inf, np.float32)), put(np.full((q_chunk, k), _NO_ID, np.int32)),
               put(np.zeros(q_chunk, np.int32)))
        for blk, off in zip(corpus.blocks, corpus.offsets):
            run = _blocks_step(*run, q, t, e, blk, off, n_valid, fn=fn, k=k, mesh=corpus.mesh,
                               axis=corpus.axis, count=count)
        outputs.append(run)
    outputs = jax.device_get(outputs)  # one transfer per call
    scores = np.concatenate([o[0] for o in outputs])[:n_q, :k_out]
    ids = np.concatenate([o[1] for o in outputs])[:n_q, :k_out]
    counts = np.concatenate([o[2] for o in outputs])[:n_q] if count else None
    return scores, ids, counts

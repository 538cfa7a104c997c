"""Hard-negative mining: sentence-transformers' `mine_hard_negatives`, with the search on device.

The arguments, their defaults and the rows returned are those of
`sentence_transformers.util.mine_hard_negatives` (6.3): same corpus (the given corpus plus the
dataset's positives, duplicates removed), same candidate window, filters (margins, scores),
sampling and output formats. What differs is how the work is done:

- the corpus is embedded once through the bucketed `BiEncoder.encode_stream` straight into
  fixed-size device blocks (search.corpus_blocks): the host holds one block at a time, so a
  10M x 384 corpus costs 7.7 GB as bfloat16 (`embedding_dtype`) plus one block;
- anchors are processed in chunks of `faiss_batch_size` unique anchors: embed, exact top-k over
  the blocks (search.search_blocks, sharded over a mesh axis when a mesh is used), optional
  cross-encoder rescoring, selection; only the selected ids and scores are kept, so memory
  grows with the output, not with anchors x corpus;
- each anchor's hardest positive (the one the margins use) gets its score from the pair
  directly and its rank over the whole corpus in the same pass as the top-k (printed when
  verbose);
- equal scores rank the lower corpus id first (ST's `torch.topk` leaves ties unspecified).
"""
from __future__ import annotations

import contextlib
import logging
import random as _random
import time
from collections import Counter
from dataclasses import dataclass

import jax
import numpy as np

from . import mining_rows
from .mining_embed import EMBEDDING_DTYPES, embed_corpus, model_fingerprint, query_chunks
from .search import search_blocks

__all__ = ["mine_hard_negatives"]

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


def _texts_of(values, what: str) -> list[str]:
    if values is None or isinstance(values, (str, bytes, dict)):
        raise TypeError(f"{what} must be a list of str, got {type(values).__name__}")
    values = values.tolist() if isinstance(values, np.ndarray) else list(values[:] if hasattr(values, "__getitem__")
                                                                          else values)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{what}[{i}] is {type(v).__name__} {str(v)[:40]!r}, not a str")
    return values


def _read_pairs(dataset, anchor_column_name, positive_column_name):
    """-> (is_dataset, anchor column, positive column, anchors, positives), all validated."""
    try:
        from datasets import Dataset
    except ImportError:  # a list of dicts needs no `datasets`
        Dataset = ()
    is_dataset = isinstance(dataset, Dataset)
    if is_dataset:
        columns = list(dataset.column_names)
    elif isinstance(dataset, (list, tuple)):
        bad = next((i for i, row in enumerate(dataset) if not isinstance(row, dict)), None)
        if bad is not None:
            raise TypeError(f"dataset row {bad} is {type(dataset[bad]).__name__}, not a dict; pass a "
                            "datasets.Dataset or a list of dicts like {'anchor': ..., 'positive': ...}")
        columns = list(dataset[0]) if dataset else []
    else:
        raise TypeError(f"dataset must be a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset of (anchor, positive) rows.")
    anchor_col = _column(anchor_column_name, "anchor_column_name", columns, 0)
    positive_col = _column(positive_column_name, "positive_column_name", columns, 1)
    if anchor_col == positive_col:
        raise ValueError(f"anchor_column_name and positive_column_name are both {anchor_col!r}; "
                         f"name two different columns of {columns}")
    out = []
    for col in (anchor_col, positive_col):
        if is_dataset:
            values = list(dataset[col][:])
        else:
            missing = next((i for i, row in enumerate(dataset) if col not in row), None)
            if missing is not None:
                raise ValueError(f"dataset row {missing} has no {col!r} key (its keys: {list(dataset[missing])})")
            values = [row[col] for row in dataset]
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"dataset row {bad}: column {col!r} holds {type(values[bad]).__name__} "
                             f"{str(values[bad])[:40]!r}, not a text; every anchor and positive must be a str")
        out.append(values)
    return is_dataset, anchor_col, positive_col, out[0], out[1]


def _column(name, arg: str, columns: list, default: int) -> str:
    if name is None:
        if len(columns) <= default:
            raise ValueError(f"Dataset must contain at least two columns to select the {arg.split('_')[0]} column "
                             f"automatically; columns found: {columns}")
        return columns[default]
    if name not in columns:  # ST silently falls back to the first/second column: a typo mines the wrong text
        raise ValueError(f"{arg} {name!r} is not a column of the dataset; columns found: {columns}")
    return name


@dataclass
class _Plan:
    """ST's bookkeeping: unique queries, the deduplicated corpus, positives per query."""
    queries: list        # unique anchors, first-appearance order
    corpus: list         # the given corpus (deduplicated), then the positives not in it
    positive_ids: list   # per query: its unique positives' corpus ids, first-appearance order
    query_corpus: np.ndarray  # corpus id of each query's own text (never a negative), or -1
    max_positives: int   # most rows of one anchor (ST's pandas groupby count)


def _plan(anchors, positives, corpus, include_positives: bool, missing_positive: str) -> _Plan:
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
    return _Plan(queries, corpus, positive_ids, query_corpus, max(Counter(anchors).values()))


def _range_max(range_min, range_max, num_negatives, max_positives, n_corpus, filtered: bool) -> int:
    """ST's derived range_max and its checks, plus: an explicit range_max beyond the corpus."""
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    for name, value in (("range_min", range_min), ("range_max", range_max)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise ValueError(f"{name} must be an int, got {value!r}")
    explicit = range_max is not None
    if not explicit:
        range_max = range_min + num_negatives * (10 if filtered else 1) + max_positives
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and "
                         f"range_max={range_max}.")
    if num_negatives > range_max - range_min:
        raise ValueError(f"Cannot mine {num_negatives} negatives per query: only {range_max - range_min} candidates "
                         f"remain after skipping the first range_min={range_min} of range_max={range_max}. Consider "
                         "decreasing num_negatives or range_min, or increasing range_max.")
    if explicit and range_max > n_corpus:
        raise ValueError(f"range_max={range_max} is beyond the corpus: it holds {n_corpus} unique texts (the corpus "
                         f"plus the dataset's positives, duplicates removed); use range_max <= {n_corpus}")
    return range_max


def _pairwise(fn: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


@dataclass
class _Options:
    range_min: int
    range_max: int
    num_negatives: int
    sampling_strategy: str
    absolute_margin: float | None
    relative_margin: float | None
    max_score: float | None
    min_score: float | None
    include_positives: bool


def _select(scores, ids, lo, plan: _Plan, pos_scores, o: _Options, rng, skipped: Counter):
    """ST's selection for queries lo..lo+n: mask padding, the query itself and its positives,
    apply the margins (against the query's lowest positive score) and score bounds, keep ranks
    range_min..range_max of what is left, then the top or a random num_negatives."""
    n, inf = len(scores), np.float32(np.inf)
    s = np.where((ids == -1) | (ids == plan.query_corpus[lo:lo + n, None]), -inf, scores).astype(np.float32)
    n_pos = np.array([len(p) for p in plan.positive_ids[lo:lo + n]])
    rows = np.repeat(np.arange(n), n_pos)
    if not o.include_positives:
        stride = len(plan.corpus) + 1
        pos_keys = rows * stride + np.concatenate([plan.positive_ids[lo + r] for r in range(n)]) + 1
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


def _check_unsupported(use_faiss, use_multi_process, sampling_strategy, missing_positive, embedding_dtype,
                       cross_encoder, model) -> None:
    from .bi_encoder import BiEncoder
    if not isinstance(model, BiEncoder):
        raise TypeError(f"model must be an xenc_jax.BiEncoder, got {type(model).__name__}")
    if use_faiss:
        raise ValueError("use_faiss is not supported: the search here is exact, on device (sharded over "
                         "`mesh`); leave use_faiss=False")
    if use_multi_process:
        raise ValueError("use_multi_process is not supported: pass a BiEncoder built with mesh=... to use "
                         "several devices; leave use_multi_process=False")
    if sampling_strategy not in ("top", "random"):
        raise ValueError(f"sampling_strategy must be 'top' or 'random', got {sampling_strategy!r}")
    if missing_positive not in ("add", "error"):
        raise ValueError(f"missing_positive must be 'add' or 'error', got {missing_positive!r}")
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding_dtype must be one of {list(EMBEDDING_DTYPES)}, got {embedding_dtype!r}")
    if cross_encoder is not None and getattr(cross_encoder, "num_labels", None) != 1:
        raise ValueError(f"cross_encoder must give one score per pair (num_labels=1), "
                         f"got num_labels={getattr(cross_encoder, 'num_labels', None)}")
    if jax.process_count() > 1:
        raise NotImplementedError("mine_hard_negatives runs in one process (one or several local devices); "
                                  "multi-process mining is not implemented yet")


def _output_format(output_format, output_scores, include_positives, as_triplets):
    """ST's deprecated aliases and its include_positives override."""
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
        log.warning("The `as_triplets` parameter is deprecated. Use `output_format` instead. Setting "
                    "`output_format` to `%s`.", output_format)
    if include_positives and output_format != "n-tuple":
        log.warning('When using `include_positives=True`, `output_format` will be set to `"n-tuple"` to ensure '
                    "that the ranking order is preserved.")
        output_format = "n-tuple"
    if output_format == "n-tuple-scores":
        output_format, output_scores = "n-tuple", True
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of 'triplet', 'n-tuple', "
                         "'labeled-pair', or 'labeled-list'.")
    return output_format, bool(output_scores)


def _prompt(model, prompt, prompt_name, defaults):
    """ST's encode_query / encode_document prompt: the first of `defaults` in model.prompts when
    neither is given, then as encode (model._resolve_prompt)."""
    if prompt is None and prompt_name is None:
        prompt_name = next((d for d in defaults if d in model.prompts), None)
    return model._resolve_prompt(prompt, prompt_name)


def _mine(plan: _Plan, model, cross_encoder, o: _Options, *, fn, prompts, dtype, batch_size, cache,
          anchor_chunk, block_size, query_chunk_size, mesh, axis, rng, verbose, stats: Counter):
    """Embed the corpus once, then per chunk of anchors: embed, search, rescore, select.
    -> (negative ids [Q, W], their scores [Q, W], positive scores [pairs], positive ranks [Q], skip counts)."""
    n_pos = np.array([len(p) for p in plan.positive_ids])
    starts = np.concatenate([[0], np.cumsum(n_pos)])
    flat_pos = np.fromiter((p for row in plan.positive_ids for p in row), np.int64, int(starts[-1]))
    pos_rows = np.unique(flat_pos)
    clock = time.perf_counter()

    def lap(phase: str) -> None:  # wall seconds per phase, for stats=
        nonlocal clock
        now = time.perf_counter()
        stats[phase] += now - clock
        clock = now

    blocks, pos_emb = embed_corpus(model, plan.corpus, prompt=prompts[1], dtype=dtype, batch_size=batch_size,
                                   cache=cache, block_size=block_size, mesh=mesh, axis=axis, positive_rows=pos_rows,
                                   verbose=verbose)
    jax.block_until_ready(blocks.blocks)
    lap("embed_corpus")
    width = o.range_max + plan.max_positives + 1  # ST's candidate count: room for the positives and the query
    out, skipped = {"ids": [], "scores": [], "pos": [], "rank": []}, Counter()
    with contextlib.ExitStack() as stack:
        chunks = query_chunks(model, plan.queries, chunk=anchor_chunk, prompt=prompts[0], batch_size=batch_size,
                              cache=cache, stack=stack, verbose=verbose)
        for lo in range(0, len(plan.queries), anchor_chunk):
            q = next(chunks)
            lap("embed_queries")
            hi = lo + len(q)
            pair_r = np.repeat(np.arange(len(q)), n_pos[lo:hi])
            pair_p = flat_pos[starts[lo]:starts[hi]]
            pos_s = _pairwise(fn, q[pair_r], pos_emb[np.searchsorted(pos_rows, pair_p)])
            # each query's hardest positive (the margins' reference): its rank comes with the top-k
            hardest = np.lexsort((pos_s, pair_r))[starts[lo:hi] - starts[lo]]
            s, ids, above = search_blocks(q, blocks, top_k=width, score_function=fn, query_chunk_size=query_chunk_size,
                                          thresholds=pos_s[hardest], exclude_ids=pair_p[hardest])
            lap("search")
            missing = width - s.shape[1]  # a corpus smaller than the window: padded as ST does
            s = np.pad(s, ((0, 0), (0, missing)), constant_values=-np.inf)
            ids = np.pad(ids.astype(np.int64), ((0, 0), (0, missing)), constant_values=-1)
            if cross_encoder is not None:
                s, pos_s = _rescore(cross_encoder, plan.queries[lo:hi], plan.corpus, ids, pair_r, pair_p,
                                    batch_size, verbose)
                lap("rescore")
            neg_ids, neg_s = _select(s, ids, lo, plan, pos_s, o, rng, skipped)
            lap("select")
            for key, value in zip(out, (neg_ids, neg_s, pos_s, above + 1)):
                out[key].append(value)
        chunks.close()
    return tuple(np.concatenate(v) for v in out.values()) + (skipped,)


def mine_hard_negatives(dataset, model, anchor_column_name: str | None = None, positive_column_name: str | None = None,
                        corpus=None, cross_encoder=None, range_min: int = 0, range_max: int | None = None,
                        max_score: float | None = None, min_score: float | None = None,
                        absolute_margin: float | None = None, relative_margin: float | None = None,
                        num_negatives: int = 3, sampling_strategy: str = "top", query_prompt_name: str | None = None,
                        query_prompt: str | None = None, corpus_prompt_name: str | None = None,
                        corpus_prompt: str | None = None, include_positives: bool = False,
                        output_format: str = "triplet", output_scores: bool = False, batch_size: int | None = None,
                        faiss_batch_size: int = 16384, use_faiss: bool = False, use_multi_process=False,
                        verbose: bool = True, cache_folder=None, as_triplets: bool | None = None,
                        margin: float | None = None, *, random_seed: int | None = None,
                        embedding_dtype: str = "float32", missing_positive: str = "add", mesh=None,
                        corpus_axis: str = "data", corpus_chunk_size: int | None = None,
                        query_chunk_size: int | None = None,
                        stats: dict | None = None):
    """Add hard negatives to (anchor, positive) rows: `sentence_transformers.util.mine_hard_negatives`
    (6.3) with the same arguments, meanings and rows, searched exactly on device.

    dataset: a `datasets.Dataset` or a list of dicts; the result is of the same kind.
    model: an `xenc_jax.BiEncoder`; cross_encoder: an `xenc_jax.CrossEncoder` (one score per pair).
    Everything from anchor_column_name to margin means what it means in ST; see its docstring.
    Rows come grouped by anchor (first appearance), each anchor's positives in order, as ST's.

    Differences from ST:
      - a column name that is not in the dataset is an error (ST falls back to the first/second
        column); so are an empty `corpus` list, an explicit range_max beyond the corpus (the given
        corpus plus the positives, deduplicated), and anchors or positives that are not str;
      - batch_size None (default) uses the model's token-budget buckets; an int fixes rows per batch;
      - faiss_batch_size: anchors embedded, searched and selected per chunk (bounds host memory);
      - use_faiss and use_multi_process are not supported (raise if set): the search is exact on
        device; a BiEncoder built with a mesh shards it (`mesh`, `corpus_axis`);
      - cache_folder: .npy files named as ST's (query_/corpus_embeddings_<hash>.npy), keyed by the
        model's files and live params, its embedding settings, the prompt, embedding_dtype and the
        texts, and written atomically.
    Extra keyword-only options:
      random_seed: seed for sampling_strategy="random" (None: Python's global `random`, as ST, so
        `random.seed(s)` before either gives the same rows).
      embedding_dtype: "float32" (default, ST's scores), "float16" or "bfloat16": the corpus is held
        (and cached) at that precision, halving its memory; scores move by ~1e-3 (bf16) / ~1e-4.
      missing_positive: "add" (ST: positives missing from a given corpus join it) or "error".
      corpus_chunk_size / query_chunk_size: device block rows / query rows per search step (None:
        8192 / 128 on CPU, where a score tile that stays in cache is 3x faster than a large one;
        65536 / 1024 on accelerators).
      stats: a dict that receives wall seconds per phase (prepare, embed_corpus, embed_queries,
        search, rescore, select, rows) and the hardest positives' ranks ("positive_ranks").
    """
    start, timings = time.perf_counter(), Counter()
    _check_unsupported(use_faiss, use_multi_process, sampling_strategy, missing_positive, embedding_dtype,
                       cross_encoder, model)
    cpu = jax.default_backend() == "cpu"
    corpus_chunk_size = (8192 if cpu else 65536) if corpus_chunk_size is None else corpus_chunk_size
    query_chunk_size = (128 if cpu else 1024) if query_chunk_size is None else query_chunk_size
    for name, value in (("faiss_batch_size", faiss_batch_size), ("corpus_chunk_size", corpus_chunk_size),
                        ("query_chunk_size", query_chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    is_dataset, anchor_col, positive_col, anchors, positives = _read_pairs(dataset, anchor_column_name,
                                                                          positive_column_name)
    output_format, output_scores = _output_format(output_format, output_scores, include_positives, as_triplets)
    if margin is not None:
        absolute_margin = margin
        log.warning("The `margin` parameter is deprecated. Setting `absolute_margin` to `%s`.", margin)
    if corpus is not None:
        corpus = _texts_of(corpus, "corpus")
        if not corpus:
            raise ValueError("corpus is empty (0 texts): pass None to mine among the dataset's positives, "
                             "or a list of texts")
    plan = _plan(anchors, positives, corpus, include_positives, missing_positive)
    if include_positives and (range_min, range_max, max_score, min_score, absolute_margin, relative_margin,
                              margin, sampling_strategy) != (0, None, None, None, None, None, None, "top"):
        log.warning("include_positives=True with a range, score bound, margin or random sampling may still "
                    "discard the positives.")
    filtered = (absolute_margin, relative_margin, max_score) != (None,) * 3 or (
        cross_encoder is not None and min_score is not None)
    derived = range_max is None
    range_max = _range_max(range_min, range_max, num_negatives, plan.max_positives, len(plan.corpus), filtered)
    if verbose and derived:
        print(f"Setting range_max to {range_max} based on the provided parameters.")
    o = _Options(range_min, range_max, num_negatives, sampling_strategy, absolute_margin, relative_margin,
                 max_score, min_score, include_positives)
    if mesh is None and model.plan is not None:
        mesh = model.plan.mesh
    cache = None if not cache_folder else (cache_folder, model_fingerprint(model))
    timings["prepare"] = time.perf_counter() - start
    neg_ids, neg_s, pos_s, ranks, skipped = _mine(
        plan, model, cross_encoder, o, fn=model.similarity_fn_name, dtype=EMBEDDING_DTYPES[embedding_dtype],
        prompts=(_prompt(model, query_prompt, query_prompt_name, ("query",)),
                 _prompt(model, corpus_prompt, corpus_prompt_name, ("document", "passage", "corpus"))),
        batch_size=batch_size, cache=cache, anchor_chunk=faiss_batch_size, block_size=corpus_chunk_size,
        query_chunk_size=query_chunk_size, mesh=mesh, axis=corpus_axis,
        rng=_random if random_seed is None else _random.Random(random_seed), verbose=verbose, stats=timings)
    start = time.perf_counter()
    columns, summary = mining_rows.build(output_format, output_scores, anchor_col, positive_col, plan.queries,
                                         plan.corpus, plan.positive_ids, pos_s, neg_ids, neg_s, len(anchors))
    if verbose:
        mining_rows.print_summary(summary, skipped, ranks, o, len(plan.corpus))
    if is_dataset:
        from datasets import Dataset
        out = Dataset.from_dict(columns)
    else:
        out = [dict(zip(columns, values)) for values in zip(*columns.values())]
    timings["rows"] = time.perf_counter() - start
    if stats is not None:
        stats.update(timings, positive_ranks=ranks)
    return out

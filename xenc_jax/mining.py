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
import time
from collections import Counter

import numpy as np

from . import mining_rows
from .mining_core import Miner, Plan, chunk_rng, make_plan
from .mining_embed import EMBEDDING_DTYPES, model_fingerprint, query_chunks
from .mining_options import (Options, check_arguments, is_filtered, resolve_output_format, resolve_prompt,
                             resolve_range_max, search_chunk_sizes)

__all__ = ["mine_hard_negatives"]

log = logging.getLogger(__name__)


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


def _corpus_texts(corpus):
    if corpus is None:
        return None
    corpus = _texts_of(corpus, "corpus")
    if not corpus:
        raise ValueError("corpus is empty (0 texts): pass None to mine among the dataset's positives, "
                         "or a list of texts")
    return corpus


def _column(name, arg: str, columns: list, default: int) -> str:
    if name is None:
        if len(columns) <= default:
            raise ValueError(f"Dataset must contain at least two columns to select the {arg.split('_')[0]} column "
                             f"automatically; columns found: {columns}")
        return columns[default]
    if name not in columns:  # ST silently falls back to the first/second column: a typo mines the wrong text
        raise ValueError(f"{arg} {name!r} is not a column of the dataset; columns found: {columns}")
    return name


def _mine(plan: Plan, miner: Miner, *, query_prompt, batch_size, cache, anchor_chunk: int, seed, verbose):
    """Per chunk of `anchor_chunk` unique anchors: embed (or read from the cache), then mine.
    -> (negative ids [Q, W], their scores [Q, W], positive scores [pairs], positive ranks [Q])."""
    out = []
    with contextlib.ExitStack() as stack:
        chunks = query_chunks(miner.model, plan.queries, chunk=anchor_chunk, prompt=query_prompt,
                              batch_size=batch_size, cache=cache, stack=stack, verbose=verbose)
        for k, lo in enumerate(range(0, len(plan.queries), anchor_chunk)):
            q = next(chunks)
            miner.lap("embed_queries")
            hi = lo + len(q)
            r = miner.mine(q, plan.queries[lo:hi], plan.positive_ids[lo:hi], plan.query_corpus[lo:hi],
                           chunk_rng(seed, k))
            out.append((r.neg_ids, r.neg_scores, r.pos_scores, r.ranks))
        chunks.close()
    return tuple(np.concatenate(v) for v in zip(*out))


def _options(plan: Plan, cross_encoder, *, range_min, range_max, num_negatives, sampling_strategy, max_score,
             min_score, absolute_margin, relative_margin, margin, include_positives, output_format, output_scores,
             verbose) -> Options:
    """ST's derived range_max (printed when verbose, as ST) and the checks on the window."""
    if include_positives and (range_min, range_max, max_score, min_score, absolute_margin, relative_margin,
                              margin, sampling_strategy) != (0, None, None, None, None, None, None, "top"):
        log.warning("include_positives=True with a range, score bound, margin or random sampling may still "
                    "discard the positives.")
    derived = range_max is None
    range_max = resolve_range_max(range_min, range_max, num_negatives, plan.max_positives, len(plan.corpus),
                                  is_filtered(absolute_margin, relative_margin, max_score, min_score, cross_encoder))
    if verbose and derived:
        print(f"Setting range_max to {range_max} based on the provided parameters.")
    return Options(range_min, range_max, num_negatives, sampling_strategy, absolute_margin, relative_margin,
                   max_score, min_score, include_positives, output_format, output_scores)


def _rows(plan: Plan, o: Options, mined, anchor_col, positive_col, n_rows: int, is_dataset: bool, skipped,
          verbose: bool, timings: Counter):
    """The returned rows (a Dataset or a list of dicts) and ST's printed summary."""
    start = time.perf_counter()
    neg_ids, neg_s, pos_s, ranks = mined
    columns, summary = mining_rows.build(o.output_format, o.output_scores, anchor_col, positive_col, plan.queries,
                                         plan.corpus, plan.positive_ids, pos_s, neg_ids, neg_s, n_rows)
    if verbose:
        mining_rows.print_summary(summary, skipped, ranks, o, len(plan.corpus))
    elif summary["rows"] == 0:  # an empty result is never what was meant: say why even when quiet
        log.warning("mine_hard_negatives returns 0 rows. %s", mining_rows.shortfall_hint(skipped, o))
    if is_dataset:
        from datasets import Dataset
        out = Dataset.from_dict(columns)
    else:
        out = [dict(zip(columns, values)) for values in zip(*columns.values())]
    timings["rows"] = time.perf_counter() - start
    return out

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
      random_seed: seed for sampling_strategy="random": each chunk of faiss_batch_size anchors
        draws from its own stream (mining_core.chunk_rng), as `xenc mine` does per part. None:
        Python's global `random`, as ST, so `random.seed(s)` before either gives the same rows.
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
    check_arguments(model, cross_encoder, sampling_strategy=sampling_strategy, missing_positive=missing_positive,
                    embedding_dtype=embedding_dtype, use_faiss=use_faiss, use_multi_process=use_multi_process)
    corpus_chunk_size, query_chunk_size = search_chunk_sizes(corpus_chunk_size, query_chunk_size, faiss_batch_size)
    is_dataset, anchor_col, positive_col, anchors, positives = _read_pairs(dataset, anchor_column_name,
                                                                          positive_column_name)
    output_format, output_scores = resolve_output_format(output_format, output_scores, include_positives,
                                                         as_triplets)
    if margin is not None:
        absolute_margin = margin
        log.warning("The `margin` parameter is deprecated. Setting `absolute_margin` to `%s`.", margin)
    plan = make_plan(anchors, positives, _corpus_texts(corpus), include_positives, missing_positive, log)
    o = _options(plan, cross_encoder, range_min=range_min, range_max=range_max, num_negatives=num_negatives,
                 sampling_strategy=sampling_strategy, max_score=max_score, min_score=min_score,
                 absolute_margin=absolute_margin, relative_margin=relative_margin, margin=margin,
                 include_positives=include_positives, output_format=output_format, output_scores=output_scores,
                 verbose=verbose)
    cache = None if not cache_folder else (cache_folder, model_fingerprint(model))
    timings["prepare"] = time.perf_counter() - start
    miner = Miner(model, cross_encoder, o, plan.corpus, np.concatenate(plan.positive_ids),
                  max_positives=plan.max_positives,
                  prompt=resolve_prompt(model, corpus_prompt, corpus_prompt_name, ("document", "passage", "corpus")),
                  dtype=EMBEDDING_DTYPES[embedding_dtype], batch_size=batch_size, cache=cache,
                  block_size=corpus_chunk_size, query_chunk_size=query_chunk_size, mesh=mesh, axis=corpus_axis,
                  verbose=verbose, stats=timings)
    mined = _mine(plan, miner, query_prompt=resolve_prompt(model, query_prompt, query_prompt_name, ("query",)),
                  batch_size=batch_size, cache=cache, anchor_chunk=faiss_batch_size, seed=random_seed,
                  verbose=verbose)
    out = _rows(plan, o, mined, anchor_col, positive_col, len(anchors), is_dataset, miner.skipped, verbose, timings)
    if stats is not None:
        stats.update(timings, positive_ranks=mined[3])
    return out

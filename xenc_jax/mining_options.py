"""The options of hard-negative mining (mining.py, `xenc mine`): sentence-transformers' argument
checks and derived values in one place, so that the library call and the CLI refuse the same
inputs with the same messages and mine with the same settings.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .mining_embed import EMBEDDING_DTYPES

__all__ = ["OUTPUT_FORMATS", "Options", "check_arguments", "resolve_output_format", "resolve_range_max",
           "resolve_prompt", "is_filtered", "search_chunk_sizes"]

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


@dataclass(frozen=True)
class Options:
    """What selects the negatives of one anchor (mining_core.select) and how rows are written."""
    range_min: int
    range_max: int
    num_negatives: int
    sampling_strategy: str
    absolute_margin: float | None
    relative_margin: float | None
    max_score: float | None
    min_score: float | None
    include_positives: bool
    output_format: str = "triplet"
    output_scores: bool = False


def check_arguments(model, cross_encoder, *, sampling_strategy, missing_positive, embedding_dtype,
                    use_faiss=False, use_multi_process=False) -> None:
    """What is refused before any text is read: the wrong model kinds and unsupported switches."""
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
    import jax
    if jax.process_count() > 1:
        raise NotImplementedError("hard-negative mining runs in one process (one or several local devices); "
                                  "multi-process mining is not implemented yet")


def resolve_output_format(output_format, output_scores, include_positives, as_triplets=None) -> tuple[str, bool]:
    """ST's deprecated alias, its include_positives override, n-tuple-scores -> (n-tuple, scores)."""
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


def is_filtered(absolute_margin, relative_margin, max_score, min_score, cross_encoder) -> bool:
    """ST widens the derived candidate window tenfold when a filter may remove candidates."""
    return (absolute_margin, relative_margin, max_score) != (None,) * 3 or (
        cross_encoder is not None and min_score is not None)


def resolve_range_max(range_min, range_max, num_negatives, max_positives, n_corpus, filtered: bool) -> int:
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
    return int(range_max)


def resolve_prompt(model, prompt, prompt_name, defaults):
    """ST's encode_query / encode_document prompt: the first of `defaults` in model.prompts when
    neither is given, then as encode (model._resolve_prompt)."""
    if prompt is None and prompt_name is None:
        prompt_name = next((d for d in defaults if d in model.prompts), None)
    return model._resolve_prompt(prompt, prompt_name)


def search_chunk_sizes(corpus_chunk_size, query_chunk_size, anchor_chunk) -> tuple[int, int]:
    """Device block rows and query rows per search step: 8192 / 128 on CPU, where a score tile
    that stays in cache is 3x faster than a large one; 65536 / 1024 on accelerators."""
    import jax
    cpu = jax.default_backend() == "cpu"
    corpus_chunk_size = (8192 if cpu else 65536) if corpus_chunk_size is None else corpus_chunk_size
    query_chunk_size = (128 if cpu else 1024) if query_chunk_size is None else query_chunk_size
    for name, value in (("faiss_batch_size", anchor_chunk), ("corpus_chunk_size", corpus_chunk_size),
                        ("query_chunk_size", query_chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return corpus_chunk_size, query_chunk_size

"""Tokenize on the host and plan fixed-shape, padded numpy batches for the jitted model.

  inputs.py        checks on the texts and pairs callers pass (one-line errors naming the item)
  tokenization.py  Encoding; token ids exactly as sentence-transformers 6.2 makes them
  buckets.py       BucketConfig: the few (rows, length) shapes, so compilations stay bounded
  batch.py         Batch (the host side of model_fns.py's contract), fill_rows, scatter_results
  planning.py      make_batches: sort or pack examples into rows, rows into buckets

numpy only: this runs in input pipelines and on hosts that never import jax. The names below are
the package's public API (`from xenc_jax.batching import make_batches`).
"""
from .batch import MODEL_INPUTS, Batch, TokenTable, fill_rows, scatter_results
from .buckets import BucketConfig
from .inputs import as_sequence, check_texts, describe, split_pairs
from .planning import make_batches
from .tokenization import (TOKENIZER_LOCK, Encoding, copy_tokenizer, tokenize_pairs, tokenize_texts,
                           unique_encodings)

__all__ = ["MODEL_INPUTS", "Batch", "TokenTable", "fill_rows", "scatter_results", "BucketConfig",
           "as_sequence", "check_texts", "describe", "split_pairs", "make_batches", "TOKENIZER_LOCK",
           "Encoding", "copy_tokenizer", "tokenize_pairs", "tokenize_texts", "unique_encodings"]

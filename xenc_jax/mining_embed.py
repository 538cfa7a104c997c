"""Embeddings for mining (mining.py): the corpus streamed from the encoder into device blocks,
the anchors chunk by chunk, and the on-disk cache of both (.npy files named as
sentence-transformers names them, keyed by model, settings, prompt, dtype and texts, written
atomically and read back in chunks, never memory-mapped whole).
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from .atomic import atomic_file
from .identity import model_identity
from .search import bad_row_error, corpus_blocks, first_bad_row

__all__ = ["EMBEDDING_DTYPES", "model_fingerprint", "embed_corpus", "query_chunks"]

EMBEDDING_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
                    "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def model_fingerprint(model) -> str:
    """The model folder's files and the live params (sums per leaf: params changed in memory,
    e.g. by training, change the key too), and every setting that changes an embedding."""
    sums = jax.device_get(jax.tree.map(lambda x: (jnp.sum(x, dtype=jnp.float32),
                                                  jnp.sum(jnp.square(x.astype(jnp.float32)))), model.params))
    return repr((model_identity(model.model_dir), jax.tree.leaves(sums), model.max_seq_length,
                 model.pooling_modes, model.truncate_dim, str(model.dtype), model.do_lower_case))


def _cache_path(folder, kind: str, fingerprint: str, prompt, dtype: np.dtype, texts: list) -> Path:
    h = hashlib.sha256(repr((fingerprint, prompt, dtype.name, len(texts))).encode())
    for t in texts:  # streamed: no repr of a 10M-text list
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)
    return Path(folder) / f"{kind}_embeddings_{h.hexdigest()[:32]}.npy"


def _disk_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype("<u2") if dtype == EMBEDDING_DTYPES["bfloat16"] else dtype  # .npy has no bfloat16


def _write_header(f, n: int, dim: int, dtype: np.dtype) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(_disk_dtype(dtype)),
                                             "fortran_order": False, "shape": (n, dim)})


def _read_chunks(path: Path, n: int, dim: int, dtype: np.dtype, rows: int = 65536):
    """Rows of a cached .npy, `rows` at a time (plain reads: no whole-file memory map)."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        shape, fortran, disk = np.lib.format.read_array_header_1_0(f)
        if shape != (n, dim) or fortran or disk != _disk_dtype(dtype):
            raise ValueError(f"cached embeddings {path} hold {shape} {disk}, expected ({n}, {dim}) "
                             f"{_disk_dtype(dtype)}; delete the file to recompute it")
        for start in range(0, n, rows):
            count = min(rows, n - start) * dim
            chunk = np.fromfile(f, _disk_dtype(dtype), count)
            if chunk.size != count:
                raise ValueError(f"cached embeddings {path} are truncated; delete the file to recompute it")
            chunk = chunk.view(dtype).reshape(-1, dim)
            bad = first_bad_row(chunk)  # the cache holds checked model outputs: a bad row is damage
            if bad is not None:
                raise bad_row_error(f"cached embeddings {path} row {start + bad}", chunk[bad],
                                    cause="the file is damaged: delete it to recompute it")
            yield chunk


def _stored(chunks, dtype: np.dtype, sink, positive_rows: np.ndarray, positive_out: np.ndarray):
    """Pass chunks through as `dtype`, writing them to `sink` (a cache file) and copying the
    positives' rows (sorted corpus ids) into `positive_out` on the way."""
    start = 0
    for chunk in chunks:
        chunk = np.asarray(chunk).astype(dtype, copy=False)
        if sink is not None:
            sink.write(np.ascontiguousarray(chunk).view(_disk_dtype(dtype)).tobytes())
        lo, hi = np.searchsorted(positive_rows, [start, start + len(chunk)])
        positive_out[lo:hi] = chunk[positive_rows[lo:hi] - start]
        start += len(chunk)
        yield chunk


def embed_corpus(model, corpus, *, prompt, dtype, batch_size, cache, block_size, mesh, axis, positive_rows, verbose):
    """CorpusBlocks of the corpus and the positives' embeddings [len(positive_rows), D] (host, `dtype`)."""
    dim = model.get_sentence_embedding_dimension()
    positive_out = np.zeros((len(positive_rows), dim), dtype)
    path = None if cache is None else _cache_path(cache[0], "corpus", cache[1], prompt, dtype, corpus)
    with contextlib.ExitStack() as stack:
        if path is not None and path.is_file():
            chunks, sink = _read_chunks(path, len(corpus), dim, dtype), None
            if verbose:
                print(f"[Cache] Loading corpus embeddings from {path}")
        else:
            chunks = model.encode_stream(corpus, batch_size=batch_size, normalize_embeddings=True, prompt=prompt,
                                         show_progress_bar=verbose)
            sink = None if path is None else stack.enter_context(atomic_file(path, "wb"))
            if sink is not None:
                _write_header(sink, len(corpus), dim, dtype)
        blocks = corpus_blocks(_stored(chunks, dtype, sink, positive_rows, positive_out), len(corpus), dim,
                               dtype=dtype, block_size=block_size, mesh=mesh, corpus_axis=axis)
    return blocks, positive_out


def query_chunks(model, queries, *, chunk, prompt, batch_size, cache, stack, verbose):
    """Query embeddings (float32, normalized) `chunk` queries at a time: encoded (the next chunk
    tokenized in the background), or read from the cache, or encoded and written to it."""
    dim = model.get_sentence_embedding_dimension()
    f32 = EMBEDDING_DTYPES["float32"]
    path = None if cache is None else _cache_path(cache[0], "query", cache[1], prompt, f32, queries)
    if path is not None and path.is_file():
        if verbose:
            print(f"[Cache] Loading query embeddings from {path}")
        yield from _read_chunks(path, len(queries), dim, f32, rows=chunk)
        return
    sink = None if path is None else stack.enter_context(atomic_file(path, "wb"))
    if sink is not None:
        _write_header(sink, len(queries), dim, f32)
    for emb in model.encode_stream(queries, chunk_size=chunk, batch_size=batch_size, normalize_embeddings=True,
                                   prompt=prompt, show_progress_bar=False):
        if sink is not None:
            sink.write(np.ascontiguousarray(emb, f32).tobytes())
        yield emb

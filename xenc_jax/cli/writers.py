"""Every CLI output format in one place: rows of text (JSON Lines / TSV), Parquet tables, .npy
arrays; how one chunk's result is written as a part, and how the parts are assembled into the
output (jobs.py runs the parts, streamed.py the job)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np


def output_format(output: str | None, fmt: str | None, allowed=("jsonl", "tsv", "parquet")) -> str:
    """The format asked for, else the one the output file's name says, else the first allowed."""
    if fmt:
        return fmt
    name = str(output or "")
    for ext, f in ((".parquet", "parquet"), (".tsv", "tsv"), (".npy", "npy")):
        if name.endswith(ext) and f in allowed:
            return f
    return allowed[0]


# ----------------------------------------------------------------------------- text rows

def score_rows_text(scores: np.ndarray, start: int, fmt: str) -> str:
    """JSON Lines {"index", "score"} or TSV (the scores only) for rows start, start+1, ..."""
    out = []
    for i, s in enumerate(scores, start):
        if fmt == "tsv":
            out.append(f"{float(s):.7g}" if np.ndim(s) == 0 else "\t".join(f"{float(x):.7g}" for x in s))
        else:
            score = float(s) if np.ndim(s) == 0 else [float(x) for x in s]
            out.append(json.dumps({"index": i, "score": score}, ensure_ascii=False))
    return "".join(x + "\n" for x in out)


def rows_text(rows: list[dict], fmt: str, columns: list[str]) -> str:
    """Result rows (rank, search) as JSON Lines objects, or TSV with `columns` in that order."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return "".join(_tsv_line(row, columns) for row in rows)


def _tsv_line(row: dict, columns: list[str]) -> str:
    """One TSV line; a value holding a tab or a line break would shift or split the row (a document
    is a whole line, tabs kept; a JSON text may hold anything), so it is an error, not a torn row."""
    values = [str(row[c]) for c in columns]
    for c, v in zip(columns, values):
        if "\t" in v or "\n" in v or "\r" in v:
            what = "a tab" if "\t" in v else "a line break"
            where = f" (qid {row['qid']!r})" if c != "qid" and "qid" in row else ""
            raise ValueError(f"the {c} {v[:60]!r}{where} holds {what}, which TSV output cannot hold (it would shift "
                             "or split the row); use --output-format jsonl")
    return "\t".join(values) + "\n"


# ----------------------------------------------------------------------------- Parquet

def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet output needs pyarrow: pip install 'xenc_jax[parquet]'") from None
    return pa, pq


def _vectors(pa, values: np.ndarray):
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def score_table(scores: np.ndarray, start: int):
    """Parquet table {index int64, score float32 (or a fixed-size list per label)}."""
    pa, _ = _pa()
    scores = np.asarray(scores, np.float32)
    index = pa.array(np.arange(start, start + len(scores), dtype=np.int64))
    return pa.table({"index": index, "score": pa.array(scores) if scores.ndim == 1 else _vectors(pa, scores)})


def embedding_table(emb: np.ndarray, start: int):
    """Parquet table {index int64, embedding fixed-size list of float32}."""
    pa, _ = _pa()
    emb = np.asarray(emb, np.float32)
    return pa.table({"index": pa.array(np.arange(start, start + len(emb), dtype=np.int64)),
                     "embedding": _vectors(pa, emb)})


# ----------------------------------------------------------------------------- assembling parts

def concat(parts: list[Path], f) -> None:
    """Byte concatenation (JSON Lines, TSV)."""
    for p in parts:
        with open(p, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)


def concat_parquet(parts: list[Path], f) -> None:
    """One Parquet file from part files (a row group per part; one part in memory at a time)."""
    _, pq = _pa()
    writer = None
    try:
        for p in parts:
            table = pq.read_table(p)
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def concat_npy(parts: list[Path], f) -> None:
    """One .npy [N, D] float32 from part .npy files, streamed (never all in memory)."""
    shapes = [np.load(p, mmap_mode="r").shape for p in parts]
    dim = shapes[0][1] if shapes else 0
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (sum(s[0] for s in shapes), dim)}
    np.lib.format.write_array_header_1_0(f, header)
    for p in parts:
        f.write(np.ascontiguousarray(np.load(p, mmap_mode="r"), np.float32).tobytes())


class PartFormat(NamedTuple):
    ext: str                                            # part file extension
    write: Callable[[np.ndarray, int, object], None]    # write(result, first index, binary file)
    assemble: Callable[[list[Path], object], None]      # assemble(parts in order, binary file)


FORMATS = ("jsonl", "tsv", "parquet", "npy", "embeddings-parquet")


def part_format(fmt: str) -> PartFormat:
    """How an output format is written in parts and assembled."""
    if fmt in ("jsonl", "tsv"):
        return PartFormat(fmt, lambda r, start, f: f.write(score_rows_text(r, start, fmt).encode("utf-8")), concat)
    if fmt == "parquet":
        return PartFormat("parquet", lambda r, start, f: _pa()[1].write_table(score_table(r, start), f),
                          concat_parquet)
    if fmt == "npy":
        return PartFormat("npy", lambda r, start, f: np.save(f, np.asarray(r, np.float32)), concat_npy)
    if fmt == "embeddings-parquet":
        return PartFormat("parquet", lambda r, start, f: _pa()[1].write_table(embedding_table(r, start), f),
                          concat_parquet)
    raise ValueError(f"unknown output format {fmt!r} (known: {', '.join(FORMATS)})")

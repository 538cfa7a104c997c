"""Every CLI output format in one place: rows of text (JSON Lines / TSV / CSV), Parquet tables,
.npy arrays; how one chunk's result is written as a part, and how the parts are assembled into
the output (jobs.py runs the parts, streamed.py the job).

numpy is imported where it is used: `xenc --help` imports this module (tests/test_startup.py)."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

SUFFIXES = ((".parquet", "parquet"), (".tsv", "tsv"), (".csv", "csv"), (".npy", "npy"), (".jsonl", "jsonl"))
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


def output_format(output: str | None, fmt: str | None, allowed=("jsonl", "tsv", "csv", "parquet")) -> str:
    """The format asked for, else the one the output file's name says, else the first allowed. A
    name that says a format this command does not write (mine -o x.csv), or a compressed file, is
    an error: the file would hold another format than its name says."""
    name = str(output or "")
    if name.lower().endswith(COMPRESSED):   # with --output-format too: no format compresses
        raise ValueError(f"--output {name}: xenc writes uncompressed files; write {Path(name).stem} and compress "
                         "it afterwards")
    if fmt:
        return fmt
    for ext, f in SUFFIXES:
        if name.lower().endswith(ext):
            if f not in allowed:
                raise ValueError(f"--output {name} names {f} output, which this command does not write; name the "
                                 f"file for one of {', '.join(allowed)}, or give --output-format")
            return f
    return allowed[0]


# ----------------------------------------------------------------------------- text rows

def _number(x) -> str:
    """A score as JSON writes it (the shortest text that reads back as the same float)."""
    return repr(float(x))


def score_rows_text(scores, start: int, fmt: str) -> str:
    """JSON Lines {"index", "score"}, TSV (the scores only) or CSV (the scores, a header "score" or
    "score_0,score_1,..." above row 0) for rows start, start+1, ... Every format writes a score as
    the same text (_number): TSV's former .7g was up to 1 ulp off a float32 (which needs 9 digits)."""
    import numpy as np
    out = []
    if fmt == "csv" and start == 0:
        out.append("score" if np.ndim(scores) < 2 else ",".join(f"score_{k}" for k in range(np.shape(scores)[1])))
    for i, s in enumerate(scores, start):
        if fmt == "tsv":
            out.append(_number(s) if np.ndim(s) == 0 else "\t".join(_number(x) for x in s))
        elif fmt == "csv":  # numbers only: no field needs quoting
            out.append(_number(s) if np.ndim(s) == 0 else ",".join(_number(x) for x in s))
        else:
            score = float(s) if np.ndim(s) == 0 else [float(x) for x in s]
            out.append(json.dumps({"index": i, "score": score}, ensure_ascii=False))
    end = "\r\n" if fmt == "csv" else "\n"
    return "".join(x + end for x in out)


def rows_text(rows: list[dict], fmt: str, columns: list[str], header: bool = False) -> str:
    """Result rows (rank, search) as JSON Lines objects, TSV with `columns` in that order, or CSV
    (RFC 4180: a field holding a comma, quote or line break is quoted; `header`: the column names
    first, for the first part only)."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if fmt == "csv":
        # lineterminator \r\n: Python quotes a field holding a character of it, so a lone \r in a
        # text is quoted too (with "\n" alone it was written bare, and readers break the row there)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if header:
            writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)
        return out.getvalue()
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
                             "or split the row); use --output-format jsonl or csv")
    return "\t".join(values) + "\n"


# ----------------------------------------------------------------------------- Parquet

def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet output needs pyarrow: pip install 'xenc_jax[parquet]'") from None
    return pa, pq


def _vectors(pa, values):
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def score_table(scores, start: int):
    """Parquet table {index int64, score float32 (or a fixed-size list per label)}."""
    import numpy as np
    pa, _ = _pa()
    scores = np.asarray(scores, np.float32)
    index = pa.array(np.arange(start, start + len(scores), dtype=np.int64))
    return pa.table({"index": index, "score": pa.array(scores) if scores.ndim == 1 else _vectors(pa, scores)})


def embedding_table(emb, start: int):
    """Parquet table {index int64, embedding fixed-size list of float32}."""
    import numpy as np
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
    import numpy as np
    shapes = [np.load(p, mmap_mode="r").shape for p in parts]
    dim = shapes[0][1] if shapes else 0
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (sum(s[0] for s in shapes), dim)}
    np.lib.format.write_array_header_1_0(f, header)
    for p in parts:
        f.write(np.ascontiguousarray(np.load(p, mmap_mode="r"), np.float32).tobytes())


def _save_npy(result, start: int, f) -> None:
    import numpy as np
    np.save(f, np.asarray(result, np.float32))


class PartFormat(NamedTuple):
    ext: str                                            # part file extension
    write: Callable[[object, int, object], None]        # write(result array, first index, binary file)
    assemble: Callable[[list[Path], object], None]      # assemble(parts in order, binary file)


FORMATS = ("jsonl", "tsv", "csv", "parquet", "npy", "embeddings-parquet")


def part_format(fmt: str) -> PartFormat:
    """How an output format is written in parts and assembled."""
    if fmt in ("jsonl", "tsv", "csv"):  # text: parts are concatenated (CSV's header is in part 0 only)
        return PartFormat(fmt, lambda r, start, f: f.write(score_rows_text(r, start, fmt).encode("utf-8")), concat)
    if fmt == "parquet":
        return PartFormat("parquet", lambda r, start, f: _pa()[1].write_table(score_table(r, start), f),
                          concat_parquet)
    if fmt == "npy":
        return PartFormat("npy", _save_npy, concat_npy)
    if fmt == "embeddings-parquet":
        return PartFormat("parquet", lambda r, start, f: _pa()[1].write_table(embedding_table(r, start), f),
                          concat_parquet)
    raise ValueError(f"unknown output format {fmt!r} (known: {', '.join(FORMATS)})")

"""Reading pairs/texts from TSV, JSON Lines or stdin, and writing results, for the CLI."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

PAIR_KEYS = [("query", "document"), ("query", "passage"), ("query", "text"), ("text1", "text2"),
             ("sentence1", "sentence2"), ("question1", "question2")]


def _fmt(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    name = str(path)
    if name.endswith(".parquet"):
        return "parquet"
    return "jsonl" if name.endswith((".jsonl", ".json")) else "tsv"


@contextmanager
def open_in(path: str):
    if path in (None, "-"):
        yield sys.stdin
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            yield f


@contextmanager
def open_out(path: str | None):
    if path in (None, "-"):
        yield sys.stdout
    else:  # atomic: the file appears complete or not at all
        from ..atomic import atomic_file
        with atomic_file(path, "w", encoding="utf-8") as f:
            yield f


def check_input(path: str | None) -> None:
    """Before any model is loaded: a missing input file is a one-line error, not a traceback."""
    if path not in (None, "-") and not Path(path).is_file():
        raise FileNotFoundError(f"input file {path} does not exist")


class ByteCounter:
    """How far a reader has got in its input file, for a progress estimate of unknown totals."""

    def __init__(self, path: str | None):
        self.read = 0
        self.total = Path(path).stat().st_size if path not in (None, "-") and Path(path).is_file() else None


def _share_lines(f, share):
    f.seek(share.start)
    while f.tell() < share.end:
        raw = f.readline()
        if not raw:
            return
        yield raw


def _lines(path: str, counter: ByteCounter | None = None, share=None):
    """(where, line) for each non-blank line, where = "path:line number" for error messages.
    Read as bytes and decoded per line, so a non-UTF-8 byte names its line. `share`: only this
    process's byte range (shares.Share), numbered from its first line."""
    if path not in (None, "-") and not Path(path).is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    f = sys.stdin.buffer if path in (None, "-") else open(path, "rb")
    try:
        for n, raw in enumerate(f if share is None else _share_lines(f, share), 1 if share is None else share.first_line):
            if counter is not None:
                counter.read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                                 "convert the file to UTF-8") from None
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield f"{path}:{n}", line
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _parquet_rows(path: str, columns: list[str], counter: ByteCounter | None = None, batch_rows: int = 8192,
                  share=None):
    """(where, values) per row of the given columns, read one record batch at a time. `share`:
    only this process's row groups (shares.Share)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet input needs pyarrow: pip install 'xenc_jax[parquet]'") from None
    if not Path(path).is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and others
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r}; the file has columns {names} "
                         "(choose with --columns A,B or --key)")
    if pf.metadata.num_rows == 0:
        raise ValueError(f"{path}: the Parquet file has no rows")
    row = 0 if share is None else share.first_line
    groups = None if share is None else list(range(share.start, share.end))
    if groups == []:
        return
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=groups):
        cols = [batch.column(c).to_pylist() for c in columns]
        for k, values in enumerate(zip(*cols)):
            where = f"{path}: row {row + k}"
            for c, v in zip(columns, values):
                if not isinstance(v, str):
                    raise ValueError(f"{where}: column {c!r} is {'null' if v is None else type(v).__name__}, "
                                     "not a string")
            yield where, values
        row += batch.num_rows
        if counter is not None and counter.total:
            counter.read = counter.total * row // max(pf.metadata.num_rows, 1)


def parquet_pair_columns(path: str, columns: list[str] | None) -> list[str]:
    if columns:
        if len(columns) != 2:
            raise ValueError(f"--columns takes two column names (A,B), got {columns}")
        return columns
    import pyarrow.parquet as pq
    names = pq.ParquetFile(path).schema_arrow.names if Path(path).is_file() else []
    for a, b in PAIR_KEYS:
        if a in names and b in names:
            return [a, b]
    if not Path(path).is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    raise ValueError(f"{path}: found no pair of text columns among {names}; name them with --columns A,B "
                     f"(known pairs: {PAIR_KEYS})")


def iter_pairs(path: str, fmt: str | None = None, columns: list[str] | None = None,
               counter: ByteCounter | None = None, share=None):
    """Pairs from TSV (text1<TAB>text2[<TAB>ignored...]), JSON Lines or Parquet, one at a time."""
    fmt = _fmt(path, fmt)
    if fmt == "parquet":
        for _, values in _parquet_rows(path, parquet_pair_columns(path, columns), counter, share=share):
            yield values
        return
    for where, line in _lines(path, counter, share):
        if fmt == "jsonl":
            yield _pair_from_json(_json(line, where), where)
        else:
            cols = line.split("\t")
            if len(cols) < 2:
                raise ValueError(f"{where}: expected two tab-separated texts, found {len(cols)} column(s)")
            yield cols[0], cols[1]


def iter_texts(path: str, fmt: str | None = None, key: str = "text", counter: ByteCounter | None = None,
               share=None):
    """One text per line (plain/TSV: first column), JSON Lines objects with `key`, or a Parquet column."""
    fmt = _fmt(path, fmt)
    if fmt == "parquet":
        for _, (text,) in _parquet_rows(path, [key], counter, share=share):
            yield text
        return
    for where, line in _lines(path, counter, share):
        if fmt != "jsonl":
            yield line.split("\t")[0]
            continue
        obj = _json(line, where)
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, dict) and key in obj:
            yield obj[key]
        else:
            raise ValueError(f"{where}: expected a JSON string or an object with {key!r}")


def _pair_from_json(obj, where: str):
    if isinstance(obj, list) and len(obj) == 2:
        return obj[0], obj[1]
    if isinstance(obj, dict):
        for a, b in PAIR_KEYS:
            if a in obj and b in obj:
                return obj[a], obj[b]
    raise ValueError(f"{where}: expected a [text1, text2] list or an object with one of the key pairs "
                     f"{PAIR_KEYS}, got {str(obj)[:80]!r}")


def _json(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e


def read_pairs(path: str, fmt: str | None = None, columns: list[str] | None = None) -> list[tuple[str, str]]:
    return list(iter_pairs(path, fmt, columns))


def read_texts(path: str, fmt: str | None = None, key: str = "text") -> list[str]:
    return list(iter_texts(path, fmt, key))


def read_jsonl(path: str) -> list[dict]:
    return [_json(line, where) for where, line in _lines(path)]

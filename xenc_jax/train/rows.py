"""Training/evaluation data files -> rows -> (texts, label): the one place where bytes become
texts and labels, so that a row comes back exactly as the file holds it or is a DataError naming
file:line (tests/test_fuzz_train_data.py checks this on random files).

Lines: a file is read as bytes and split on b"\\n" only; one b"\\r" before it (or before the end of
the file) belongs to a CRLF line end. So a carriage return, U+2028 or U+0085 inside a text stays in
that text instead of silently starting a new row. Each line is decoded on its own: invalid UTF-8 is
an error naming its line. A UTF-8 byte-order mark at the start of the file is dropped. A blank line
(ASCII whitespace only, tabs included) is skipped. CSV goes through the csv module (quoted fields may
span lines; a row is named by its first line) in strict mode: a stray quote is an error, not a row
that swallows the following lines.

Columns: a TSV/CSV row with more columns than the source reads (no header) or than its header is
an error, unless the source says extra_columns='ignore': a tab inside a text would otherwise cut
the text silently. Numbers are plain decimals (no '1_000', no non-ASCII digits, no booleans),
finite; texts are strings of valid Unicode (JSON escapes can make unpaired surrogates, which the
tokenizer rejects later with a bare TypeError).
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import math
import re
from pathlib import Path

FORMATS = ("tsv", "csv", "jsonl", "parquet", "hf_disk", "hf")  # the last three: train/sources.py
_BLANK = b" \t\r\n\f\v"
_NUMBER = re.compile(r"[ \t]*[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)[ \t]*",
                     re.ASCII | re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


class DataError(ValueError):
    """Bad training/evaluation data, reported before any model compute."""


def _show(value, n: int = 40) -> str:
    s = repr(value)
    return s if len(s) <= n else s[:n] + "..."


def _kind(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- lines

def _lines(path: Path, keep_ends: bool = False, at: tuple = (0, 1)):
    """(line number, bytes) of every line; without the line end unless keep_ends. at: (byte
    offset, its line number) to start from (line_index)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read the data file ({e.strerror or e})") from None
    with f:
        try:
            f.seek(at[0])
            for n, raw in enumerate(f, at[1]):
                if n == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                if not keep_ends:
                    raw = raw[:-1] if raw.endswith(b"\n") else raw
                    raw = raw[:-1] if raw.endswith(b"\r") else raw
                yield n, raw
        except OSError as e:
            raise DataError(f"{path}: reading the data file failed ({e.strerror or e})") from None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of "
                        "the line); save the file as UTF-8") from None


def _width(src) -> int | None:
    """Columns a header-less TSV/CSV row must have: the highest index read + 1."""
    keys = list(src.columns) + ([] if src.label_column is None else [src.label_column])
    if not keys or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return None  # a named column: _get says the file needs a header
    return max(keys) + 1


def _shape(row: list, header, src, where: str, fmt: str):
    """The row as a list (no header) or a dict (header), after the column-count check."""
    sep = "a tab" if fmt == "tsv" else "a comma or quote"
    if header is None:
        need = _width(src)
        if need is not None and len(row) > need and src.extra_columns != "ignore":
            raise DataError(f"{where}: {len(row)} columns, but the data reads only {need} (columns="
                            f"{tuple(src.columns)}, label_column={src.label_column!r}): {sep} inside a "
                            "text? Remove it (or use JSON Lines), or set extra_columns='ignore' when the "
                            "file really has extra columns")
        return row
    if len(row) != len(header) and (len(row) > len(header) or src.extra_columns != "ignore"):
        raise DataError(f"{where}: {len(row)} columns, but the header has {len(header)}: {sep} inside a "
                        "text, or a missing one? Fix the row, or set extra_columns='ignore' when rows "
                        "really differ in width")
    return dict(zip(header, row))


def _tsv_records(path: Path, at: tuple = (0, 1)):
    """(line number, fields or DataError) of every non-blank line. Plain split on tabs, no quote
    handling (STS-B has unbalanced quotes in its texts)."""
    for n, raw in _lines(path, at=at):
        if raw.strip(_BLANK):
            try:
                yield n, _decode(raw, f"{path}:{n}").split("\t")
            except DataError as e:
                yield n, e


def _csv_records(path: Path):
    """(first line number, fields or DataError) of every non-blank record. Lines keep their ends
    (a quoted field holds them exactly); bad bytes become surrogates (surrogateescape), found per
    record, since a record may span lines."""
    csv.field_size_limit(max(csv.field_size_limit(), 2 ** 31 - 1))  # a long text is not an error
    reader = csv.reader((raw.decode("utf-8", "surrogateescape") for _, raw in _lines(path, keep_ends=True)),
                        strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield start, DataError(f"{path}:{start}: not valid CSV ({e}); quote texts that hold commas, "
                                   "quotes or line breaks")
            continue
        if not any(c.strip(" \t\r\n\f\v") for c in row):
            continue
        if any(_SURROGATE.search(c) for c in row):
            yield start, DataError(f"{path}:{start}: not valid UTF-8; save the file as UTF-8")
        else:
            yield start, row


def _table_rows(src, path: Path, fmt: str, at: tuple = (0, 1), header=None):
    for n, row in (_tsv_records(path, at) if fmt == "tsv" else _csv_records(path)):
        try:
            if isinstance(row, DataError):
                raise row
            if src.header and header is None:
                header = row
                continue
            yield n, _shape(row, header, src, f"{path}:{n}", fmt)
        except DataError as e:
            if src.header and header is None:
                raise  # no header, no rows
            yield n, e


def json_lines(path: Path, at: tuple = (0, 1)):
    """(line number, JSON value or DataError) of every non-blank line of a JSON Lines file."""
    for n, raw in _lines(path, at=at):
        if not raw.strip(_BLANK):
            continue
        where = f"{path}:{n}"
        try:
            yield n, json.loads(_decode(raw, where))
        except DataError as e:
            yield n, e
        except RecursionError:
            yield n, DataError(f"{where}: JSON nested too deeply")
        except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
            yield n, DataError(f"{where}: not valid JSON ({e})")


def iter_rows(src, fmt: str, at: tuple = (0, 1), header=None):
    """(line number, row): row is a list (TSV/CSV without header, a JSON array), a dict, another
    JSON value, or a DataError for a line that could not be read. at, header: TSV and JSON Lines
    from a data row that line_index found, with the file's header read there."""
    if not src.path:
        raise DataError("no data path given")
    path = Path(src.path)
    if fmt in ("parquet", "hf_disk", "hf"):  # a file or a directory of shards / a datasets folder / an id
        from .sources import table_rows
        return table_rows(path, fmt, DataError, src)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if src.extra_columns not in ("error", "ignore"):
        raise DataError(f"extra_columns must be 'error' or 'ignore', got {src.extra_columns!r}")
    return json_lines(path, at) if fmt == "jsonl" else _table_rows(src, path, fmt, at, header)


def line_index(src, fmt: str, every: int) -> tuple[int, list, list | None]:
    """(data rows, [(byte offset, line number) of data rows 0, every, 2 * every, ...], header) of
    a TSV or JSON Lines file (one row a line), in one pass: where iter_rows(src, fmt, at, header)
    starts reading row k * every without the rows before (streaming; 16 bytes per `every` rows).
    Data rows as iter_rows counts them: non-blank lines, after a TSV header."""
    path = Path(src.path)
    header = None
    if fmt == "tsv" and src.header:
        for _, first in _table_rows(dataclasses.replace(src, header=False, extra_columns="ignore"), path, fmt):
            header = first
            break
        if isinstance(header, DataError):
            raise header
    marks, rows, pos, skip_header = [], 0, 0, header is not None
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                at, pos = pos, pos + len(raw)
                body = raw[len(codecs.BOM_UTF8):] if n == 1 and raw.startswith(codecs.BOM_UTF8) else raw
                if not body.strip(_BLANK):
                    continue
                if skip_header:
                    skip_header = False
                    continue
                if rows % every == 0:
                    marks.append((at, n))
                rows += 1
    except OSError as e:
        raise DataError(f"{path}: reading the data file failed ({e.strerror or e})") from None
    return rows, marks, header


# ----------------------------------------------------------------------------- values

# get_column's hint for a row with too few columns, by the source's format
_SPLIT_HINT = {"tsv": "is the file tab-separated as expected (format tsv)?",
               "csv": "is the file comma-separated as expected (format csv), with quotes around fields that hold "
                      "commas?"}


def get_column(row, key, where: str, src=None):
    """row[key]; `src` (the DataSource) names its format in the hint of a row that is too short."""
    if isinstance(row, dict):
        if key not in row:
            raise DataError(f"{where}: missing column {key!r} (the row has {_show(sorted(map(str, row))[:8], 200)})")
        return row[key]
    if not isinstance(row, list):
        raise DataError(f"{where}: the row is a JSON {_kind(row)} ({_show(row)}), not an object")
    if isinstance(key, str):
        raise DataError(f"{where}: column {key!r} is a name, but this row has no names (a file without "
                        "header, or a JSON array); use 0-based column indices or header=True")
    if key >= len(row):
        hint = _SPLIT_HINT.get(_format_of(src), "does every row hold all the columns the config names?")
        raise DataError(f"{where}: missing column {key} (0-based): the row has only {len(row)} column(s); {hint}")
    return row[key]


def _format_of(src) -> str | None:
    """src's resolved format, for an error message only (None: not known)."""
    try:
        return src.resolved_format() if src is not None else None
    except (DataError, OSError, ValueError):
        return None


def check_text(value, column, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} is a JSON {_kind(value)} ({_show(value)}), not a text")
    if (m := _SURROGATE.search(value)) is not None:
        raise DataError(f"{where}: column {column!r} holds an unpaired surrogate (\\u{ord(m.group()):04x}), "
                        "which is not valid Unicode")
    return value


def number(raw, where: str, what: str = "label") -> float:
    """A finite float from a JSON number or a string holding a plain decimal."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise DataError(f"{where}: {what} {_show(raw)} is a JSON {_kind(raw)}, not a number")
    if isinstance(raw, str) and not _NUMBER.fullmatch(raw):
        raise DataError(f"{where}: {what} {_show(raw)} is not a number (give label_map for class names)")
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond float range
        value = math.inf
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {_show(raw)} is not finite")
    return value


def _json_list(value, where: str, what: str):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise DataError(f"{where}: {what} must be a JSON list, got {_show(value)}") from None
    if not isinstance(value, list):
        raise DataError(f"{where}: {what} must be a list, got a JSON {_kind(value)} ({_show(value)})")
    return value


def _label(raw, src, where: str):
    # triplets with a list: the teacher's scores of the positive and each negative (xenc mine's
    # n-tuple-scores rows), what MarginMSE / ListNet distil from
    if src.kind == "lists" or (src.kind == "triplets" and (isinstance(raw, list) or
                                                           (isinstance(raw, str) and raw.lstrip().startswith("[")))):
        grades = _json_list(raw, where, "labels (one grade per document)")
        return [number(x, where, "label") * src.label_scale for x in grades]
    if src.label_map is not None:
        key = raw if isinstance(raw, str) else str(raw)
        if key not in src.label_map:
            raise DataError(f"{where}: label {_show(raw)} is not one of {sorted(src.label_map)} "
                            "(label_map); add it to skip_labels to drop such rows")
        return int(src.label_map[key])
    return number(raw, where) * src.label_scale


def parse_row(row, src, where: str):
    """(texts, label, skipped) of one row; texts: a tuple of strings (lists: (query, [docs]))."""
    if isinstance(row, DataError):
        raise row
    if src.kind == "lists":
        query = check_text(get_column(row, src.columns[0], where, src), src.columns[0], where)
        docs = _json_list(get_column(row, src.columns[1], where, src), where, "documents")
        if not docs:
            raise DataError(f"{where}: the candidate list is empty")
        texts = (query, [check_text(d, f"{src.columns[1]}[{i}]", where) for i, d in enumerate(docs)])
    else:
        texts = tuple(check_text(get_column(row, c, where, src), c, where) for c in src.columns)
    if src.label_column is None:
        return texts, None, False
    raw = get_column(row, src.label_column, where, src)
    if raw in src.skip_labels:
        return texts, None, True
    label = _label(raw, src, where)
    if src.kind == "lists" and len(label) != len(texts[1]):
        raise DataError(f"{where}: {len(texts[1])} documents but {len(label)} labels")
    if src.kind == "triplets" and isinstance(label, list) and len(label) != len(texts) - 1:
        raise DataError(f"{where}: {len(texts) - 1} documents (positive and negatives) but {len(label)} scores")
    return texts, label, False

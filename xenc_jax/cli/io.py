"""Reading pairs, texts and queries from TSV, plain text, JSON Lines, Parquet or stdin, and
writing results, for the CLI.

Every reader yields exactly the rows of its input, or raises ValueError naming the file and the
line (Parquet: the row). tests/test_fuzz_inputs.py checks this against random inputs. The rules:
- A line ends at \\n; one trailing \\r (CRLF files) is dropped, and so is a UTF-8 byte order mark
  at the start of the file. A line is decoded as UTF-8 on its own, so a bad byte names its line.
- A blank line (only spaces, tabs, \\r, \\v, \\f: ASCII whitespace, as shares.count_text counts
  items) is skipped everywhere. An item's index counts the items, not the lines.
- TSV pairs: exactly two columns per line, unless `--columns A,B` (1-based column numbers, as
  `cut -f`) picks two of them. A third column is an error: it would be a passage holding a tab.
  `header=True` (`--header`): the first non-blank line names the columns and is not a pair;
  `--columns` may then name them. Without it, a first line whose texts are all column names
  (query, passage, ...) is refused: scored, it would shift every index by one. `header=False`
  scores it.
- A \r alone inside a TSV line that joins what look like whole rows (an old Mac file, lines
  ended by \r) is refused, --columns or not: the texts of two lines would be paired. The same for
  a TSV text line read with `--key N`.
- Texts read as whole lines (`encode`, `rank --documents`, `search`'s TSV queries): a file with
  no \n at all whose text holds a \r alone between non-blank text is refused (an old Mac file
  would be ONE text). A \r inside a text of a file that has \n line ends is kept, as ever: a file
  with \n line ends is not an old Mac file. (No file of the real data in /work/shared/data holds
  a lone \r at all.)
- CSV input (a `.csv` name) is refused: its quoted fields may hold commas, quotes and line breaks.
  A `.csv` file whose first line holds a tab is TSV (the STS Benchmark's files are) and read so.
- Texts (`encode`, `rank --documents`): a whole line, tabs included. A `.tsv` file is the
  exception for `encode`: a line with a tab there needs `--key N` (the column to embed).
  `encode` (and `mine --corpus`, `search --queries` TSV) take the header rule of TSV pairs: a
  first line of two or more tab-separated column names only is refused; `header=True` skips it
  (`--key` may then name the column), `header=False` reads it as a text.
- Every JSON value read as a text must be a JSON string (not a number, null, list or object),
  and valid Unicode (a lone surrogate escape like "\\ud800" is refused: no tokenizer takes it).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from .tsv_lines import (BLANK, OLD_MAC, PAIR_KEYS, cr_only_file, header_picks, old_mac, refuse_header_like,
                        tab_columns, text_header_pick)

PARQUET_INSTALL = "pip install 'xenc_jax[parquet]' (or: pip install pyarrow)"


class CliError(Exception):
    """A user error the CLI reports in one line, without a traceback."""


def pair_format(path: str, fmt: str | None) -> str:
    """Pair input format: Parquet, JSON Lines, else TSV (stdin too)."""
    if fmt:
        return fmt
    name = str(path)
    if name.lower().endswith(".parquet"):   # suffixes case aside (DATA.PARQUET), as writers.output_format
        return "parquet"
    if name.lower().endswith(".csv") and not _tab_in_first_line(name):
        # read as TSV, a CSV row would be one text with its quotes and commas (the STS Benchmark's
        # .csv files are tab-separated: read as TSV, as ever)
        raise CliError(f"{path}: CSV input is not read (a quoted field may hold commas, quotes and line breaks); "
                       "convert it to JSON Lines, e.g. pandas.read_csv(F, dtype=str, keep_default_na=False)"
                       ".to_json(OUT, orient='records', lines=True, force_ascii=False), or Parquet; "
                       "a file that is not CSV: rename it (.tsv, .txt) or name its format (--input-format, "
                       "--corpus-format, --queries-format)")
    return "jsonl" if name.lower().endswith((".jsonl", ".json")) else "tsv"


def _tab_in_first_line(path: str) -> bool:
    """A tab in the first non-blank line (a missing file: True, for its own error later)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    return b"\t" in raw
    except OSError:
        return True
    return True  # empty: nothing to misread


def text_format(path: str, fmt: str | None) -> str:
    """Text input format: like pair_format, but only a `.tsv` name means TSV; anything else (a .txt,
    stdin) is plain text, one whole line per text."""
    if fmt:
        return fmt
    f = pair_format(path, None)
    return f if f != "tsv" or str(path).lower().endswith(".tsv") else "text"


def require_pyarrow(what: str) -> None:
    """Before any model loads: Parquet needs pyarrow, an optional dependency."""
    import importlib
    try:
        importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise CliError(f"{what} needs pyarrow, which is not installed: {PARQUET_INSTALL}") from None


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
    if path not in (None, "-") and Path(path).is_dir():
        raise IsADirectoryError(f"input {path} is a directory; give the input file")
    if path not in (None, "-") and Path(path).exists() and not Path(path).is_file():  # <(cmd), /dev/stdin
        raise CliError(f"input {path} is a pipe or device, not a file: inputs are read by position (to resume, to "
                       "split among processes); pipe the data to '-' (stdin) where the command reads it, or save it "
                       "to a file")
    if path not in (None, "-") and not Path(path).is_file():
        raise FileNotFoundError(f"input file {path} does not exist")


TEXT_ARGS = ("query", "prompt", "query_prompt", "corpus_prompt")  # flags whose value is text, not a path


def check_text_args(args) -> None:
    """Before any model is loaded: a text flag (--query, --prompt, ...) holding bytes that are not
    UTF-8 (Python keeps them as lone surrogates, e.g. from a Latin-1 terminal) is a one-line error,
    not the tokenizer's "TextInputSequence must be str" after the model loaded."""
    for name in TEXT_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                c = ord(value[e.start])   # 0xDC80..0xDCFF: an undecodable argv byte (surrogateescape)
                what = f"a byte that is not UTF-8 (0x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else \
                    f"a lone surrogate (\\u{c:04x}"
                raise CliError(f"--{name.replace('_', '-')} holds {what} at character {e.start}); give UTF-8 text "
                               "(check the terminal's or the script's encoding)") from None


def check_output(path: str | None, *inputs: str | None) -> None:
    """Before any model is loaded: an output that is a directory (found only when the finished
    output was moved into place, after all the work) or one of the inputs (replaced by the
    results: the input lost) is a one-line error."""
    if path in (None, "-"):
        return
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--output {path} is a directory; give a file name in it, e.g. {out / 'out.jsonl'}")
    for name in inputs:
        if name not in (None, "-") and out.exists() and Path(name).exists() and out.samefile(name):
            raise ValueError(f"--output {path} is the input file {name}: the results would replace it; "
                             "write them to another file")


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


def read_lines(path: str, counter: ByteCounter | None = None, share=None, whole_texts: bool = False):
    """(where, line) for each non-blank line, where = "path:line number" for error messages.
    Read as bytes and decoded per line, so a non-UTF-8 byte names its line. `share`: only this
    process's byte range (shares.Share), numbered from its first line. `whole_texts`: the lines
    are texts, so a file of texts ended by \r alone (no \n at all) is refused (cr_only_file)."""
    stdin = path in (None, "-")
    check_input(path)
    f = sys.stdin.buffer if stdin else open(path, "rb")
    name = "<stdin>" if stdin else path
    first = 1 if share is None else share.first_line
    try:
        for n, raw in enumerate(f if share is None else _share_lines(f, share), first):
            if counter is not None:
                counter.read += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{name}:{n}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                                 "convert the file to UTF-8") from None
            if n == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a byte order mark (Windows tools write one), not part of the first text
            ended = line.endswith("\n")
            line = line[:-1] if ended else line
            line = line[:-1] if line.endswith("\r") else line
            if whole_texts and n == 1 and not ended and "\r" in line:
                cr_only_file(f"{name}:{n}", line)
            if line.strip(BLANK):
                yield f"{name}:{n}", line
    finally:
        if not stdin:
            f.close()


# ----------------------------------------------------------------------------- JSON values

def _kind(v) -> str:
    """A JSON value's type as a user who wrote the JSON would name it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        text = repr(v)
        return f"a number ({text[:20] + '...' if len(text) > 20 else text})"
    return {list: "a list", dict: "an object", str: "a string"}.get(type(v), type(v).__name__)


def _shown(v) -> str:
    """A JSON value as its JSON text (null, not Python's None), cut to 80 characters."""
    try:
        text = json.dumps(v, ensure_ascii=False)
    except (RecursionError, ValueError):  # nested too deeply to write back
        text = _kind(v)
    return text if len(text) <= 80 else text[:77] + "..."


def json_text(v, where: str, what: str) -> str:
    """v if it is a string of valid Unicode, else the error naming the row and the field."""
    if type(v) is not str:
        raise ValueError(f"{where}: {what} is {_kind(v)}, not a string; write it as a JSON string")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}: {what} holds a lone surrogate (\\u{ord(v[e.start]):04x}), not valid "
                             "Unicode text; fix that \\u escape") from None
    return v


def _json(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ValueError(f"{where}: not readable JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{where}: not readable JSON (nested too deeply)") from None


def _pair_from_json(obj, where: str, keys: list[str] | None = None):
    if keys is not None:
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise ValueError(f"{where}: expected an object with the keys {keys[0]!r} and {keys[1]!r} (--columns), "
                             f"got {_shown(obj)}")
        return json_text(obj[keys[0]], where, repr(keys[0])), json_text(obj[keys[1]], where, repr(keys[1]))
    if isinstance(obj, list) and len(obj) == 2:
        return json_text(obj[0], where, "item 0"), json_text(obj[1], where, "item 1")
    if isinstance(obj, dict):
        for a, b in PAIR_KEYS:
            if a in obj and b in obj:
                return json_text(obj[a], where, repr(a)), json_text(obj[b], where, repr(b))
    raise ValueError(f"{where}: expected a [text1, text2] list or an object with one of the key pairs "
                     f"{PAIR_KEYS}, got {_shown(obj)}")


# ----------------------------------------------------------------------------- Parquet

def _parquet_file(path: str):
    require_pyarrow("Parquet input")
    import pyarrow.parquet as pq
    check_input(path)
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and others
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def _parquet_rows(path: str, columns: list[str], counter: ByteCounter | None = None, batch_rows: int = 8192,
                  share=None):
    """(where, values) per row of the given columns, read one record batch at a time. `share`:
    only this process's row groups (shares.Share)."""
    import pyarrow as pa
    pf = _parquet_file(path)
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r}; the file has columns {names} "
                         "(choose with --columns A,B or --key)")
    twice = [c for c in columns if names.count(c) > 1]
    if twice:
        raise ValueError(f"{path}: the column name {twice[0]!r} appears {names.count(twice[0])} times; "
                         "rename the columns so that each name is used once")
    if pf.metadata.num_rows == 0:
        raise ValueError(f"{path}: the Parquet file has no rows")
    row = 0 if share is None else share.first_line
    groups = None if share is None else list(range(share.start, share.end))
    if groups == []:
        return
    batches = pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=groups)
    while True:
        try:
            batch = next(batches, None)
            cols = None if batch is None else [_column_values(batch.column(c)) for c in columns]
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path}: rows from {row} on: not readable ({e})") from None
        if batch is None:
            return
        for k, values in enumerate(zip(*cols)):
            where = f"{path}: row {row + k}"
            for c, v in zip(columns, values):
                if isinstance(v, _NotUTF8):
                    raise ValueError(f"{where}: column {c!r} is not valid UTF-8 (byte {v.start}); convert it to UTF-8")
                if not isinstance(v, str):
                    raise ValueError(f"{where}: column {c!r} is {'null' if v is None else type(v).__name__}, "
                                     "not a string")
            yield where, values
        row += batch.num_rows
        if counter is not None and counter.total:
            counter.read = counter.total * row // max(pf.metadata.num_rows, 1)


class _NotUTF8:
    """A Parquet string value whose bytes are not UTF-8 (pyarrow does not check on write)."""

    def __init__(self, start: int):
        self.start = start


def _column_values(col) -> list:
    try:
        return col.to_pylist()
    except UnicodeDecodeError:  # decode value by value, so that the row loop names the bad row
        import pyarrow as pa
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        raw = col.view(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()).to_pylist()

    def decode(v):
        try:
            return v if v is None else v.decode("utf-8")
        except UnicodeDecodeError as e:
            return _NotUTF8(e.start)
    return [decode(v) for v in raw]


def parquet_pair_columns(path: str, columns: list[str] | None) -> list[str]:
    if columns:
        return columns
    names = _parquet_file(path).schema_arrow.names
    for a, b in PAIR_KEYS:
        if a in names and b in names:
            return [a, b]
    raise ValueError(f"{path}: found no pair of text columns among {names}; name them with --columns A,B "
                     f"(known pairs: {PAIR_KEYS})")


# ----------------------------------------------------------------------------- columns

def pair_columns(path: str, fmt: str | None, columns: list[str] | None, header: bool | None = None) -> list | None:
    """--columns for this input, checked before any model loads: two names (JSONL keys, Parquet
    columns) or, for TSV, two 1-based column numbers returned 0-based (with `header`: numbers or
    names of the header line, returned as given and resolved when the header is read)."""
    tsv = pair_format(path, fmt) == "tsv"
    if header and not tsv:
        raise ValueError("--header is for TSV input: JSON Lines and Parquet name their columns already")
    if columns is None:
        return None
    if len(columns) != 2 or not all(columns):
        raise ValueError(f"--columns takes two columns A,B, got {','.join(columns)!r}")
    if not tsv or header:
        return columns
    if not all(c.isdigit() and int(c) >= 1 for c in columns):
        raise ValueError(f"for TSV input --columns takes two column numbers, 1-based as in `cut -f` (e.g. "
                         f"--columns 1,3), got {','.join(columns)!r}; to name columns, give --header (the file's "
                         "first line names them), or use JSON Lines or Parquet")
    return [int(c) - 1 for c in columns]


def text_column(path: str, fmt: str | None, key: str | None, header: bool | None = False,
                flags: tuple[str, str] = ("--key", "--header")) -> int | str | None:
    """For a TSV text input: the 0-based column `--key N` chose, or None (whole lines; a tab is
    then an error). "text", the default key, chooses nothing. With `header`, a key that is not a
    number is a name of the header line, returned as given (resolved when the header is read)."""
    key_flag, header_flag = flags
    fmt = text_format(path, fmt)
    if header and fmt in ("jsonl", "parquet"):
        raise ValueError(f"{header_flag} is for TSV or text input: JSON Lines and Parquet name their columns already")
    if fmt != "tsv" or key is None:
        return None
    if key.isdigit() and int(key) >= 1:
        return int(key) - 1
    if header:
        return key
    if key == "text":
        return None
    raise ValueError(f"for TSV input {key_flag} takes the text's column number (1-based, as in `cut -f`), "
                     f"got {key!r}; to name the column, give {header_flag} (the file's first line names it), or use "
                     "--input-format text to embed whole lines")


def _tsv_pairs(path: str, columns, header: bool | None, counter, share):
    picks = pair_columns(path, "tsv", columns, header)
    at_start = share is None or share.first_line == 1  # a header is the file's first line, not a share's
    first = at_start
    for where, line in read_lines(path, counter, share):
        if first:
            first = False
            if header:
                if "\r" in line and old_mac(line, 2):
                    raise ValueError(f"{where}: a carriage return (\\r) inside the header line: {OLD_MAC}")
                picks = header_picks(where, line, columns)
                continue
            if header is None:
                refuse_header_like(where, line, picks)
        if picks is not None:
            if "\r" in line and old_mac(line, max(picks) + 1):
                raise ValueError(f"{where}: a carriage return (\\r) between what look like whole rows: {OLD_MAC}; "
                                 "a text holding a \\r needs JSON Lines")
            yield tuple(tab_columns(line, where, picks))
            continue
        cols = line.split("\t")
        if len(cols) != 2 and "\r" in line:  # not --columns: it would pair texts of two lines
            raise ValueError(f"{where}: {len(cols)} tab-separated column(s) and a carriage return (\\r) inside "
                             f"the line: {OLD_MAC}")
        if len(cols) < 2:
            raise ValueError(f"{where}: expected two tab-separated texts, found {len(cols)} column(s)")
        if len(cols) > 2:
            raise ValueError(f"{where}: {len(cols)} tab-separated columns, expected two (text1<TAB>text2): "
                             "a text holding a tab would be cut. Choose two columns with --columns A,B (1-based "
                             "column numbers, e.g. --columns 1,2), or write JSON Lines")
        yield cols[0], cols[1]


# ----------------------------------------------------------------------------- readers

def iter_pairs(path: str, fmt: str | None = None, columns: list[str] | None = None,
               counter: ByteCounter | None = None, share=None, header: bool | None = None):
    """Pairs from TSV (text1<TAB>text2, or the two `--columns`; `header`: see the module's rules),
    JSON Lines or Parquet, one at a time."""
    fmt = pair_format(path, fmt)
    if fmt == "parquet":
        for _, values in _parquet_rows(path, parquet_pair_columns(path, pair_columns(path, fmt, columns, header)),
                                       counter, share=share):
            yield values
        return
    if fmt == "tsv":
        yield from _tsv_pairs(path, columns, header, counter, share)
        return
    picks = pair_columns(path, fmt, columns, header)
    for where, line in read_lines(path, counter, share):
        yield _pair_from_json(_json(line, where), where, picks)


def check_first(items) -> None:
    """Before any model loads: read an input's first item, so that a missing column, a header or
    a bad first row is reported in a second, not after a big model loaded (the job reads it again)."""
    it = iter(items)
    try:
        next(it, None)
    finally:
        getattr(it, "close", lambda: None)()


def iter_texts(path: str, fmt: str | None = None, key: str = "text", counter: ByteCounter | None = None,
               share=None, header: bool | None = False, flags: tuple[str, str] = ("--key", "--header")):
    """One text per line (a whole line, tabs included; a .tsv file: the `--key N` column), JSON
    Lines strings or objects with `key`, or a Parquet column. `header` (TSV and text): True skips
    the first line (`key` may name a column of it), None refuses a first line of column names
    only, False (the default, as `rank --documents`) reads it. `flags`: the command's --key and
    --header options, for messages."""
    fmt = text_format(path, fmt)
    if fmt == "parquet":
        for _, (text,) in _parquet_rows(path, [key], counter, share=share):
            yield text
        return
    if fmt == "jsonl":
        yield from _jsonl_texts(path, key, counter, share)
        return
    yield from _line_texts(path, fmt, key, counter, share, header, flags)


def _jsonl_texts(path: str, key: str, counter, share):
    for where, line in read_lines(path, counter, share):
        obj = _json(line, where)
        if isinstance(obj, dict) and key in obj:
            yield json_text(obj[key], where, repr(key))
        elif isinstance(obj, str):
            yield json_text(obj, where, "the line")
        else:
            raise ValueError(f"{where}: expected a JSON string or an object with {key!r}, got {_kind(obj)}")


def _line_texts(path: str, fmt: str, key: str, counter, share, header: bool | None, flags: tuple[str, str]):
    """Texts of a plain text or TSV file (see iter_texts)."""
    key_flag, header_flag = flags
    col = text_column(path, fmt, key, header, flags)
    first = share is None or share.first_line == 1  # a header is the file's first line, not a share's
    for where, line in read_lines(path, counter, share, whole_texts=True):
        if first:
            first = False
            if header:
                col = text_header_pick(where, line, col, key_flag) if isinstance(col, str) else col
                continue
            if header is None:
                refuse_header_like(where, line, None if col is None else [col], "a text", header_flag,
                                   f"{key_flag} may then name the column", "read it as a text")
        if col is not None:
            if "\r" in line and old_mac(line, max(col + 1, 2)):  # 2: a one-column piece is any text
                raise ValueError(f"{where}: a carriage return (\\r) between what look like whole rows: {OLD_MAC}; "
                                 "a text holding a \\r needs JSON Lines")
            yield tab_columns(line, where, [col])[0]
        elif fmt == "tsv" and "\t" in line:
            raise ValueError(f"{where}: a tab in a .tsv line: choose the column to embed with {key_flag} N "
                             "(1-based), or keep whole lines with --input-format text")
        else:
            yield line


def iter_queries(path: str, counter: ByteCounter | None = None):
    """`rank --input`: (qid, query, documents) per JSON line. The qid is always a string: the
    given one (a string or an integer), else the query's 0-based index in the file."""
    seen: dict[str, str] = {}
    for n, (where, line) in enumerate(read_lines(path, counter)):
        it = _json(line, where)
        if not isinstance(it, dict) or "query" not in it:
            raise ValueError(f"{where}: expected an object {{'query': str, 'documents': [str, ...]}}, "
                             f"got {_shown(it)}")
        key = "documents" if "documents" in it else "candidates"
        docs = it.get(key)
        if not isinstance(docs, list):
            raise ValueError(f"{where}: 'documents' is {'missing' if key not in it else _kind(docs)}; "
                             "give a list of strings")
        if not docs:
            raise ValueError(f"{where}: the query has no documents; give at least one, or drop the line")
        query = json_text(it["query"], where, "'query'")
        docs = [json_text(d, where, f"{key}[{i}]") for i, d in enumerate(docs)]
        qid = it.get("qid", n)
        if type(qid) is int:
            qid = str(qid)
        qid = json_text(qid, where, "'qid' (a string or an integer)")
        if qid in seen:
            raise ValueError(f"{where}: qid {qid!r} was already used at {seen[qid]}; each query needs its own qid")
        seen[qid] = where
        yield qid, query, docs


def read_pairs(path: str, fmt: str | None = None, columns: list[str] | None = None,
               header: bool | None = None) -> list[tuple[str, str]]:
    return list(iter_pairs(path, fmt, columns, header=header))


def read_texts(path: str, fmt: str | None = None, key: str = "text") -> list[str]:
    return list(iter_texts(path, fmt, key))


def read_jsonl(path: str) -> list:
    return [_json(line, where) for where, line in read_lines(path)]


def read_json_objects(path: str, what: str):
    """(where, object) per JSON line (search's corpus and queries)."""
    for where, line in read_lines(path):
        obj = _json(line, where)
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object ({what}), got {_kind(obj)}")
        yield where, obj

"""TSV lines and their columns, line by line (no file access): the known column names, the
header rule (a first line of column names is refused unless --header / --no-header says what it
is), the columns a header line names, and old Mac files (lines ended by \\r alone). cli/io.py's
readers apply these; its docstring states the reading rules."""
from __future__ import annotations

PAIR_KEYS = [("query", "document"), ("query", "passage"), ("query", "text"), ("text1", "text2"),
             ("sentence1", "sentence2"), ("question1", "question2")]
BLANK = " \t\r\n\x0b\x0c"  # bytes.strip()'s whitespace: a line of only these is blank
# A TSV first line made only of these (case aside) names columns: no one scores the pair ("query", "passage").
HEADER_NAMES = frozenset(n for pair in PAIR_KEYS for n in pair) | {
    "anchor", "positive", "negative", "label", "labels", "score", "id", "qid", "pid", "docid", "doc_id", "_id",
    "query_id", "query-id", "corpus_id", "corpus-id", "title", "premise", "hypothesis", "sentence", "sentence_a",
    "sentence_b", "text_a", "text_b", "question", "answer", "context", "doc", "docs", "documents", "passages"}


OLD_MAC = ("the file seems to end its lines with \\r alone (old Mac style); convert them to \\n (e.g. tr "
           "'\\r' '\\n')")


def cr_only_file(where: str, line: str) -> None:
    """Line 1 without a \n is the whole file: a \r alone between non-blank texts there ends lines
    (an old Mac file), or the file's texts would be read as ONE text."""
    if sum(1 for r in line.split("\r") if r.strip(BLANK)) >= 2:
        raise ValueError(f"{where}: the file has no \\n line ends but a carriage return (\\r) between texts: "
                         f"{OLD_MAC}; a single text holding a \\r needs JSON Lines")


def old_mac(line: str, need: int) -> bool:
    """A line that is several rows of at least `need` columns joined by a \\r alone (lines ended by \\r)."""
    rows = [r for r in line.split("\r") if r.strip(BLANK)]
    return len(rows) >= 2 and all(r.count("\t") + 1 >= need for r in rows)


def text_header_pick(where: str, line: str, key: str, key_flag: str) -> int | None:
    """The 0-based column a header line names `key` in; a one-column header (its name or the
    default key "text"): whole lines (None), so a line holding a tab stays an error, not a text
    cut at the tab (column 0 of "text" read "hello<TAB>world" as "hello")."""
    names = [c.strip() for c in line.split("\t")]
    if len(names) == 1 and key in ("text", names[0]):
        return None
    found = [i for i, n in enumerate(names) if n == key]
    if len(found) == 1:
        return found[0]
    raise ValueError(f"{where}: the header {'names ' + repr(key) + ' twice' if found else 'has no column ' + repr(key)}"
                     f"; its columns are {names[:12]}: choose the text's column with {key_flag} (a name or a "
                     "1-based number)")


def tab_columns(line: str, where: str, picks: list[int]) -> list[str]:
    cols = line.split("\t")
    if len(cols) <= max(picks):
        raise ValueError(f"{where}: {len(cols)} tab-separated column(s), but column {max(picks) + 1} was chosen")
    return [cols[i] for i in picks]


def header_picks(where: str, line: str, columns: list[str] | None) -> list[int] | None:
    """The 0-based columns `--columns` names in this header line (a number is a column number);
    no --columns: a known pair of names (as for JSON Lines), or None for a two-column header."""
    names = [c.strip() for c in line.split("\t")]
    if columns is None:
        if len(names) == 2:
            return None
        columns = next(([a, b] for a, b in PAIR_KEYS if a in names and b in names), None)
        if columns is None:
            raise ValueError(f"{where}: the header has {len(names)} columns {names[:8]} and no known pair of text "
                             f"columns; choose two with --columns A,B (names or 1-based numbers)")
    picks = []
    for c in columns:
        found = [int(c) - 1] if c.isdigit() and int(c) >= 1 else [i for i, n in enumerate(names) if n == c]
        if len(found) != 1:
            raise ValueError(f"{where}: the header {'names ' + repr(c) + ' twice' if found else 'has no column ' + repr(c)}"
                             f"; its columns are {names[:12]}")
        picks.append(found[0])
    return picks


def refuse_header_like(where: str, line: str, picks: list[int] | None, what: str = "a pair to score",
                        flag: str = "--header", then: str = "--columns may then name columns",
                        read: str = "score it as a pair") -> None:
    """A first line whose texts (the picked columns, else all) are all column names, two at least
    in the line, is a header, not a pair or a text (read as one, every index after it would be off
    by one against the user's table). One name alone ("question") may well be a text."""
    cols = line.split("\t")
    texts = [cols[i] for i in picks] if picks is not None and len(cols) > max(picks) else cols
    names = [c.strip().lower() in HEADER_NAMES for c in cols]
    if sum(names) >= 2 and all(t.strip().lower() in HEADER_NAMES for t in texts):
        shown = texts if len(texts) >= 2 else cols
        raise ValueError(f"{where}: the first line ({', '.join(map(repr, shown[:4]))}) names columns, it is not "
                         f"{what}: give {flag} to skip it ({then}), or --no-{flag[2:]} to {read}")

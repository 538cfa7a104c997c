"""Generated input files and their expected rows, for tests/test_fuzz_inputs.py: hypothesis
strategies that build a file line by line from a structure (texts, pairs, JSON values, queries),
and the oracle that says, from that structure alone and the rules documented in
xenc_jax/cli/io.py, which rows a reader must return or at which line it must fail."""
from __future__ import annotations

import io
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from hypothesis import event
from hypothesis import strategies as st

from xenc_jax.cli import io as cli_io

BLANK = " \t\r\n\x0b\x0c"
SPECIAL = "\r\x00\ufeff\u2028\u2029\x85\x0b\x0c \t\xa0\u200b\U0001F600\u00e9\x1c\x1e"
BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82"]
HUGE = 1 << 20  # a 1 MB line


def chars(exclude: str):
    return st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters=exclude),
                     st.sampled_from([c for c in SPECIAL if c not in exclude]))


def texts(exclude: str = "\t\n", max_size: int = 24):
    return st.text(chars(exclude), max_size=max_size)


# ----------------------------------------------------------------------------- the oracle

@dataclass
class Line:
    """One line of a generated file. `fields`: the texts the line is made of ("\t".join(fields)
    for TSV and plain text); `make(fields)` is the row the reader must return. The reader's two
    documented edits touch only the line's first and last characters, so the oracle applies them
    to fields[0] and fields[-1]. JSON lines have a fixed `row` (JSON never starts with a BOM nor
    ends with \r)."""
    content: str
    row: object = None
    fields: list | None = None
    make: object = None
    bad: bool = False            # the reader must raise, naming this line
    raw: bytes | None = None     # bytes written instead of content (invalid UTF-8): an error
    term: str = "\n"


@dataclass
class File:
    lines: list[Line] = field(default_factory=list)
    bom: bool = False

    def data(self) -> bytes:
        out = [b"\xef\xbb\xbf"] if self.bom else []
        for ln in self.lines:
            out.append((ln.raw if ln.raw is not None else ln.content.encode("utf-8")) + ln.term.encode())
        return b"".join(out)

    def visible(self):
        """(line number, line, the row the reader returns or None for a bad line) for each line
        the reader does not skip, up to and including the first bad one."""
        for n, ln in enumerate(self.lines, 1):
            if ln.raw is not None:
                yield n, ln, None
                return
            vis, fields = ln.content, None if ln.fields is None else list(ln.fields)
            if n == 1 and not self.bom and vis.startswith("\ufeff"):  # read as the file's BOM
                vis = vis[1:]
                if fields is not None:
                    fields[0] = fields[0][1:]
            if ln.term != "\r\n" and vis.endswith("\r"):  # read as a CRLF ending
                vis = vis[:-1]
                if fields is not None:
                    fields[-1] = fields[-1][:-1]
            if not vis.strip(BLANK):
                continue
            if ln.bad:
                yield n, ln, None
                return
            yield n, ln, ln.make(fields) if fields is not None else ln.row

    def cr_only(self) -> bool:
        """A file of texts with no \n at all whose one line holds a \r alone between non-blank
        texts: an old Mac file, refused at line 1 (cli/tsv_lines.py cr_only_file) rather than read as ONE
        text. The line as the reader sees it: BOM and one trailing \r dropped."""
        data = self.data()
        if b"\n" in data:
            return False
        line = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
        line = line[:-1] if line.endswith("\r") else line
        return sum(1 for r in line.split("\r") if r.strip(BLANK)) >= 2

    def expected_texts(self):
        """expected() for a file read as whole texts (read_lines(whole_texts=True))."""
        return ("error", 1) if self.cr_only() else self.expected()

    def expected(self):
        """("rows", [...]) or ("error", line number of the first bad line)."""
        rows = []
        for n, _, row in self.visible():
            if row is None:
                return "error", n
            rows.append(row)
        return "rows", rows


def check(read, name: str, expected):
    """The reader returns exactly the expected rows, or raises one ValueError starting "name:line:"."""
    kind, value = expected
    event(f"expected: {kind}" + (f", {min(len(value), 3)}+ rows" if kind == "rows" else ""))
    try:
        got = read()
    except ValueError as e:
        msg = str(e)
        assert kind == "error", f"{name}: expected {len(value)} rows, got the error {msg[:300]!r}"
        assert msg.startswith(f"{name}:{value}:"), f"expected an error at {name}:{value}, got {msg[:300]!r}"
        assert "\n" not in msg, msg[:300]
        return
    assert kind == "rows", f"expected an error at {name}:{value}, got {len(got)} rows"
    assert len(got) == len(value), (len(got), len(value))
    assert got == value


@contextmanager
def stdin_bytes(data: bytes):
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = old


@st.composite
def blank_lines(draw):
    return Line(draw(st.text(st.sampled_from(" \t\r\x0b\x0c"), max_size=4)))


def _invalid(draw, content: str) -> Line:
    raw = content.encode("utf-8")
    at = draw(st.integers(0, len(raw)))
    return Line(content, raw=raw[:at] + draw(st.sampled_from(BAD_UTF8)) + raw[at:])


@st.composite
def file_of(draw, good, bad, max_lines=12):
    """Good, bad and blank lines, LF or CRLF endings, maybe a BOM, maybe no final newline."""
    f = File(bom=draw(st.booleans()))
    bad_rate = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5]))  # many files with no bad line at all
    for _ in range(draw(st.integers(0, max_lines))):
        roll = draw(st.integers(0, 99)) / 100
        ln = draw(blank_lines()) if roll < 0.15 else draw(bad) if roll < 0.15 + bad_rate else draw(good)
        ln.term = draw(st.sampled_from(["\n", "\r\n"]))
        f.lines.append(ln)
    if f.lines and draw(st.booleans()):
        f.lines[-1].term = ""  # no newline at the end of the file
    return f


def huge_or(draw, strategy):
    """Now and then a 1 MB text instead (one line in ~40)."""
    return "\u00e9" * (HUGE // 2) if draw(st.integers(0, 39)) == 0 else draw(strategy)


# ----------------------------------------------------------------------------- line builders

def tsv_line(fields: list[str], make) -> Line:
    return Line("\t".join(fields), fields=fields, make=make)


@st.composite
def tsv_pair(draw):
    return tsv_line([draw(texts()), huge_or(draw, texts())], tuple)


@st.composite
def tsv_pair_bad(draw):
    kind = draw(st.sampled_from(["one column", "three columns", "utf8"]))
    if kind == "utf8":
        return _invalid(draw, f"{draw(texts())}\t{draw(texts())}")
    cols = [draw(texts()) for _ in range(1 if kind == "one column" else draw(st.integers(3, 5)))]
    return Line("\t".join(cols), fields=cols, make=tuple, bad=True)


@st.composite
def plain_text(draw):
    return tsv_line([huge_or(draw, texts(exclude="\n"))], lambda f: f[0])  # tabs inside: one field


@st.composite
def plain_text_bad(draw):
    return _invalid(draw, draw(texts(exclude="\n")))


def json_line(draw, value, row) -> Line:
    pad = st.text(st.sampled_from(" \t"), max_size=2)
    return Line(draw(pad) + json.dumps(value, ensure_ascii=draw(st.booleans())) + draw(pad), row=row)


WRONG_TYPES = st.one_of(st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                             max_size=2))


def surrogate() -> st.SearchStrategy:
    return st.builds(lambda a, s: a + s, texts(max_size=4), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))


@st.composite
def json_pair(draw):
    a, b = draw(texts(exclude="")), huge_or(draw, texts(exclude=""))
    form = draw(st.sampled_from(["list"] + [f"{x},{y}" for x, y in cli_io.PAIR_KEYS]))
    if form == "list":
        return json_line(draw, [a, b], (a, b))
    x, y = form.split(",")
    extra = draw(st.dictionaries(st.sampled_from(["id", "label", "qid"]), st.integers(), max_size=2))
    return json_line(draw, {**extra, x: a, y: b}, (a, b))


def json_bad(draw, good_value):
    """A bad line that is not about one field: broken JSON, a huge integer, deep nesting, a
    top-level scalar, invalid UTF-8 bytes. None: the caller spoils a field instead."""
    kind = draw(st.sampled_from(["field", "field", "field", "broken", "bigint", "deep", "top", "utf8"]))
    if kind == "field":
        return None
    if kind == "broken":
        text = json.dumps(good_value)
        return Line(text[:draw(st.integers(0, len(text) - 1))] or "{", bad=True)
    if kind == "bigint":
        return Line('{"query": ' + "7" * 5000 + ', "document": "x", "documents": ["x"], "body": "x"}', bad=True)
    if kind == "deep":
        return Line('{"query": ' + "[" * 50000 + "]" * 50000 + ', "document": "x", "body": 1}', bad=True)
    if kind == "top":
        return Line(json.dumps(draw(st.one_of(st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False)))),
                    bad=True)
    return _invalid(draw, json.dumps(good_value, ensure_ascii=False))


@st.composite
def json_pair_bad(draw):
    value = {"query": draw(texts()), "document": draw(texts())}
    ln = json_bad(draw, value)
    if ln is not None:
        return ln
    value[draw(st.sampled_from(["query", "document"]))] = draw(st.one_of(WRONG_TYPES, surrogate()))
    if draw(st.booleans()):
        value = [value["query"], value["document"]]
    return Line(json.dumps(value, ensure_ascii=True), bad=True)  # a surrogate as a "\udXXX" escape: valid JSON

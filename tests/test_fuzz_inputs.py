"""Fuzz every CLI input reader (issue 29): TSV pairs, plain-text and TSV texts, JSON Lines pairs
and texts, Parquet, stdin, `rank --input` queries, and `search`'s corpus and queries.

Each example builds a file from a generated structure: rows of random unicode (with \\r, \\x00,
a BOM, U+2028, ...), blank lines, CRLF or LF endings, a byte order mark, sometimes a 1 MB line,
and "bad" lines: invalid UTF-8 bytes, JSON of the wrong type (numbers, null, lists, objects),
lone surrogate escapes, broken JSON, huge integers, deep nesting, wrong column counts. The
expected result comes from that structure (the oracle in fuzz_files.py), never from the reader: either
exactly the rows written (after the documented rules of xenc_jax/cli/io.py: a blank line is
skipped, one trailing \\r and a leading BOM on line 1 are dropped), or one ValueError whose message
starts with "FILE:LINE:" of the first bad line (Parquet: "FILE: row K:"). Any other exception,
or a different row count, fails.

Budget: the "ci" profile (FUZZ_CI examples per test) keeps the file well under 60 s on two cores;
XENC_FUZZ_EXAMPLES=20000 runs the long profile by hand (figures in docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_files import (BLANK, WRONG_TYPES, File, Line, check, file_of, huge_or, json_bad, json_line, json_pair,
                        json_pair_bad, plain_text, plain_text_bad, stdin_bytes, surrogate, texts, tsv_line, tsv_pair,
                        tsv_pair_bad)
from xenc_jax.cli import io as cli_io
from xenc_jax.cli.search import read_corpus, read_queries

FUZZ_CI = 40  # examples per reader test in CI: the whole file runs in ~30 s on a shared 2-core machine
LONG = int(os.environ.get("XENC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LONG or FUZZ_CI, deadline=None, database=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- readers on files

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _write(root: Path, name: str, f: File) -> str:
    path = root / name
    path.write_bytes(f.data())
    return str(path)


@FUZZ
@given(f=file_of(tsv_pair(), tsv_pair_bad()))
def test_tsv_pairs(root, f):
    path = _write(root, "p.tsv", f)
    check(lambda: cli_io.read_pairs(path), path, f.expected())
    with stdin_bytes(f.data()):  # stdin is read as bytes like a file, and named <stdin> in errors
        check(lambda: cli_io.read_pairs("-"), "<stdin>", f.expected())


@st.composite
def tsv_three(draw):
    return tsv_line([draw(texts()), draw(texts()), draw(texts())], lambda c: (c[2], c[0]))


@FUZZ
@given(f=file_of(tsv_three(), tsv_pair_bad()))
def test_tsv_pairs_with_columns(root, f):
    """--columns 3,1: the third and the first column (more columns are fine when chosen); a line
    with fewer than three is an error."""
    for ln in f.lines:
        if ln.fields is not None:
            ln.bad, ln.make = len(ln.fields) < 3, (lambda c: (c[2], c[0]))
    path = _write(root, "c.tsv", f)
    check(lambda: cli_io.read_pairs(path, columns=["3", "1"]), path, f.expected())


@FUZZ
@given(f=file_of(plain_text(), plain_text_bad()))
def test_plain_texts_are_whole_lines(root, f):
    path = _write(root, "t.txt", f)
    check(lambda: cli_io.read_texts(path), path, f.expected_texts())
    with stdin_bytes(f.data()):  # stdin texts are whole lines too
        check(lambda: cli_io.read_texts("-"), "<stdin>", f.expected_texts())


@FUZZ
@given(f=file_of(plain_text(), plain_text_bad()))
def test_tsv_texts_need_a_column_when_a_line_has_a_tab(root, f):
    """A .tsv text file: lines without a tab are whole texts; the first (non-blank) line with a
    tab is an error naming it (choose --key N); with --key 1, the first column."""
    path = _write(root, "t.tsv", f)
    for ln in f.lines:
        ln.make = (lambda fields: fields[0].split("\t")[0]) if ln.fields is not None else None
    check(lambda: cli_io.read_texts(path, key="1"), path, f.expected_texts())
    for ln in f.lines:
        ln.bad = ln.raw is None and "\t" in ln.content  # blank lines are skipped before this
        ln.make = lambda fields: fields[0]
    check(lambda: cli_io.read_texts(path), path, f.expected_texts())


@st.composite
def json_text(draw):
    t = huge_or(draw, texts(exclude=""))
    if draw(st.booleans()):
        return json_line(draw, t, t)
    extra = draw(st.dictionaries(st.sampled_from(["id", "text"]), st.integers(), max_size=2))
    return json_line(draw, {**extra, "body": t}, t)


@st.composite
def json_text_bad(draw):
    value = {"body": draw(texts())}
    ln = json_bad(draw, value)
    if ln is not None:
        return ln
    value = {"other": "x"} if draw(st.booleans()) else {"body": draw(st.one_of(WRONG_TYPES, surrogate()))}
    return Line(json.dumps(value, ensure_ascii=True), bad=True)


@FUZZ
@given(f=file_of(json_text(), json_text_bad()))
def test_jsonl_texts(root, f):
    path = _write(root, "t.jsonl", f)
    check(lambda: cli_io.read_texts(path, key="body"), path, f.expected())


@FUZZ
@given(f=file_of(json_pair(), json_pair_bad()))
def test_jsonl_pairs(root, f):
    path = _write(root, "p.jsonl", f)
    check(lambda: cli_io.read_pairs(path), path, f.expected())


# ----------------------------------------------------------------------------- rank --input

@st.composite
def query_item(draw):
    docs_key = draw(st.sampled_from(["documents", "candidates"]))
    item = {"query": draw(texts(exclude="")), docs_key: draw(st.lists(texts(exclude=""), min_size=1, max_size=4))}
    qid = draw(st.one_of(st.none(), st.text(max_size=3), st.integers(-3, 30)))
    if qid is not None:
        item["qid"] = qid
    return Line(json.dumps(item, ensure_ascii=draw(st.booleans())), row=item)


@st.composite
def query_bad(draw):
    item = draw(query_item()).row
    docs_key = "documents" if "documents" in item else "candidates"
    ln = json_bad(draw, item)
    if ln is not None:
        return ln
    kind = draw(st.sampled_from(["qid", "query", "docs", "doc", "empty", "missing"]))
    if kind == "qid":
        item["qid"] = draw(st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=1), surrogate()))
    elif kind == "query":
        item["query"] = draw(st.one_of(WRONG_TYPES, surrogate()))
    elif kind == "docs":
        item[docs_key] = draw(st.one_of(st.none(), st.text(max_size=3), st.integers(),
                                        st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1)))
    elif kind == "doc":
        item[docs_key].insert(draw(st.integers(0, len(item[docs_key]))), draw(st.one_of(WRONG_TYPES, surrogate())))
    elif kind == "empty":
        item[docs_key] = []
    else:
        del item[docs_key]
    return Line(json.dumps(item, ensure_ascii=True), bad=True)


def queries_expected(f: File):
    """(qid, query, documents) per query: the qid as a string (the given one, else the query's
    0-based index in the file); a qid used twice is an error at its second line."""
    out, seen = [], set()
    for n, _, item in f.visible():
        if item is None:
            return "error", n
        qid = str(item.get("qid", len(out)))
        if qid in seen:
            return "error", n
        seen.add(qid)
        out.append((qid, item["query"], item.get("documents", item.get("candidates"))))
    return "rows", out


@FUZZ
@given(f=file_of(query_item(), query_bad()))
def test_rank_input_queries(root, f):
    path = _write(root, "q.jsonl", f)
    check(lambda: list(cli_io.iter_queries(path)), path, queries_expected(f))


# ----------------------------------------------------------------------------- search's corpus and queries

@st.composite
def corpus_doc(draw):
    doc = {"_id": draw(st.one_of(st.text(max_size=3), st.integers(0, 50))), "text": draw(texts(exclude=""))}
    title = draw(st.one_of(st.none(), st.just(""), texts(exclude="")))
    if title is not None or draw(st.booleans()):
        doc["title"] = title
    text = f"{title} {doc['text']}".strip() if title else doc["text"]  # BEIR's "title text", stripped
    return Line(json.dumps(doc, ensure_ascii=draw(st.booleans())), row=(str(doc["_id"]), text))


@st.composite
def corpus_bad(draw):
    doc = {"_id": "x", "text": "y", "title": "z"}
    ln = json_bad(draw, doc)
    if ln is not None:
        return ln
    key = draw(st.sampled_from(["_id", "text", "title"]))
    if draw(st.booleans()):
        del doc[key if key != "title" else "text"]
    else:
        doc[key] = draw(st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=2), surrogate(),
                                  st.just({"a": 1}), st.none() if key != "title" else st.just(0)))
    return Line(json.dumps(doc, ensure_ascii=True), bad=True)


def _unique_ids(f: File, key=lambda row: row[0]):
    """Rows, or an error at the line where an id appears a second time."""
    out, seen = [], set()
    for n, _, row in f.visible():
        if row is None or key(row) in seen:
            return "error", n
        seen.add(key(row))
        out.append(row)
    return "rows", out


@FUZZ
@given(f=file_of(corpus_doc(), corpus_bad()))
def test_search_corpus(root, f):
    path = _write(root, "corpus.jsonl", f)
    check(lambda: list(zip(*read_corpus(path))), path, _unique_ids(f))


@st.composite
def query_tsv_line(draw):
    if draw(st.booleans()):
        return tsv_line([draw(texts(max_size=3)), draw(texts())], tuple)
    return tsv_line([draw(texts())], lambda c: (None, c[0]))


HEADERS = (["query-id", "text"], ["qid", "text"], ["_id", "text"])


def queries_tsv_expected(f: File):
    """qid<TAB>text, or the text alone (qid: its index among the queries); a header line first is
    skipped; a qid used twice is an error at its second line."""
    out, seen = [], set()
    for k, (n, _, row) in enumerate(f.visible()):
        if row is None:
            return "error", n
        if k == 0 and [c.lower() for c in row if c is not None] in HEADERS:
            continue
        qid = str(len(out)) if row[0] is None else row[0]
        if qid in seen:
            return "error", n
        seen.add(qid)
        out.append((qid, row[1]))
    return "rows", out


@FUZZ
@given(f=file_of(query_tsv_line(), st.builds(lambda cols: Line("\t".join(cols), bad=True),
                                             st.lists(texts(), min_size=3, max_size=4))))
def test_search_queries_tsv(root, f):
    path = _write(root, "queries.tsv", f)
    check(lambda: list(zip(*read_queries(path))), path, ("error", 1) if f.cr_only() else queries_tsv_expected(f))


# ----------------------------------------------------------------------------- Parquet

@st.composite
def parquet_table(draw):
    """(table, expected): string columns of random unicode (plain, large, dictionary), or bad rows
    (nulls, invalid UTF-8 bytes viewed as strings, a whole column of another type)."""
    import pyarrow as pa
    n = draw(st.integers(0, 12))
    rows = [(draw(texts(exclude="")), draw(texts(exclude=""))) for _ in range(n)]
    bad = {}  # row -> kind
    if n and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            bad[draw(st.integers(0, n - 1))] = draw(st.sampled_from(["null", "utf8"]))
    column_kind = draw(st.sampled_from(["string", "large_string", "dictionary", "string", "int64"]))

    def column(j):
        if column_kind == "int64" and j == 1:
            return pa.array(list(range(n)), pa.int64())
        raw = [None if bad.get(i) == "null" else (b"\xff" + r[j].encode() if bad.get(i) == "utf8" and j == 1
                                                    else r[j].encode()) for i, r in enumerate(rows)]
        arr = pa.array(raw, pa.binary()).view(pa.string())
        if column_kind == "large_string":
            return arr.cast(pa.large_string()) if not any(v == "utf8" for v in bad.values()) else arr
        if column_kind == "dictionary" and not any(v == "utf8" for v in bad.values()):
            return arr.dictionary_encode()
        return arr
    table = pa.table({"query": column(0), "document": column(1), "extra": pa.array(list(range(n)), pa.int64())})
    if n == 0:
        expected = ("error", None)
    elif column_kind == "int64":
        expected = ("error", 0)
    elif bad:
        expected = ("error", min(bad))
    else:
        expected = ("rows", rows)
    return table, draw(st.integers(1, max(n, 1))), expected


@FUZZ
@given(case=parquet_table())
def test_parquet_pairs(root, case):
    import pyarrow.parquet as pq
    table, group, (kind, value) = case
    path = str(root / "p.parquet")
    pq.write_table(table, path, row_group_size=group)
    try:
        got = [tuple(r) for r in cli_io.iter_pairs(path)]
    except ValueError as e:
        msg = str(e)
        assert kind == "error", f"expected {len(value)} rows, got {msg[:300]!r}"
        prefix = f"{path}:" if value is None else f"{path}: row {value}:"
        assert msg.startswith(prefix) and "\n" not in msg, (prefix, msg[:300])
        return
    assert kind == "rows", f"expected an error at row {value}, got {len(got)} rows"
    assert got == value


def test_parquet_errors_name_the_file(root):
    """A file that is not Parquet, and a column name used twice (a raw KeyError before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    bad = root / "not.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=r"not\.parquet: not a readable Parquet file"):
        cli_io.read_pairs(str(bad))
    twice = root / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array(["c"])],
                                        names=["query", "document", "query"]), twice)
    with pytest.raises(ValueError, match=r"twice\.parquet: the column name 'query' appears 2 times"):
        cli_io.read_pairs(str(twice))


# ----------------------------------------------------------------------------- the real CLI

def test_fuzzed_files_through_the_xenc_cli(tmp_path, minilm_dir):
    """A few generated files through the installed `xenc score` in a subprocess: a bad file exits
    2 with one `error:` line naming FILE:LINE; a good one writes exactly its row count."""
    import random
    import transformers as tf
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    make_tiny("bert", tmp_path / "m", num_labels=1, seed=5, vocab_size=tok.vocab_size, max_position_embeddings=64)
    tok.save_pretrained(str(tmp_path / "m"))
    rng = random.Random(29)
    alphabet = "ab \u00e9\u2028\x00\ufeff\U0001F600z\r"

    def word():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))).strip(BLANK) or "w"
    files = {}
    good = [(word(), word()) for _ in range(23)]
    files["good.tsv"] = ("".join(f"{a}\t{b}\r\n" + ("\n" if i % 5 == 0 else "") for i, (a, b) in enumerate(good)),
                         len(good))
    files["good.jsonl"] = ("".join(json.dumps({"query": a, "passage": b}, ensure_ascii=False) + "\n"
                                   for a, b in good[:9]), 9)
    files["three.tsv"] = ("a\tb\n\nc\td\te\n", "three.tsv:3:")
    files["number.jsonl"] = ('{"query": "a", "document": "b"}\n{"query": "a", "document": 5}\n', "number.jsonl:2:")
    files["surrogate.jsonl"] = ('["a", "b"]\n\n\n["a", "\\udc80"]\n', "surrogate.jsonl:4:")
    files["bytes.tsv"] = (b"a\tb\n\xed\xa0\x80\tx\n", "bytes.tsv:2:")
    xenc = Path(sys.executable).with_name("xenc")
    cmd = [str(xenc)] if xenc.is_file() else [sys.executable, "-c", "import sys; from xenc_jax.cli import main; "
                                              "sys.exit(main(sys.argv[1:]))"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for name, (content, want) in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        out = tmp_path / (name + ".out.jsonl")
        r = subprocess.run(cmd + ["score", str(path), "--model", str(tmp_path / "m"), "-o", str(out)],
                           capture_output=True, text=True, env=env, timeout=300)
        if isinstance(want, int):
            assert r.returncode == 0, r.stderr[-2000:]
            rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
            assert [x["index"] for x in rows] == list(range(want))
        else:
            errors = [x for x in r.stderr.splitlines() if "error:" in x]
            assert r.returncode == 2 and len(errors) == 1 and f"{tmp_path / want}" in errors[0], r.stderr[-2000:]
            assert "Traceback" not in r.stderr and not out.exists()
            assert not out.with_name(out.name + ".parts").exists()  # no manifest left behind (finding 11)

"""CLI formats that gave a user silently wrong output (session 17, task D), each now right or one
line saying what was wrong: `-o scores.csv` wrote JSON Lines into a .csv (and `rank -o r.tsv`
JSON Lines into a .tsv); a comma CSV was read as TSV; a TSV header row was scored as a pair (every
index off by one); `--columns` on a file ended by \\r alone paired texts of two lines; a missing
Parquet column or a bad first row was found only after the model loaded.

Kept cheap (CI time): one tiny random cross-encoder (the real MiniLM tokenizer), two CLI runs that
score; every other check runs before a model loads (NO_MODEL: any load would fail with another
message) or on the readers alone.
"""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from xenc_jax.cli import main
from xenc_jax.cli.io import read_pairs

NO_MODEL = "/nonexistent/model"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err  # one line, no traceback
    return lines[0]


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, minilm_dir):
    import transformers as tf

    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    path = tmp_path_factory.mktemp("formats") / "ce"
    make_tiny("bert", path, num_labels=1, seed=17, vocab_size=tok.vocab_size, max_position_embeddings=128)
    tok.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def sts_lines(data_dir) -> list[str]:
    """The first 4 lines of the real STS Benchmark test file: tab-separated, though named .csv (4:
    two chunks of 2 pairs, one compile)."""
    with open(data_dir / "stsbenchmark" / "sts-test.csv", encoding="utf-8") as f:
        return [next(f) for _ in range(4)]


# ----------------------------------------------------------------------------- CSV output

def test_score_csv_output_is_csv_with_the_json_scores_in_parts_and_merged(ce_dir, sts_lines, tmp_path, capsys):
    """`-o scores.csv` wrote JSON Lines. Now CSV: a header, then each score as JSON writes it
    (so pandas and pyarrow read back exactly the JSON Lines floats), the header once though the
    job writes 2 parts (--chunk-size 2) kept by --output-parts and assembled by merge-parts. The
    input is the real STS-B file, tab-separated though named .csv: read as TSV, as before."""
    import pandas as pd
    import pyarrow.csv as pacsv
    inp = tmp_path / "sts.csv"
    inp.write_text("".join(sts_lines), encoding="utf-8")
    base = ["score", str(inp), "--columns", "6,7", "--model", ce_dir, "--chunk-size", "2"]
    assert main(base) == 0                                                       # JSON Lines on stdout
    want = [json.loads(x)["score"] for x in capsys.readouterr().out.splitlines()]
    assert len(want) == 4
    # TSV wrote .7g, which does not round-trip a float32 (9 digits): now the JSON number text too
    assert main(base + ["--output-format", "tsv"]) == 0
    assert capsys.readouterr().out == "".join(f"{json.dumps(s)}\n" for s in want)
    out = tmp_path / "scores.csv"
    assert main(base + ["-o", str(out), "--output-parts"]) == 0
    assert len(list((tmp_path / "scores.csv.parts").glob("part-*.csv"))) == 2 and not out.exists()
    assert main(["merge-parts", str(out)]) == 0
    capsys.readouterr()
    text = out.read_bytes().decode("utf-8")
    assert text == "score\r\n" + "".join(f"{json.dumps(s)}\r\n" for s in want)   # the JSON number text
    assert pd.read_csv(out)["score"].tolist() == want                            # exactly, not approximately
    assert pacsv.read_csv(out).column("score").to_pylist() == want


def test_rank_csv_quotes_texts_with_commas_quotes_and_line_breaks(ce_dir, tmp_path, capsys):
    """`rank -o r.tsv` / `-o r.csv` wrote JSON Lines (rank ignored the name). CSV rows read back
    by pandas and pyarrow give exactly the documents, whatever they hold; scores as in JSON Lines."""
    import pandas as pd
    import pyarrow.csv as pacsv
    docs = ['Berlin, the capital', 'a "quoted" word', "two\nlines", "a lone\rreturn", "crlf\r\ninside", "plain"]
    inp = tmp_path / "q.jsonl"
    inp.write_text(json.dumps({"qid": "q1", "query": "capital, of germany", "documents": docs}) + "\n")
    assert main(["rank", "--input", str(inp), "--model", ce_dir, "-o", str(tmp_path / "r.jsonl")]) == 0
    want = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert main(["rank", "--input", str(inp), "--model", ce_dir, "-o", str(tmp_path / "r.csv")]) == 0
    capsys.readouterr()
    opts = dict(dtype={"qid": str, "text": str}, keep_default_na=False)
    got = pd.read_csv(tmp_path / "r.csv", **opts).to_dict("records")
    assert got == want                           # every column, every text byte, every score bit
    table = pacsv.read_csv(tmp_path / "r.csv").to_pylist()
    assert [r["text"] for r in table] == [r["text"] for r in want]
    assert [r["score"] for r in table] == [r["score"] for r in want]


def test_rank_input_from_stdin_keeps_its_first_query(ce_dir, tmp_path, capsys, monkeypatch):
    """`rank --input -` read its first query before the model loaded (the early check) and then
    read stdin again for the job: the first query was never ranked and every qid shifted by one
    (3 queries in, 2 out, 'b' under qid 0). stdin is read once now, to stdout or a file."""
    import io
    lines = "".join(json.dumps({"query": q, "documents": [d]}) + "\n" for q, d in zip("abc", "xyz"))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode("utf-8"))))
    assert main(["rank", "--input", "-", "--model", ce_dir]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["qid"], r["text"]) for r in rows] == [("0", "x"), ("1", "y"), ("2", "z")]
    # to a file: the resumable parts' identity hashed a file named '-' ("No such file or directory:
    # '-'" once the model had loaded); stdin cannot be read again, so the file is written whole
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode("utf-8"))))
    assert main(["rank", "--input", "-", "--model", ce_dir, "-o", str(tmp_path / "r.jsonl")]) == 0
    assert [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()] == rows
    assert not (tmp_path / "r.jsonl.parts").exists()


def test_search_writes_the_format_its_output_name_says(minilm_dir, data_dir, tmp_path, capsys):
    """`search -o res.tsv` / `-o res.csv` wrote JSON Lines. Now the named format, on real MS MARCO
    passages and queries (ids read back as the JSON Lines strings, scores as the same floats)."""
    import pandas as pd

    from tiny_hf import make_tiny
    bi = tmp_path / "bi"
    vocab = json.loads((minilm_dir / "config.json").read_text())["vocab_size"]
    make_tiny("bert", bi, head=False, seed=30, vocab_size=vocab, max_position_embeddings=128)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, bi / name)
    src = data_dir / "msmarco-dl19-subset"
    corpus, queries = tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl"
    corpus.write_text("".join(open(src / "corpus.jsonl", encoding="utf-8").readlines()[:12]), encoding="utf-8")
    queries.write_text("".join(open(src / "queries.jsonl", encoding="utf-8").readlines()[:2]), encoding="utf-8")
    base = ["search", "--corpus", str(corpus), "--queries", str(queries), "--model", str(bi), "--top-k", "3"]
    for name in ("res.jsonl", "res.csv", "res.tsv"):
        assert main(base + ["-o", str(tmp_path / name)]) == 0
    capsys.readouterr()
    want = [json.loads(x) for x in (tmp_path / "res.jsonl").read_text().splitlines()]
    assert len(want) == 6
    ids = {"qid": str, "doc_id": str}
    assert pd.read_csv(tmp_path / "res.csv", dtype=ids).to_dict("records") == want
    assert pd.read_csv(tmp_path / "res.tsv", sep="\t", header=None, names=list(want[0]),
                       dtype=ids).to_dict("records") == want   # TSV: no header


def test_a_multi_label_csv_has_a_column_per_label_and_one_header():
    """The header is written above row 0 only: a file's first part, or stdout's first chunk."""
    from xenc_jax.cli.writers import score_rows_text
    scores = np.array([[0.25, -1.5], [3.0, 1e-8]], np.float32)
    assert score_rows_text(scores, 0, "csv") == "score_0,score_1\r\n0.25,-1.5\r\n3.0,9.99999993922529e-09\r\n"
    assert score_rows_text(scores, 2, "csv") == "0.25,-1.5\r\n3.0,9.99999993922529e-09\r\n"  # a later part


def test_an_output_name_for_a_format_the_command_does_not_write_is_refused(tmp_path, capsys):
    """`score -o x.npy` and `mine -o x.csv` wrote JSON Lines under that name; a .gz name an
    uncompressed file. Refused before any model loads."""
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\td\n")
    ap = tmp_path / "ap.jsonl"
    ap.write_text(json.dumps({"anchor": "q", "positive": "d"}) + "\n")
    assert main(["score", str(pairs), "-o", str(tmp_path / "x.npy"), "--model", NO_MODEL]) == 2
    assert "x.npy names npy output, which this command does not write" in _error(capsys)
    assert main(["mine", "--pairs", str(ap), "--corpus", str(ap), "-o", str(tmp_path / "m.csv"),
                 "--model", NO_MODEL]) == 2
    assert "m.csv names csv output" in _error(capsys)
    assert main(["score", str(pairs), "-o", str(tmp_path / "s.jsonl.gz"), "--model", NO_MODEL]) == 2
    assert "xenc writes uncompressed files; write s.jsonl and compress it afterwards" in _error(capsys)
    assert main(["score", str(pairs), "-o", str(tmp_path / "s.jsonl.gz"), "--output-format", "jsonl",
                 "--model", NO_MODEL]) == 2   # naming the format does not make the file gzip
    assert "xenc writes uncompressed files" in _error(capsys)


# ----------------------------------------------------------------------------- inputs

def test_comma_csv_input_is_refused_and_a_tab_csv_read_as_tsv(tmp_path, capsys, sts_lines):
    """`xenc score pairs.csv` read a CSV row as TSV: "expected two tab-separated texts" for a
    comma row, or a text with its quotes where a tab happened to be. Now one line saying CSV is
    not read and how to convert; the STS-B files (tabs in a .csv) still read as TSV."""
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('query,passage\n"berlin, germany","It is the ""capital"""\n')
    assert main(["score", str(csv_file), "--model", NO_MODEL]) == 2
    assert "pairs.csv: CSV input is not read" in _error(capsys)
    sts = tmp_path / "sts.csv"
    sts.write_text("".join(sts_lines), encoding="utf-8")
    assert read_pairs(str(sts), columns=["6", "7"]) == [tuple(x.rstrip("\n").split("\t")[5:7]) for x in sts_lines]


def test_search_queries_in_a_comma_csv_are_refused_as_every_csv_input(tmp_path):
    """`search --queries q.csv` bypassed the CSV rule (read_queries picks its own format): the
    header "query-id,text" became a query and each whole row "q1,..." a query text under the qid
    of its index, ranked against a corpus with no error. Refused now; a tab .csv is still TSV."""
    from xenc_jax.cli.io import CliError
    from xenc_jax.cli.search import read_queries
    comma = tmp_path / "q.csv"
    comma.write_text('query-id,text\nq1,"what is jax, really"\n')
    with pytest.raises(CliError, match="q.csv: CSV input is not read"):
        read_queries(str(comma))
    tabs = tmp_path / "t.csv"
    tabs.write_text("query-id\ttext\nq1\twhat is jax, really\n")
    assert read_queries(str(tabs)) == (["q1"], ["what is jax, really"])


def test_a_header_row_is_refused_skipped_with_header_or_scored_with_no_header(tmp_path, capsys, sts_lines):
    """A TSV header row was scored as a pair: every score's index one off the user's table. A first
    line of column names only is now refused (before any model loads); --header skips it and lets
    --columns name columns (checked on real STS-B rows); --no-header scores it as before."""
    rows = [x.rstrip("\n").split("\t")[:7] for x in sts_lines]
    headed = tmp_path / "sts_header.tsv"
    headed.write_text("genre\tfile\tyears\tid\tscore\tsentence1\tsentence2\n" + "".join(
        "\t".join(r) + "\n" for r in rows), encoding="utf-8")
    want = [(r[5], r[6]) for r in rows]
    assert read_pairs(str(headed), columns=["sentence1", "sentence2"], header=True) == want
    assert read_pairs(str(headed), columns=["6", "sentence2"], header=True) == want   # numbers still work
    assert main(["score", str(headed), "--columns", "6,7", "--model", NO_MODEL]) == 2
    assert "sts_header.tsv:1: the first line ('sentence1', 'sentence2') names columns" in _error(capsys)
    assert main(["score", str(headed), "--columns", "sentence1,sentence2", "--model", NO_MODEL]) == 2
    assert "to name columns, give --header" in _error(capsys)
    assert main(["score", str(headed), "--header", "--columns", "sentence1,nope", "--model", NO_MODEL]) == 2
    assert "sts_header.tsv:1: the header has no column 'nope'" in _error(capsys)
    two = tmp_path / "two.tsv"
    two.write_text("query\tpassage\nq1\td1\n")
    assert read_pairs(str(two), header=False) == [("query", "passage"), ("q1", "d1")]
    assert read_pairs(str(two), header=True) == [("q1", "d1")]
    wide = tmp_path / "wide.tsv"
    wide.write_text("qid\tquery\tpid\tpassage\n7\tq1\t8\td1\n")
    assert read_pairs(str(wide), header=True) == [("q1", "d1")]   # a known pair of names, as for JSON Lines
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"query": "q", "passage": "d"}) + "\n")
    assert main(["score", str(jl), "--header", "--model", NO_MODEL]) == 2
    assert "--header is for TSV input" in _error(capsys)


def test_old_mac_line_endings_are_refused_with_columns_too(tmp_path, sts_lines):
    """With --columns, real STS-B rows ended by \\r alone read as one line whose columns 6,7 paired
    the first row's sentence1 with the text "<sentence2>\\r<next row's genre>": silently wrong.
    Refused; a \\r inside a text of a normal line is kept as ever."""
    mac = tmp_path / "mac.tsv"
    mac.write_bytes("".join(x.rstrip("\n") + "\r" for x in sts_lines).encode("utf-8"))
    with pytest.raises(ValueError, match=r"mac\.tsv:1: a carriage return \(\\r\) between what look like whole rows"):
        read_pairs(str(mac), columns=["6", "7"])
    ok = tmp_path / "ok.tsv"
    ok.write_bytes(b"q\rx\td\te\n")
    assert read_pairs(str(ok), columns=["1", "2"]) == [("q\rx", "d")]


def test_a_missing_column_or_bad_first_row_is_named_before_the_model_loads(tmp_path, capsys):
    """A missing Parquet column (score, encode) or a bad first query (rank --input) was reported
    after the model loaded; now before (NO_MODEL would fail otherwise)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"query": ["q"], "passage": ["d"]}), tmp_path / "p.parquet")
    assert main(["score", str(tmp_path / "p.parquet"), "--columns", "query,doc", "--model", NO_MODEL]) == 2
    assert "p.parquet: no column 'doc'; the file has columns ['query', 'passage']" in _error(capsys)
    assert main(["encode", str(tmp_path / "p.parquet"), "--key", "text", "-o", str(tmp_path / "e.npy"),
                 "--model", NO_MODEL]) == 2
    assert "p.parquet: no column 'text'" in _error(capsys)
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"query": "q", "documents": []}) + "\n")
    assert main(["rank", "--input", str(q), "--model", NO_MODEL]) == 2
    assert "q.jsonl:1: the query has no documents" in _error(capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": 5, "passage": "d"}) + "\n")
    assert main(["score", str(bad), "--model", NO_MODEL]) == 2
    assert "bad.jsonl:1: 'query' is a number (5), not a string" in _error(capsys)


def test_mine_summary_names_input_pairs_and_output_rows(capsys):
    """The summary said "N anchors (M rows) ... (K rows)": the input's rows and the output's alike."""
    from collections import Counter

    from xenc_jax.cli.mine import _summary
    args = SimpleNamespace(output="mined.jsonl", rows_format="n-tuple")
    plan = SimpleNamespace(rows=12, anchors=10, corpus=["c"] * 300)
    _summary(args, plan, Counter(anchors_now=6, anchors_before=4, rows_now=6, rank_sum=6, ranked_first=6, rows=0.5),
             2.0)
    line = capsys.readouterr().err.strip()
    assert line.startswith("xenc mine: 12 input pairs (10 distinct anchors) over 300 corpus texts in 2.0s: 6 "
                           "anchors mined now into 6 output rows (n-tuple; writing rows 0.5s), 4 anchors from "
                           "finished parts"), line


# ----------------------------------------------------------------------------- session 17, task I

def test_tsv_scores_are_the_json_numbers_exactly():
    """TSV wrote scores with .7g: a float32 needs 9 significant digits, so 0.46305212 came back as
    0.4630521, 1 ulp off the JSON Lines and CSV value. These float32s are ones .7g misses."""
    from xenc_jax.cli.writers import score_rows_text
    scores = np.array([0.4630521237850189, -3.1415927, 1e-8, 12345.679], np.float32)
    assert any(float(f"{float(s):.7g}") != float(s) for s in scores)    # the old text would not round-trip
    tsv = score_rows_text(scores, 0, "tsv").splitlines()
    js = [json.loads(x)["score"] for x in score_rows_text(scores, 0, "jsonl").splitlines()]
    assert tsv == [json.dumps(s) for s in js]                              # the same text as JSON
    assert np.array_equal(np.array([float(x) for x in tsv], np.float32), scores)   # bit for bit
    two = score_rows_text(scores.reshape(2, 2), 0, "tsv").splitlines()    # a column per label
    assert [float(x) for line in two for x in line.split("\t")] == js


def test_encode_mine_and_search_take_the_header_rule(tmp_path, capsys, sts_lines, data_dir):
    """`encode x.tsv --key N` embedded a header line as text 0 (every index one off). Now as for
    score: a first line of column names only is refused before any model loads, --header skips it
    (and --key may name the column), --no-header embeds it. The same for mine's .tsv corpus and
    search's TSV queries (whose BEIR header query-id<TAB>text is still skipped)."""
    from xenc_jax.cli.io import iter_texts
    from xenc_jax.cli.search import read_queries
    rows = [x.rstrip("\n").split("\t")[:7] for x in sts_lines]
    headed = tmp_path / "sts.tsv"
    headed.write_text("genre\tfile\tyears\tid\tscore\tsentence1\tsentence2\n" + "".join(
        "\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = str(tmp_path / "e.npy")
    assert main(["encode", str(headed), "--key", "6", "-o", out, "--model", NO_MODEL]) == 2
    assert "sts.tsv:1: the first line ('genre', 'file', 'years', 'id') names columns, it is not a text: give " \
           "--header to skip it (--key may then name the column)" in _error(capsys)
    want = [r[5] for r in rows]
    assert list(iter_texts(str(headed), key="sentence1", header=True)) == want
    assert list(iter_texts(str(headed), key="6", header=True)) == want
    assert list(iter_texts(str(headed), key="6", header=False)) == ["sentence1"] + want
    assert main(["encode", str(headed), "--key", "nope", "--header", "-o", out, "--model", NO_MODEL]) == 2
    assert "sts.tsv:1: the header has no column 'nope'" in _error(capsys)
    ap = tmp_path / "ap.jsonl"
    ap.write_text(json.dumps({"anchor": rows[0][5], "positive": rows[0][6]}) + "\n")
    assert main(["mine", "--pairs", str(ap), "--corpus", str(headed), "--corpus-key", "7", "-o",
                 str(tmp_path / "m.jsonl"), "--model", NO_MODEL]) == 2
    assert "give --corpus-header to skip it (--corpus-key may then name the column)" in _error(capsys)
    src = [json.loads(x) for x in open(data_dir / "msmarco-dl19-subset" / "queries.jsonl", encoding="utf-8")][:3]
    queries = tmp_path / "q.tsv"
    body = "".join(f"{q['_id']}\t{q['text']}\n" for q in src)
    want_q = ([q["_id"] for q in src], [q["text"] for q in src])
    queries.write_text("qid\tquery\n" + body, encoding="utf-8")
    with pytest.raises(ValueError, match=r"q\.tsv:1: the first line \('qid', 'query'\) names col.*--queries-header"):
        read_queries(str(queries))
    assert read_queries(str(queries), header=True) == want_q
    assert read_queries(str(queries), header=False) == (["qid"] + want_q[0], ["query"] + want_q[1])
    queries.write_text("query-id\ttext\n" + body, encoding="utf-8")
    assert read_queries(str(queries)) == want_q                 # BEIR's header: skipped, as before


def test_a_one_column_header_reads_whole_lines_and_a_tab_stays_an_error(tmp_path):
    """`encode x.tsv --header` with the one-column header "text" picked column 0, so a line
    "hello<TAB>world" was embedded as "hello" (the rest dropped), while a one-column header of
    another name made the same line an error. Any one-column header now means whole lines: the
    tab is the same error as without a header; --input-format text keeps it in the text."""
    from xenc_jax.cli.io import iter_texts
    for name in ("text", "sentence"):
        f = tmp_path / f"{name}.tsv"
        f.write_text(f"{name}\nhello\tworld\nsecond line\n")
        for key in {"text", name}:
            with pytest.raises(ValueError, match=rf"{name}\.tsv:2: a tab in a \.tsv line"):
                list(iter_texts(str(f), key=key, header=True))
        assert list(iter_texts(str(f), "text", header=True)) == ["hello\tworld", "second line"]


def test_texts_of_a_file_ended_by_lone_carriage_returns_are_refused(tmp_path, capsys, sts_lines):
    """An old Mac file (lines ended by \\r alone, no \\n at all) given to encode or rank --documents
    was ONE text, the whole file. Refused before any model loads; a text holding a \\r in a file
    with \\n line ends stays one text, as the fuzz oracle expects; a TSV line of \\r-joined rows
    read with --key is refused as with --columns."""
    from xenc_jax.cli.io import read_texts
    sentences = [x.split("\t")[5] for x in sts_lines]
    mac = tmp_path / "mac.txt"
    mac.write_bytes("".join(s + "\r" for s in sentences).encode("utf-8"))
    assert main(["encode", str(mac), "-o", str(tmp_path / "e.npy"), "--model", NO_MODEL]) == 2
    assert "mac.txt:1: the file has no \\n line ends but a carriage return (\\r) between texts" in _error(capsys)
    assert main(["rank", "--query", "q", "--documents", str(mac), "--model", NO_MODEL]) == 2
    assert "mac.txt:1: the file has no \\n line ends" in _error(capsys)
    unix = tmp_path / "unix.txt"
    unix.write_bytes(f"{sentences[0]}\r{sentences[1]}\n{sentences[2]}\n".encode("utf-8"))
    assert read_texts(str(unix)) == [f"{sentences[0]}\r{sentences[1]}", sentences[2]]
    one = tmp_path / "one.txt"
    one.write_bytes(f"{sentences[0]}\r".encode("utf-8"))       # a last line's \r alone: a CRLF-less end
    assert read_texts(str(one)) == [sentences[0]]
    keyed = tmp_path / "mac.tsv"
    keyed.write_bytes("".join(x.rstrip("\n") + "\r" for x in sts_lines).encode("utf-8") + b"\n")
    with pytest.raises(ValueError, match=r"mac\.tsv:1: a carriage return \(\\r\) between what look like whole rows"):
        read_texts(str(keyed), key="6")


def test_tune_takes_ignore_config_keys(ce_dir, tmp_path, capsys, monkeypatch):
    """`xenc tune` had no --ignore-config-keys: a folder with an attribute xenc_jax does not know
    could be scored (score --ignore-config-keys) but not tuned or shown. --show reads the config
    only (no weights, nothing measured)."""
    monkeypatch.setenv("XENC_AUTOTUNE", "1")
    model = tmp_path / "ce"
    shutil.copytree(ce_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "my_flag": True}))
    assert main(["tune", "--show", "--model", str(model)]) == 2
    assert "my_flag" in _error(capsys)
    assert main(["tune", "--show", "--model", str(model), "--ignore-config-keys", "my_flag"]) == 0
    assert "no tuning cached for this model" in capsys.readouterr().out


def test_input_suffixes_are_read_case_aside(tmp_path):
    """DATA.PARQUET was read as TSV (the output side already matched suffixes case aside): every
    input-format suffix is matched as the output names are."""
    from xenc_jax.cli.io import pair_format, text_format
    for name, want in (("P.PARQUET", "parquet"), ("p.Parquet", "parquet"), ("P.JSONL", "jsonl"), ("p.Json", "jsonl"),
                       ("P.TSV", "tsv"), ("p.txt", "tsv")):
        assert pair_format(str(tmp_path / name), None) == want, name
    for name, want in (("T.TSV", "tsv"), ("t.Tsv", "tsv"), ("T.TXT", "text"), ("T.PARQUET", "parquet")):
        assert text_format(str(tmp_path / name), None) == want, name

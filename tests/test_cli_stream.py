"""`xenc score` / `xenc encode` stream their input (issue 16): bounded memory, resumable parts
that survive kill -9 with byte-identical output, Parquet in and out, clear errors for bad input."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_train_utils import REPO, WORDS, make_tiny_model
from xenc_jax.cli import main

XENC = [sys.executable, "-c", "import sys; from xenc_jax.cli import main; sys.exit(main(sys.argv[1:]))"]


def write_tsv(path: Path, n: int, seed: int = 0, max_words: int = 40) -> Path:
    # words[rng.integers(0, len, k)] draws what rng.choice(WORDS, k) draws (the same file, byte for
    # byte) without converting WORDS to an array per call: ~2x faster on the 220k rows of the
    # peak-memory test.
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(words[rng.integers(0, len(words), rng.integers(1, 6))]) + "\t"
                    + " ".join(words[rng.integers(0, len(words), rng.integers(2, max_words))]) + "\n")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("cli_stream") / "model", dropout=False)


def _env(tmp_path):
    # The CLI's compile cache: the test session's (tests/conftest.py), so the tiny model's buckets
    # compile once for every CLI process of this file, not once in each test (a hit is the
    # executable compiled for the very same program: no output changes).
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path / "jax-cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "XENC_COMPILATION_CACHE": cache}


def test_score_streams_in_chunks_equal_to_predict_and_parquet_round_trips(model, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from xenc_jax.cross_encoder import CrossEncoder
    tsv = write_tsv(tmp_path / "pairs.tsv", 700)
    pairs = [tuple(l.split("\t")) for l in tsv.read_text().splitlines()]
    want = CrossEncoder(str(model), chunk_size=256).predict(pairs)
    out = tmp_path / "s.jsonl"
    assert main(["score", str(tsv), "--model", str(model), "--chunk-size", "256", "-o", str(out)]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(700))
    assert np.array_equal(np.asarray([r["score"] for r in rows], np.float32), want)  # same chunks: bit-equal
    assert "xenc pairs: 700 in" in capsys.readouterr().err  # the one-line summary
    assert not (tmp_path / "s.jsonl.parts").exists()
    # Parquet in (named columns) and out
    pin = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"id": list(range(700)), "query": [a for a, _ in pairs],
                             "document": [b for _, b in pairs]}), pin, row_group_size=100)
    pout = tmp_path / "s.parquet"
    assert main(["score", str(pin), "--model", str(model), "--chunk-size", "256", "-o", str(pout)]) == 0
    table = pq.read_table(pout)
    assert table.column("index").to_pylist() == list(range(700))
    assert np.array_equal(np.asarray(table.column("score").to_pylist(), np.float32), want)


@pytest.mark.parametrize("name,content,message", [
    ("one_col.tsv", b"a\tb\nonly one column\n", "one_col.tsv:2: expected two tab-separated texts"),
    ("latin1.tsv", b"a\tb\ncaf\xe9\tb\n", "latin1.tsv:2: not valid UTF-8"),
    ("empty.tsv", b"", "empty.tsv: no pairs found"),
    ("bad.jsonl", b'["q", "d"]\n{"query": 1\n', "bad.jsonl:2: not valid JSON"),
])
def test_bad_input_names_file_and_line(model, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["score", str(path), "--model", str(model), "-o", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_bad_parquet_input_names_the_column_or_row(model, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"query": ["a", "b"], "passage_text": ["c", "d"]}), p)
    assert main(["score", str(p), "--model", str(model), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "found no pair of text columns among ['query', 'passage_text']" in capsys.readouterr().err
    assert main(["score", str(p), "--model", str(model), "--columns", "query,passage", "-o",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "no column 'passage'" in capsys.readouterr().err
    pq.write_table(pa.table({"query": ["a", None], "document": ["c", "d"]}), p)
    assert main(["score", str(p), "--model", str(model), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "x.parquet: row 1: column 'query' is null" in capsys.readouterr().err


def _parts(out: Path) -> int:
    d = out.with_name(out.name + ".parts")
    return len(list(d.glob("part-*"))) if d.is_dir() else 0


@pytest.mark.slow
def test_kill9_at_random_points_then_rerun_is_byte_identical(model, tmp_path, capsys):
    """Three kills at random numbers of finished parts, each rerun resuming the last; the final
    output equals an uninterrupted run's byte for byte. Then a changed input or model is refused
    while parts are pending, and --overwrite starts again."""
    tsv = write_tsv(tmp_path / "pairs.tsv", 6000, seed=3)
    env = _env(tmp_path)
    cmd = XENC + ["score", str(tsv), "--model", str(model), "--chunk-size", "300"]
    ref = tmp_path / "ref.jsonl"
    done = subprocess.run(cmd + ["-o", str(ref)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out.jsonl"
    rnd = random.Random(7)
    killed_at = []
    for _ in range(3):
        target = _parts(out) + rnd.randint(1, 4)
        proc = subprocess.Popen(cmd + ["-o", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and _parts(out) < target:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        killed_at.append(_parts(out))
    assert 0 < killed_at[-1] < 20 and not out.exists(), killed_at
    rerun = subprocess.run(cmd + ["-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming {out}: {killed_at[-1]} finished part(s)" in rerun.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert not out.with_name(out.name + ".parts").exists()

    # pending parts + a changed input or model: refused, naming what changed
    out2 = tmp_path / "out2.jsonl"
    proc = subprocess.Popen(cmd + ["-o", str(out2)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and _parts(out2) < 2:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    assert _parts(out2) >= 2
    with open(tsv, "a", encoding="utf-8") as f:
        f.write("one more\tpair at the end\n")
    # What follows kills nothing, so it runs in this process (main() is what the subprocesses
    # run; each fresh interpreter costs ~3 CPU-s of imports on 2 cores)
    args = ["score", str(tsv), "--model", str(model), "--chunk-size", "300", "-o", str(out2)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds finished parts of a different job" in err and "input.file:" in err and "--overwrite" in err, err
    other = make_tiny_model(tmp_path / "other_model", seed=9, dropout=False)
    assert main([a if a != str(model) else str(other) for a in args]) == 2
    err = capsys.readouterr().err
    assert "model.model.safetensors:" in err, err[-2000:]
    assert main(args + ["--overwrite"]) == 0 and len(out2.read_text().splitlines()) == 6001


def _peak_rss_mb(cmd, env) -> float:
    script = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(r.returncode)")
    got = subprocess.run([sys.executable, "-c", script, *cmd], env=env, capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stderr[-2000:]
    return float(got.stdout.split()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_input(model, tmp_path):
    """Peak RSS for 20k and 200k pairs differs by < 150 MB (it grew ~640 MB when the whole input
    was tokenized before scoring). Short pairs keep the 200k run quick."""
    env = _env(tmp_path)
    rss = {}
    for n in (20_000, 200_000):
        tsv = write_tsv(tmp_path / f"p{n}.tsv", n, seed=n, max_words=8)
        rss[n] = _peak_rss_mb(XENC + ["score", str(tsv), "--model", str(model), "-o", str(tmp_path / f"s{n}.jsonl")],
                              env)
        assert len((tmp_path / f"s{n}.jsonl").read_text().splitlines()) == n
    assert rss[200_000] - rss[20_000] < 150, rss


def test_encode_streams_to_npy_and_parquet(tmp_path, capsys):
    import pyarrow.parquet as pq
    import transformers as tf
    from test_train_utils import minilm_path
    from tiny_hf import make_tiny
    from xenc_jax.bi_encoder import BiEncoder
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_path()))
    make_tiny("bert", tmp_path / "bi", head=False, seed=4, vocab_size=tok.vocab_size)
    tok.save_pretrained(str(tmp_path / "bi"))
    texts = [l.split("\t")[1] for l in write_tsv(tmp_path / "t.tsv", 500).read_text().splitlines()]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    want = BiEncoder(str(tmp_path / "bi"), chunk_size=128).encode(texts, normalize_embeddings=True)
    for out in ("e.npy", "e.parquet"):
        assert main(["encode", str(tmp_path / "texts.txt"), "--model", str(tmp_path / "bi"), "--chunk-size", "128",
                     "--normalize", "-o", str(tmp_path / out)]) == 0
    assert np.array_equal(np.load(tmp_path / "e.npy"), want)
    table = pq.read_table(tmp_path / "e.parquet")
    assert np.array_equal(np.asarray(table.column("embedding").to_pylist(), np.float32), want)
    assert "xenc texts: 500 in" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_stream_their_shares_into_one_output(model, tmp_path):
    """Each process reads only its byte range of the file (shares.py); the merged output equals
    one process's (indices exactly; scores to fp32 rounding: other chunks and another mesh). A
    malformed line in the second half stops both processes with the same message naming it."""
    from test_multihost import free_port, run_processes
    tsv = write_tsv(tmp_path / "pairs.tsv", 900, seed=5)
    one = tmp_path / "one.jsonl"
    assert main(["score", str(tsv), "--model", str(model), "--chunk-size", "100", "-o", str(one)]) == 0

    def both(out: Path):
        port = free_port()
        return run_processes([XENC + ["score", str(tsv), "--model", str(model), "--chunk-size", "100", "-o", str(out),
                                      "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                      "--process-id", str(i), "--init-timeout", "60"] for i in range(2)], timeout=300)
    results = both(tmp_path / "two.jsonl")
    assert all(rc == 0 for rc, _, _ in results), [e[-2000:] for _, _, e in results]
    # each process scored about half: its own share, not a slice of the whole
    counts = [int(e.split("of 2: ")[1].split()[0]) for _, _, e in results]
    assert sum(counts) == 900 and min(counts) > 300, counts
    a = [json.loads(l) for l in one.read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [r["index"] for r in b] == [r["index"] for r in a] == list(range(900))
    np.testing.assert_allclose([r["score"] for r in b], [r["score"] for r in a], rtol=0, atol=1e-6)

    lines = tsv.read_text().splitlines()
    lines[700] = "a malformed line"
    tsv.write_text("\n".join(lines) + "\n")
    results = both(tmp_path / "bad.jsonl")
    errs = [next((l for l in e.splitlines() if "error:" in l), e[-1000:]) for _, _, e in results]
    assert all(rc != 0 for rc, _, _ in results) and errs[0] == errs[1], errs
    assert f"{tsv}:701: expected two tab-separated texts" in errs[0] and "process 1 of 2" in errs[0], errs[0]


def test_rank_input_streams_whole_queries_in_parts(model, tmp_path, capsys):
    """`xenc rank --input` reads queries a chunk at a time (whole queries per chunk) and gives the
    scores of rank_many over everything."""
    from xenc_jax.cross_encoder import CrossEncoder
    rng = np.random.default_rng(2)
    items = [{"qid": f"q{i}", "query": " ".join(rng.choice(WORDS, 3)),
              "documents": [" ".join(rng.choice(WORDS, rng.integers(2, 20))) for _ in range(rng.integers(1, 9))]}
             for i in range(60)]
    inp = tmp_path / "q.jsonl"
    inp.write_text("".join(json.dumps(it) + "\n" for it in items))
    out = tmp_path / "ranked.jsonl"
    assert main(["rank", "--input", str(inp), "--model", str(model), "--chunk-size", "40", "-o", str(out)]) == 0
    assert "xenc rank: 60 queries" in capsys.readouterr().err
    got = {(r["qid"], r["corpus_id"]): (r["rank"], r["score"]) for r in map(json.loads, out.read_text().splitlines())}
    want = CrossEncoder(str(model)).rank_many([it["query"] for it in items], [it["documents"] for it in items])
    assert len(got) == sum(len(it["documents"]) for it in items)
    for it, hits in zip(items, want):
        for r, h in enumerate(hits):
            rank, score = got[(it["qid"], h["corpus_id"])]
            assert abs(score - h["score"]) <= 1e-6
    assert not (tmp_path / "ranked.jsonl.parts").exists()


def test_cli_compilation_cache_is_on_by_default_and_can_be_turned_off(model, tmp_path):
    """Without XENC_COMPILATION_CACHE the CLI caches compiled buckets under $XDG_CACHE_HOME/xenc_jax
    (one directory per jax version, backend and CPU); a second run adds no entries (every bucket
    came from the cache); XENC_COMPILATION_CACHE=0 writes nothing."""
    tsv = write_tsv(tmp_path / "p.tsv", 200)
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("XENC_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    cmd = XENC + ["score", str(tsv), "--model", str(model), "-o", str(tmp_path / "s.jsonl")]

    def entries():
        root = tmp_path / "xdg" / "xenc_jax"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    for _ in range(2):
        got = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-2000:]
        if _ == 0:
            first = entries()
    assert first and all(e.startswith("jax-") for e in first), first
    assert entries() == first  # nothing compiled the second time
    off = subprocess.run(cmd, env={**env, "XENC_COMPILATION_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path / "xdg2")},
                         capture_output=True, text=True, timeout=300)
    assert off.returncode == 0 and not (tmp_path / "xdg2").exists()


def test_output_parts_are_kept_and_merge_parts_assembles_them(model, tmp_path, capsys):
    """One process uses the same parts scheme as many (cli/jobs.py): --output-parts keeps
    part-p00000-*.tsv and the done marker; `xenc merge-parts OUTPUT` writes what a plain run writes,
    byte for byte. Several processes need files: stdin and stdout are refused before any model loads."""
    from argparse import Namespace

    from xenc_jax.cli.streamed import check_destination
    tsv = write_tsv(tmp_path / "pairs.tsv", 300, seed=4)
    plain, kept = tmp_path / "plain.tsv", tmp_path / "kept.tsv"
    assert main(["score", str(tsv), "--model", str(model), "--chunk-size", "128", "-o", str(plain)]) == 0
    assert main(["score", str(tsv), "--model", str(model), "--chunk-size", "128", "-o", str(kept),
                 "--output-parts"]) == 0
    assert "(kept; assemble with: xenc merge-parts" in capsys.readouterr().err
    assert not kept.exists()
    assert sorted(p.name for p in (tmp_path / "kept.tsv.parts").iterdir()) == [
        "done-p00000.json", "manifest.json", "part-p00000-000000.tsv", "part-p00000-000001.tsv",
        "part-p00000-000002.tsv"]  # 300 pairs in chunks of 128
    assert main(["merge-parts", str(kept)]) == 0
    assert "merged 300 results" in capsys.readouterr().err
    assert kept.read_bytes() == plain.read_bytes() and not (tmp_path / "kept.tsv.parts").exists()
    for given, why in ((dict(input=str(tsv), output="-"), "stdin and stdout cannot be shared"),
                       (dict(input="-", output=str(kept)), "stdin and stdout cannot be shared"),
                       (dict(input=str(tsv), output="-", output_parts=True), "--output-parts keeps the parts")):
        with pytest.raises(ValueError, match=why):
            check_destination(Namespace(output_format="jsonl", **given), 2 if "output_parts" not in given else 1)

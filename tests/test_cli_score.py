"""`xenc score` / `xenc rank` end to end on a local model directory, and their errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import transformers as tf

from tiny_hf import make_tiny
from xenc_jax.cli import main
from xenc_jax.cross_encoder import CrossEncoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, minilm_dir):
    path = tmp_path_factory.mktemp("ce")
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    make_tiny("bert", path, num_labels=1, seed=31, vocab_size=tok.vocab_size, max_position_embeddings=512)
    tok.save_pretrained(str(path))
    return path


PAIRS = [("what is jax", "JAX is a numerical computing library."), ("what is jax", "Berlin is a city."),
         ("", "empty query")]


def test_score_tsv_and_jsonl_match_library(model_dir, tmp_path, capsys):
    want = CrossEncoder(model_dir).predict(PAIRS)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS))
    assert main(["score", str(tsv), "--model", str(model_dir)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([r["score"] for r in rows], want, atol=1e-6)
    jl = tmp_path / "pairs.jsonl"
    jl.write_text("".join(json.dumps({"query": a, "passage": b}) + "\n" for a, b in PAIRS))
    out = tmp_path / "scores.tsv"
    assert main(["score", str(jl), "--model", str(model_dir), "--output-format", "tsv", "-o", str(out), "--pack"]) == 0
    np.testing.assert_allclose([float(x) for x in out.read_text().split()], want, atol=1e-5)


def test_rank_one_query_and_many(model_dir, tmp_path, capsys):
    docs = tmp_path / "docs.txt"
    docs.write_text("JAX is a numerical computing library.\nBerlin is a city.\nXLA compiles programs.\n")
    assert main(["rank", "--query", "what is jax", "--documents", str(docs), "--model", str(model_dir), "--top-k", "2"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["score"] >= rows[1]["score"]
    inp = tmp_path / "q.jsonl"
    inp.write_text(json.dumps({"qid": "a", "query": "jax", "documents": ["x", "y", "z"]}) + "\n"
                   + json.dumps({"qid": "b", "query": "xla", "documents": ["w"]}) + "\n")
    assert main(["rank", "--input", str(inp), "--model", str(model_dir)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["qid"] for r in rows] == ["a", "a", "a", "b"]


@pytest.mark.parametrize("content,message", [
    ("only one column\n", "expected two tab-separated texts"),
])
def test_score_bad_input_is_one_clear_line(model_dir, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    assert main(["score", str(bad), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_files_and_models(model_dir, tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope.tsv"), "--model", str(model_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err
    pairs = tmp_path / "p.tsv"
    pairs.write_text("a\tb\n")
    assert main(["score", str(pairs), "--model", str(tmp_path / "no" / "such" / "model")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["rank", "--model", str(model_dir)]) == 2
    assert "--query" in capsys.readouterr().err


def test_console_script_reads_stdin(model_dir):
    exe = os.path.join(os.path.dirname(sys.executable), "xenc")
    res = subprocess.run([exe, "score", "--model", str(model_dir), "--output-format", "tsv"],
                         input="what is jax\tJAX is a library.\n", capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 0.0 < float(res.stdout.strip()) < 1.0


def test_persistent_compilation_cache_is_reused_by_a_second_process(model_dir, tmp_path):
    """A second process with the same XENC_COMPILATION_CACHE loads compiled buckets from disk."""
    script = textwrap.dedent(f"""
        import jax, jax.monitoring
        hits = []
        jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
        from xenc_jax import CrossEncoder, BucketConfig
        ce = CrossEncoder({str(model_dir)!r}, max_length=64, buckets=BucketConfig(lengths=(16, 32)))
        ce.warmup()
        print(len(hits))
    """)
    env = {**{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},  # not the suite's cache
           "XENC_COMPILATION_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert any((tmp_path / "cache").iterdir())
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert int(second.stdout.split()[-1]) >= 3 > int(first.stdout.split()[-1])


def test_bad_json_lines_name_file_and_line(tmp_path):
    from xenc_jax.cli.io import read_jsonl, read_pairs, read_texts
    bad = tmp_path / "bad.jsonl"
    for read, good in ((read_texts, '{"text": "fine"}'), (read_jsonl, '{"a": 1}'), (read_pairs, '["q", "d"]')):
        bad.write_text(good + '\n\n{"text": oops}\n', encoding="utf-8")
        with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON"):
            read(str(bad))
    bad.write_text('{"text": "fine"}\n\n"also fine"\n', encoding="utf-8")
    assert read_texts(str(bad)) == ["fine", "also fine"]

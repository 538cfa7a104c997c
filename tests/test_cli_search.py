"""`xenc encode` and `xenc search` through xenc_jax.cli.main, on small inputs with tiny models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import transformers as tf

from tiny_hf import make_tiny
from xenc_jax.bi_encoder import BiEncoder
from xenc_jax.cli import main
from xenc_jax.cross_encoder import CrossEncoder


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_dir):
    """A tiny random bi-encoder (plain HF folder, mean pooling) and cross-encoder, real tokenizer."""
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    root = tmp_path_factory.mktemp("cli_models")
    make_tiny("bert", root / "bi", head=False, seed=1, vocab_size=tok.vocab_size)
    make_tiny("bert", root / "ce", num_labels=1, seed=2, vocab_size=tok.vocab_size)
    for name in ("bi", "ce"):
        tok.save_pretrained(str(root / name))
    return {"bi": str(root / "bi"), "ce": str(root / "ce")}


@pytest.fixture(scope="module")
def beir(tmp_path_factory, data_dir):
    """A 40-passage slice of the real MS MARCO corpus and 3 queries, as files."""
    src = data_dir / "msmarco-dl19-subset"
    root = tmp_path_factory.mktemp("beir")
    corpus = [json.loads(line) for line in open(src / "corpus.jsonl", encoding="utf-8")][:40]
    queries = [json.loads(line) for line in open(src / "queries.jsonl", encoding="utf-8")][:3]
    corpus[0]["title"] = "A title"
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "queries.tsv").write_text("query-id\ttext\n" + "".join(f"{q['_id']}\t{q['text']}\n" for q in queries))
    return {"root": root, "corpus": corpus, "queries": queries}


def test_encode_writes_npy_in_input_order(models, tmp_path, capsys):
    texts = ["a short one", "a much longer text " * 5, "", "third"]
    (tmp_path / "in.txt").write_text("\n".join(texts[:2]) + "\n\n" + texts[3] + "\n")  # blank lines skipped
    out = tmp_path / "emb.npy"
    assert main(["encode", str(tmp_path / "in.txt"), "--model", models["bi"], "-o", str(out), "--normalize",
                 "--no-progress"]) == 0
    got = np.load(out)
    want = BiEncoder(models["bi"]).encode([texts[0], texts[1], texts[3]], normalize_embeddings=True)
    assert got.shape == (3, 32) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-6
    assert "xenc texts: 3 in" in capsys.readouterr().err  # the one-line summary
    # JSONL with a key, and --batch-size
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in ["x", "y z"]))
    assert main(["encode", str(tmp_path / "in.jsonl"), "--key", "body", "--model", models["bi"],
                 "-o", str(out), "--batch-size", "1"]) == 0
    assert np.abs(np.load(out) - BiEncoder(models["bi"]).encode(["x", "y z"])).max() <= 1e-6


def test_encode_errors(models, tmp_path, capsys):
    assert main(["encode", str(tmp_path / "missing.txt"), "--model", models["bi"], "-o", str(tmp_path / "e.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("hello\n")
    assert main(["encode", str(tmp_path / "in.txt"), "--model", models["bi"], "-o", str(tmp_path / "e.bin")]) == 2
    assert "must end with .npy" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "in.txt"), "--model", models["bi"]]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "in.txt"), "--model", str(tmp_path / "nope"), "-o",
                 str(tmp_path / "e.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "in.txt"), "--model", models["bi"], "-o", str(tmp_path / "e.npy"),
                 "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def _rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_search_and_rerank(models, beir, tmp_path):
    root = beir["root"]
    out = tmp_path / "res.jsonl"
    assert main(["search", "--corpus", str(root / "corpus.jsonl"), "--queries", str(root / "queries.jsonl"),
                 "--model", models["bi"], "--top-k", "5", "-o", str(out)]) == 0
    rows = _rows(out)
    qids = [q["_id"] for q in beir["queries"]]
    assert [r["qid"] for r in rows] == [q for q in qids for _ in range(5)]
    assert [r["rank"] for r in rows[:5]] == [1, 2, 3, 4, 5]
    # same ranking as the library: title + " " + text, cosine
    bi = BiEncoder(models["bi"])
    texts = [("A title " + d["text"]) if i == 0 else d["text"] for i, d in enumerate(beir["corpus"])]
    sim = bi.similarity(bi.encode([q["text"] for q in beir["queries"]]), bi.encode(texts))
    ids = [d["_id"] for d in beir["corpus"]]
    for qi in range(3):
        top = np.argsort(-sim[qi], kind="stable")[:5]
        assert [r["doc_id"] for r in rows[qi * 5:qi * 5 + 5]] == [ids[i] for i in top]
        assert np.allclose([r["score"] for r in rows[qi * 5:qi * 5 + 5]], sim[qi][top], atol=1e-5)
    # TSV queries with a header give the same output
    out_tsv = tmp_path / "res_tsv.jsonl"
    assert main(["search", "--corpus", str(root / "corpus.jsonl"), "--queries", str(root / "queries.tsv"),
                 "--model", models["bi"], "--top-k", "5", "-o", str(out_tsv)]) == 0
    assert _rows(out_tsv) == rows
    # re-ranked: the first 3 reordered by the cross-encoder, the rest in bi-encoder order
    out_rr = tmp_path / "rr.jsonl"
    assert main(["search", "--corpus", str(root / "corpus.jsonl"), "--queries", str(root / "queries.jsonl"),
                 "--model", models["bi"], "--top-k", "5", "--rerank", models["ce"], "--rerank-top-k", "3",
                 "-o", str(out_rr)]) == 0
    rr = _rows(out_rr)
    ce = CrossEncoder(models["ce"])
    qtext = {q["_id"]: q["text"] for q in beir["queries"]}
    by_id = dict(zip(ids, texts))
    for qi in range(3):
        mine, base = rr[qi * 5:qi * 5 + 5], rows[qi * 5:qi * 5 + 5]
        assert sorted(r["doc_id"] for r in mine[:3]) == sorted(r["doc_id"] for r in base[:3])
        assert [r["doc_id"] for r in mine[3:]] == [r["doc_id"] for r in base[3:]]
        assert all(r["score"] is None for r in mine[3:])
        want = ce.predict([(qtext[mine[0]["qid"]], by_id[r["doc_id"]]) for r in mine[:3]])
        assert np.allclose([r["score"] for r in mine[:3]], want, atol=1e-6)
        assert [r["score"] for r in mine[:3]] == sorted((r["score"] for r in mine[:3]), reverse=True)


def test_search_with_precomputed_embeddings_and_errors(models, beir, tmp_path, capsys):
    root = beir["root"]
    emb = tmp_path / "corpus.npy"
    np.save(emb, BiEncoder(models["bi"]).encode([d["text"] for d in beir["corpus"]]))
    base = ["search", "--corpus", str(root / "corpus.jsonl"), "--queries", str(root / "queries.jsonl"),
            "--model", models["bi"]]
    assert main(base + ["--corpus-embeddings", str(emb), "-o", str(tmp_path / "r.jsonl")]) == 0
    assert len(_rows(tmp_path / "r.jsonl")) == 30
    np.save(tmp_path / "short.npy", np.zeros((3, 32), np.float32))
    assert main(base + ["--corpus-embeddings", str(tmp_path / "short.npy")]) == 2
    assert "len(corpus)=40" in capsys.readouterr().err
    assert main(base + ["--top-k", "0"]) == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err
    assert main(base + ["--rerank-top-k", "2"]) == 2
    assert "needs --rerank" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "title": "no text"}\n')
    assert main(["search", "--corpus", str(bad), "--queries", str(root / "queries.jsonl"), "--model", models["bi"]]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    bad.write_text('{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "again"}\n')
    assert main(["search", "--corpus", str(bad), "--queries", str(root / "queries.jsonl"), "--model", models["bi"]]) == 2
    assert "duplicate document id '1'" in capsys.readouterr().err
    bad.write_text("not json\n")
    assert main(["search", "--corpus", str(bad), "--queries", str(root / "queries.jsonl"), "--model", models["bi"]]) == 2
    assert "not valid JSON" in capsys.readouterr().err

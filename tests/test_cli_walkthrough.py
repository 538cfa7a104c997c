"""A new user's walk-through from a fresh clone (session 16, task E): each finding that gave a
traceback, a cryptic message or silently wrong output, now one line that names what was wrong and
how to go on. Each test failed before its fix (the finding is named in its docstring).

Kept cheap (CI time): no model is compiled; every check runs before a model loads, or on files
alone, except the two that need the real MiniLM folder (its tokenizer, then the damage).
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from xenc_jax.cli import main
from xenc_jax.hf.checkpoint_files import lazy_checkpoint, read_checkpoint
from xenc_jax.hf.model_folder import ModelFolderError

NO_MODEL = "/nonexistent/model"   # any load would fail with "does not exist": the checks come first


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err  # one line, no traceback
    return lines[0]


def _small_files(minilm_dir: Path, dst: Path, drop=("model.safetensors", "README.md")) -> Path:
    """The real MiniLM folder without its 90 MB weights (tokenizer and module files copied)."""
    return Path(shutil.copytree(minilm_dir, dst, ignore=shutil.ignore_patterns(*drop)))


def _safetensors(path: Path) -> bytes:
    from safetensors.numpy import save_file
    save_file({"a": np.arange(4000, dtype=np.float32).reshape(40, 100), "b": np.ones(7, np.float32)}, str(path))
    return path.read_bytes()


# ----------------------------------------------------------------------------- outputs

def test_an_output_that_is_an_input_or_a_directory_is_refused_before_any_model_loads(tmp_path, capsys):
    """`xenc score pairs.tsv -o pairs.tsv` replaced the input with its scores (exit 0), and `-o DIR`
    failed with "[Errno 21] Is a directory: '.DIR.xenc-tmp-...'" after all the scoring, leaving
    DIR.parts/ behind. Both now fail first (the model path does not exist, so any load would
    fail with another message), every input command alike."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("q\td\n")
    docs = tmp_path / "docs.txt"
    docs.write_text("d\n")
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query": "q", "documents": ["d"]}) + "\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "1", "text": "d"}) + "\n")
    anchors = tmp_path / "ap.jsonl"
    anchors.write_text(json.dumps({"anchor": "q", "positive": "d"}) + "\n")
    for argv, same in [(["score", str(pairs), "-o", str(pairs)], pairs),
                       (["rank", "--query", "q", "--documents", str(docs), "-o", str(docs)], docs),
                       (["rank", "--input", str(queries), "-o", str(queries)], queries),
                       (["search", "--corpus", str(corpus), "--queries", str(queries), "-o", str(corpus)], corpus),
                       (["mine", "--pairs", str(anchors), "--corpus", str(corpus), "-o", str(anchors)], anchors)]:
        before = same.read_bytes()
        assert main(argv + ["--model", NO_MODEL]) == 2
        assert f"--output {same} is the input file {same}: the results would replace it" in _error(capsys)
        assert same.read_bytes() == before
    out_dir = tmp_path / "outdir"
    out_dir.mkdir()
    assert main(["score", str(pairs), "-o", str(out_dir), "--model", NO_MODEL]) == 2
    assert f"--output {out_dir} is a directory; give a file name in it" in _error(capsys)
    assert not (tmp_path / "outdir.parts").exists()
    assert main(["score", str(out_dir), "--model", NO_MODEL]) == 2   # the input a directory: not "does not exist"
    assert f"input {out_dir} is a directory; give the input file" in _error(capsys)


def test_tsv_rows_never_hold_a_tab_or_line_break_of_a_value():
    """`xenc rank --input q.jsonl --output-format tsv` wrote a document holding a line break as two
    lines, and a qid holding a tab as two columns (exit 0): rows a TSV reader splits wrongly."""
    from xenc_jax.cli.writers import rows_text
    cols = ["qid", "rank", "corpus_id", "score", "text"]
    row = {"qid": "q1", "rank": 1, "corpus_id": 0, "score": 0.5, "text": "plain text"}
    assert rows_text([row], "tsv", cols) == "q1\t1\t0\t0.5\tplain text\n"
    with pytest.raises(ValueError, match=r"the text 'line one\\nline two' \(qid 'q1'\) holds a line break, which TSV "
                                         r"output cannot hold .*use --output-format jsonl"):
        rows_text([{**row, "text": "line one\nline two"}], "tsv", cols)
    with pytest.raises(ValueError, match=r"the qid 'a\\tb' holds a tab"):
        rows_text([{**row, "qid": "a\tb"}], "tsv", cols)
    assert json.loads(rows_text([{**row, "text": "a\tb\nc"}], "jsonl", cols))["text"] == "a\tb\nc"  # JSON keeps any text


def test_a_file_with_old_mac_line_endings_is_named_as_such(tmp_path):
    """Lines ended by \\r alone read as one line of 3 columns; the error advised --columns A,B, which
    would have paired "d1\\rq2" as one text: silently wrong pairs."""
    from xenc_jax.cli.io import iter_pairs
    path = tmp_path / "cr.tsv"
    path.write_bytes(b"q1\td1\rq2\td2\r")
    with pytest.raises(ValueError, match=r"cr\.tsv:1: 3 tab-separated column\(s\) and a carriage return .* convert "
                                         r"them to \\n"):
        list(iter_pairs(str(path)))
    path.write_bytes(b"q1\td1\r\nq\rx\td\n")   # CRLF, and a \r inside a text of a good line: rows as ever
    assert list(iter_pairs(str(path))) == [("q1", "d1"), ("q\rx", "d")]


def test_a_json_null_line_is_shown_as_json():
    """`got 'None'` for a JSON line `null`: the value as the user wrote it is `null`."""
    from xenc_jax.cli.io import iter_pairs
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.jsonl"
        path.write_text('null\n"just a string"\n')
        with pytest.raises(ValueError, match=r"p\.jsonl:1: expected a \[text1, text2\] list .*, got null$"):
            list(iter_pairs(str(path)))


# ----------------------------------------------------------------------------- search's embeddings

def test_corpus_embeddings_are_checked_before_the_model_loads(tmp_path, capsys):
    """--corpus-embeddings: a text file gave numpy's "contains pickled (object) data. If you trust
    the file you can load it unsafely ...", a cut file "Failed to read all data for array", neither
    naming the file; a wrong row count was reported only after the bi-encoder loaded."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) + "\n" for i in range(3)))
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\twhat\n")
    base = ["search", "--corpus", str(corpus), "--queries", str(queries), "--model", NO_MODEL, "--corpus-embeddings"]
    text = tmp_path / "emb.txt"
    text.write_text("not an array\n")
    assert main(base + [str(text)]) == 2
    assert f"--corpus-embeddings {text} is not a .npy file (it starts with b'not an'); write one with" in _error(capsys)
    good = tmp_path / "emb.npy"
    np.save(good, np.ones((3, 8), np.float32))
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:140])
    assert main(base + [str(cut)]) == 2
    assert f"--corpus-embeddings {cut} is not a readable .npy array (Failed to read all data" in _error(capsys)
    assert main(base + [str(tmp_path)]) == 2   # a directory, or /dev/null: "does not exist" said nothing true
    assert f"--corpus-embeddings {tmp_path} is not a file" in _error(capsys)
    rows = tmp_path / "rows.npy"
    np.save(rows, np.ones((5, 8), np.float32))
    assert main(base + [str(rows)]) == 2
    assert (f"--corpus-embeddings {rows} has shape (5, 8); it must be [len(corpus)=3, dim]: the embeddings of the 3 "
            f"documents of {corpus}, in file order") in _error(capsys)


def test_corpus_embeddings_of_another_dimension_are_named(tmp_path, capsys, minilm_dir):
    """[n, 8] embeddings for a 384-dim model: numpy's "embedding dims differ: query_embeddings has
    dim 384, corpus_embeddings has dim 8" named neither the flag nor the file."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) + "\n" for i in range(3)))
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\twhat\n")
    emb = tmp_path / "emb.npy"
    np.save(emb, np.ones((3, 8), np.float32))
    assert main(["search", "--corpus", str(corpus), "--queries", str(queries), "--model", str(minilm_dir),
                 "--corpus-embeddings", str(emb)]) == 2
    assert f"--corpus-embeddings {emb} holds vectors of 8, but {minilm_dir} embeds into 384" in _error(capsys)


# ----------------------------------------------------------------------------- training configs

def test_a_config_file_that_fails_to_run_is_one_line_with_its_line(tmp_path, capsys):
    """A preset with a syntax error or a failing import printed a 22-line traceback through runpy."""
    syntax = tmp_path / "syntax.py"
    syntax.write_text("import os\nCONFIG = (\n")
    assert main(["train", "--config", str(syntax)]) == 2
    assert f"{syntax}:2: '(' was never closed (a syntax error in the config file)" in _error(capsys)
    imports = tmp_path / "imports.py"
    imports.write_text("import os\nimport no_such_module_here\n")
    assert main(["eval", "--config", str(imports)]) == 2
    assert (f"{imports}:2: running the config file raised ModuleNotFoundError: No module named "
            "'no_such_module_here'") in _error(capsys)
    assert main(["train", "--config", str(tmp_path / "none.py")]) == 2   # load_config's own error, unchanged
    assert "config file" in _error(capsys)


# ----------------------------------------------------------------------------- damaged model folders

@pytest.mark.parametrize("damage", ["cut", "empty", "header"])
def test_a_damaged_safetensors_file_is_named(tmp_path, damage):
    """A model.safetensors cut short (an interrupted copy) raised safetensors' SafetensorError, no
    ValueError, so `xenc score` printed a 29-line traceback ending in "incomplete metadata, file not
    fully covered", naming no file."""
    full = _safetensors(tmp_path / "full.safetensors")
    folder = tmp_path / "m"
    folder.mkdir()
    n = {"cut": len(full) - 100, "empty": 0, "header": 5}[damage]
    (folder / "model.safetensors").write_bytes(full[:n])
    want = rf"{folder / 'model.safetensors'} \({n} bytes\) cannot be read \(SafetensorError: .*\): the file is damaged or cut short"
    for read in (read_checkpoint, lazy_checkpoint):
        with pytest.raises(ModelFolderError, match=want):
            read(folder)


def test_a_missing_shard_and_a_damaged_torch_file_are_named(tmp_path):
    """A shard listed in model.safetensors.index.json but absent said "No such file or directory"; a
    cut pytorch_model.bin gave torch's 38-line traceback."""
    torch = pytest.importorskip("torch")
    folder = tmp_path / "sharded"
    folder.mkdir()
    _safetensors(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}))
    for read in (read_checkpoint, lazy_checkpoint):
        with pytest.raises(ModelFolderError, match=r"model-00002-of-00002\.safetensors is missing: the folder's "
                                                   r"checkpoint index lists it as a shard"):
            read(folder)
    pt = tmp_path / "pt"
    pt.mkdir()
    torch.save({"a": torch.ones(300, 10)}, str(pt / "pytorch_model.bin"))
    raw = (pt / "pytorch_model.bin").read_bytes()
    (pt / "pytorch_model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFolderError, match=r"pytorch_model\.bin cannot be read as a PyTorch checkpoint with "
                                               r"weights_only=True \(.*\): it is damaged or cut short"):
        read_checkpoint(pt)


def test_a_cut_weights_file_and_a_missing_module_folder_on_the_command_line(tmp_path, capsys, minilm_dir):
    """The real MiniLM folder, its weights cut mid-tensor: one line naming the file. The same
    folder without its 1_Pooling/ (listed in modules.json) said "[Errno 2] No such file or
    directory: '.../1_Pooling/config.json'", with no way on."""
    texts = tmp_path / "t.txt"
    texts.write_text("a text\n")
    cut = _small_files(minilm_dir, tmp_path / "cut")
    with open(minilm_dir / "model.safetensors", "rb") as f:
        header = struct.unpack("<Q", f.read(8))[0]
        f.seek(0)
        (cut / "model.safetensors").write_bytes(f.read(8 + header + 1000))   # the header whole, the data cut
    assert main(["encode", str(texts), "-o", str(tmp_path / "e.npy"), "--model", str(cut)]) == 2
    assert f"{cut / 'model.safetensors'} ({8 + header + 1000} bytes) cannot be read" in _error(capsys)
    nopool = _small_files(minilm_dir, tmp_path / "nopool", drop=("model.safetensors", "README.md", "1_Pooling"))
    (nopool / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    assert main(["encode", str(texts), "-o", str(tmp_path / "e.npy"), "--model", str(nopool)]) == 2
    assert (f"{nopool / '1_Pooling' / 'config.json'} (Pooling config) does not exist: the model folder is "
            "incomplete") in _error(capsys)


def test_eval_takes_the_model_set_with_set(tmp_path, capsys):
    """README's `xenc eval --config C --set model=runs/stsb/final` ignored the --set and evaluated
    <output_dir>/final (an error naming runs/<name>/final, or silently another model where one
    was there); --model still comes first."""
    cfg = tmp_path / "c.py"
    cfg.write_text("from xenc_jax.train.config import EvalConfig, TrainConfig\n"
                   "from xenc_jax.train.data import DataSource\n"
                   "CONFIG = TrainConfig(name='n', output_dir=%r, train=DataSource(path='x.tsv'),\n"
                   "                     test=EvalConfig(data=DataSource(path='x.tsv')))\n"
                   % str(tmp_path / "out"))
    (tmp_path / "out" / "final").mkdir(parents=True)   # another model, which must not be evaluated
    asked = tmp_path / "trained" / "final"
    assert main(["eval", "--config", str(cfg), "--set", f"model={asked}"]) == 2
    assert f"model directory {asked} does not exist" in _error(capsys)
    assert main(["eval", "--config", str(cfg), "--set", f"model={asked}", "--model", str(tmp_path / "m2")]) == 2
    assert f"model directory {tmp_path / 'm2'} does not exist" in _error(capsys)


def test_a_text_flag_that_is_not_utf8_is_refused_before_any_model_loads(tmp_path, capsys):
    """`xenc rank --query $'caf\\xe9'` (a Latin-1 terminal) reached the tokenizer after the model
    loaded: "TextInputSequence must be str". Python keeps such argv bytes as lone surrogates."""
    docs = tmp_path / "docs.txt"
    docs.write_text("d\n")
    assert main(["rank", "--query", "caf\udce9", "--documents", str(docs), "--model", NO_MODEL]) == 2
    assert _error(capsys) == ("xenc rank: error: --query holds a byte that is not UTF-8 (0xe9 at character 3); "
                              "give UTF-8 text (check the terminal's or the script's encoding)")
    assert main(["encode", str(docs), "-o", str(tmp_path / "e.npy"), "--prompt", "\ud800", "--model", NO_MODEL]) == 2
    assert "--prompt holds a lone surrogate (\\ud800 at character 0)" in _error(capsys)
    assert main(["rank", "--query", "café 東京", "--documents", str(docs), "--model", NO_MODEL]) == 2
    assert "does not exist" in _error(capsys)   # valid Unicode passes the check (and fails at the model)


def test_a_pipe_as_the_input_file_is_named_as_a_pipe(tmp_path, capsys):
    """`xenc score <(cmd)` and `xenc score /dev/stdin` said "input file /dev/fd/63 does not exist"."""
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["score", str(fifo), "--model", NO_MODEL]) == 2   # refused before it is opened (no blocking read)
    assert f"input {fifo} is a pipe or device, not a file" in _error(capsys)


def test_the_missing_head_error_names_the_commands_that_take_allow_new_head():
    """`xenc search --rerank BI` / `xenc mine --rerank BI` said "(CLI: --allow-new-head)", a flag
    those commands do not have (a random head's reranking is meaningless there)."""
    from xenc_jax.cli import build_parser
    from xenc_jax.hf.model_folder import missing_head_error
    msg = str(missing_head_error("/m", ["classifier.weight"]))
    assert "(`xenc score` / `rank` / `tune`: --allow-new-head)" in msg
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("score", "rank", "tune"):   # what the message promises is there
        assert any("--allow-new-head" in a.option_strings for a in sub[name]._actions), name


def test_version_and_python_dash_m(capsys):
    """`xenc --version` said "the following arguments are required: command"; without the console
    script on PATH there was no `python -m` way to run the CLI."""
    import subprocess
    import sys
    import xenc_jax
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"xenc_jax {xenc_jax.__version__}"
    res = subprocess.run([sys.executable, "-m", "xenc_jax.cli", "--version"], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and res.stdout.strip() == f"xenc_jax {xenc_jax.__version__}", res.stderr


def test_score_can_ignore_config_keys_the_user_checked(tmp_path, capsys, minilm_dir):
    """An attribute xenc_jax does not handle is refused, and the message says to pass
    ignore_config_keys=: the library's escape hatch, which `xenc score` / `rank` did not have.
    With the flag, loading goes past the config (here to the next check: MiniLM has no head)."""
    folder = _small_files(minilm_dir, tmp_path / "m", drop=("model.safetensors", "README.md", "modules.json"))
    (folder / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "my_new_switch": True}))
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\td\n")
    assert main(["score", str(pairs), "--model", str(folder)]) == 2
    assert "config.json has attributes xenc_jax does not handle: ['my_new_switch']" in _error(capsys)
    assert main(["score", str(pairs), "--model", str(folder), "--ignore-config-keys", "my_new_switch"]) == 2
    assert f"{folder} has no trained classification head" in _error(capsys)


class _InterruptedStdin:
    """sys.stdin whose bytes end in a Ctrl-C after `lines` lines."""

    def __init__(self, lines: list[bytes]):
        self.buffer = self
        self._lines = lines

    def __iter__(self):
        yield from self._lines
        raise KeyboardInterrupt


def test_an_interrupted_stdin_job_leaves_no_parts(tmp_path, capsys, monkeypatch, minilm_dir):
    """`cat big.tsv | xenc score - -o s.jsonl`, Ctrl-C after some parts: "interrupted" (no resume:
    stdin cannot be read again) but s.jsonl.parts/ stayed, parts nothing could ever use."""
    import sys
    import transformers as tf
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    make_tiny("bert", tmp_path / "ce", num_labels=1, seed=5, vocab_size=tok.vocab_size, max_position_embeddings=32)
    tok.save_pretrained(str(tmp_path / "ce"))
    out = tmp_path / "s.jsonl"
    written = []
    from xenc_jax.cli import jobs
    write_part = jobs.PartsJob.write_part
    monkeypatch.setattr(jobs.PartsJob, "write_part", lambda self, k, w: (write_part(self, k, w), written.append(k)))
    monkeypatch.setattr(sys, "stdin", _InterruptedStdin([f"query {i}\tdocument {i}\n".encode() for i in range(6)]))
    assert main(["score", "-", "-o", str(out), "--chunk-size", "2", "--model", str(tmp_path / "ce")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "xenc score: interrupted"
    assert written == [0, 1, 2]   # the parts were written (the 6 lines before the Ctrl-C) ...
    assert not out.exists() and not (tmp_path / "s.jsonl.parts").exists()   # ... and none is left

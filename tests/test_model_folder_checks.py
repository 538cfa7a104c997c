"""A model folder is checked before anything is scored with it (issue 29, xenc_jax/hf/model_folder.py):
tokenizer files present and fitting the embedding table, every JSON file named when damaged, no
random head unless asked for, a modular ST cross-encoder refused by name; and the model side of
the CLI: no torch advisory, an offline hub error that names the packaged model, `xenc tune --show`
without weights, the installed transformers version in exported configs.

Each test fails on 88ac93f, where these folders loaded and scored silently (or named no file).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xenc_jax import BiEncoder, CrossEncoder
from xenc_jax.cli import main
from xenc_jax.hf.model_folder import MissingHeadError, ModelFolderError
from xenc_jax.hf.pretrained import load_pretrained

REPO = Path(__file__).resolve().parents[1]
PAIRS = [("how many people live in berlin?", "Berlin has 3.7 million inhabitants."),
         ("what is jax", "JAX is a numerical computing library.")]


@pytest.fixture(scope="module")
def tok(minilm_dir):
    import transformers as tf
    return tf.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tok):
    """Tiny random BERTs with MiniLM's real WordPiece tokenizer (vocab 30522 = the embedding's rows):
    "ce" with a trained-shape 1-label head, "bare" without a head, "st_bi" an ST bi-encoder folder."""
    from tiny_hf import make_tiny
    from xenc_jax.hf.st_folder import SentenceModules, write_st_folder
    root = tmp_path_factory.mktemp("folders")
    make_tiny("bert", root / "ce", num_labels=1, seed=3, vocab_size=tok.vocab_size, max_position_embeddings=128)
    make_tiny("bert", root / "bare", head=False, seed=4, vocab_size=tok.vocab_size, max_position_embeddings=128)
    for name in ("ce", "bare"):
        tok.save_pretrained(str(root / name))
    shutil.copytree(root / "bare", root / "st_bi")
    write_st_folder(root / "st_bi", SentenceModules(root / "st_bi", ("mean",), ops=(("normalize", None),)),
                    hidden_size=32, max_seq_length=64, do_lower_case=False)
    return root


def _copy(src: Path, dst: Path, drop=()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop))
    return dst


# ---- finding 1: tokenizer files and vocabulary ----

def test_a_folder_without_tokenizer_files_is_an_error(folders, tmp_path, capsys):
    """config.json + model.safetensors only: transformers 5 builds a 5-id tokenizer that maps every
    word to [UNK]; on 88ac93f `xenc score` printed scores from it with exit code 0."""
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(folders / "ce" / f, notok / f)
    want = r"notok has no tokenizer files .*found config\.json, model\.safetensors"
    with pytest.raises(ModelFolderError, match=want):
        CrossEncoder(notok)
    with pytest.raises(ModelFolderError, match=want):
        BiEncoder(notok)
    with pytest.raises(ModelFolderError, match=want):   # what training and evaluation load with
        load_pretrained(notok, head=True)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"{q}\t{d}\n" for q, d in PAIRS))
    assert main(["score", str(tsv), "--model", str(notok)]) == 2
    captured = capsys.readouterr()
    assert "has no tokenizer files" in captured.err and captured.out == ""


def test_a_tokenizer_larger_than_the_embedding_is_an_error(folders, tmp_path, tok):
    """MiniLM's 30522-token tokenizer beside a 120-row embedding: ids past the table would be
    clamped to its last row by JAX's gather, silently."""
    from tiny_hf import make_tiny
    make_tiny("bert", tmp_path / "small", num_labels=1, seed=1)   # vocab_size 120
    tok.save_pretrained(str(tmp_path / "small"))
    with pytest.raises(ModelFolderError, match=r"tokenizer has 30522 tokens but the model's word embedding has "
                                               r"120 rows .*ids 120\.\.30521 have no embedding"):
        CrossEncoder(tmp_path / "small")


def test_an_essentially_empty_tokenizer_is_an_error(folders, tmp_path):
    """A tokenizer.json with 5 tokens for a 30522-row embedding: the vocabulary is missing."""
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    empty = _copy(folders / "ce", tmp_path / "empty", drop=("tokenizer*", "vocab.txt", "special_tokens_map.json"))
    wl = Tokenizer(tm.WordLevel({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(str(empty))
    with pytest.raises(ModelFolderError, match=r"tokenizer has only 5 tokens \(.*\[UNK\].*\) for a word embedding "
                                               r"of 30522 rows: the folder's tokenizer vocabulary is missing"):
        CrossEncoder(empty)


# ---- finding 5: damaged JSON files are named ----

CE_FILES = ("config.json", "tokenizer_config.json", "config_sentence_transformers.json", "modules.json")
BI_FILES = ("config.json", "tokenizer_config.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json", "config_sentence_transformers.json")


@pytest.mark.parametrize("kind,name", [("ce", f) for f in CE_FILES] + [("st_bi", f) for f in BI_FILES])
def test_a_damaged_json_file_is_named_with_line_and_column(folders, tmp_path, kind, name):
    folder = _copy(folders / kind, tmp_path / kind)
    (folder / name).write_text('{"max_seq_length": 64,\n  oops}')
    load = CrossEncoder if kind == "ce" else BiEncoder
    with pytest.raises(ValueError) as e:
        load(folder)
    assert f"{folder / name}" in str(e.value) and "is not valid JSON (line 2 column 3: " in str(e.value), str(e.value)


def test_a_damaged_config_is_named_on_the_command_line(folders, tmp_path, capsys):
    folder = _copy(folders / "ce", tmp_path / "ce")
    (folder / "config.json").write_text("{bad")
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a\tb\n")
    assert main(["score", str(tsv), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'config.json'} is not valid JSON (line 1 column 2: Expecting property name" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_damaged_checkpoint_index_is_named(folders, tmp_path):
    folder = _copy(folders / "ce", tmp_path / "ce", drop=("model.safetensors",))
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json \(checkpoint index\) is not valid JSON "
                                         r"\(line 1 column 16: Expecting value\)"):
        CrossEncoder(folder)


# ---- no random head unless asked for ----

def test_a_bare_encoder_is_not_scored_with_a_random_head_unless_asked(folders, minilm_dir, tmp_path, capsys, caplog):
    with pytest.raises(MissingHeadError) as e:
        CrossEncoder(folders / "bare")
    msg = str(e.value)
    for part in ("has no trained classification head (classifier.weight, classifier.bias missing",
                 "meaningless scores", "xenc train", "xenc encode", "allow_new_head=True", "--allow-new-head"):
        assert part in msg, (part, msg)
    # the packaged all-MiniLM-L6-v2 is a bi-encoder folder: the error says so
    with pytest.raises(MissingHeadError, match=r"sentence-transformers bi-encoder folder \(modules\.json: "
                                               r"Transformer, Pooling, Normalize\)"):
        CrossEncoder(minilm_dir)
    # asked for: a new head, seeded, with the warning; the same as load_pretrained's (training's) head
    ce = CrossEncoder(folders / "bare", allow_new_head=True, seed=7)
    assert "initialised a new one with seed 7" in caplog.text
    pt = load_pretrained(folders / "bare", head=True, num_labels=1, seed=7)   # training's load: allowed
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax_leaves(ce.params["head"]), jax_leaves(pt.params["head"])))
    # the CLI: refused with the way on, then scored with --allow-new-head
    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"{q}\t{d}\n" for q, d in PAIRS))
    assert main(["score", str(tsv), "--model", str(folders / "bare")]) == 2
    captured = capsys.readouterr()
    assert "--allow-new-head" in captured.err and captured.out == ""
    assert main(["score", str(tsv), "--model", str(folders / "bare"), "--allow-new-head"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(PAIRS)
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(d + "\n" for _, d in PAIRS))
    assert main(["rank", "--query", "q", "--documents", str(docs), "--model", str(folders / "bare")]) == 2
    assert "--allow-new-head" in capsys.readouterr().err


def jax_leaves(tree):
    import jax
    return jax.tree.leaves(tree)


def test_training_from_a_bare_encoder_initialises_the_head(folders, tmp_path, caplog):
    """Training is where a new head is legitimate: it starts from the bare encoder (with the
    warning), and its export holds a trained head that CrossEncoder then loads without asking."""
    from test_train_utils import tiny_config, write_pairs
    from xenc_jax.train.loop import train
    data = write_pairs(tmp_path / "train.tsv", n=16)
    summary = train(tiny_config(folders / "bare", data, tmp_path / "out", max_steps=2))
    assert "has no trained classification head" in caplog.text and "initialised a new one" in caplog.text
    scores = CrossEncoder(summary["final_model"]).predict(PAIRS)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_xenc_eval_refuses_a_folder_without_a_head(folders, tmp_path):
    """`xenc eval` scores a trained model: a bare one would report a random head's metrics."""
    from test_train_utils import tiny_config, write_pairs
    from xenc_jax.train.config import EvalConfig
    from xenc_jax.train.data import DataSource
    from xenc_jax.train.loop import evaluate_model
    data = write_pairs(tmp_path / "dev.tsv", n=8)
    ev = EvalConfig(kind="correlation", data=DataSource(path=str(data), format="tsv"))
    cfg = tiny_config(folders / "bare", data, tmp_path / "out", test=ev)
    with pytest.raises(MissingHeadError, match="no trained classification head"):
        evaluate_model(cfg, ev)


def test_a_modular_st_cross_encoder_is_never_scored_with_a_random_head(folders, tmp_path):
    """The ettin-reranker layout built with sentence-transformers' own API: Transformer (feature
    extraction) -> Pooling (cls) -> Dense writing "scores". CrossEncoder computes the chain (its
    Dense is its head; hf/st_modules.py, tests/test_st_cross_encoder_modules.py), with or without
    allow_new_head; training's load, which would put a new head on the Transformer, refuses it by
    name (the module and modules.json)."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    t = Transformer(str(folders / "bare"), transformer_task="feature-extraction")
    st = STCrossEncoder(modules=[t, Pooling(t.get_embedding_dimension(), pooling_mode="cls"),
                                 Dense(32, 1, activation_function=None, module_output_name="scores")])
    st.save(str(tmp_path / "ettin"))
    st_scores = STCrossEncoder(str(tmp_path / "ettin")).predict(PAIRS)
    assert st_scores.shape == (2,)   # a working ST model
    for kw in ({}, {"allow_new_head": True}):   # fp32 end to end vs PyTorch: the project's 1e-4
        assert np.abs(CrossEncoder(tmp_path / "ettin", **kw).predict(PAIRS) - st_scores).max() <= 1e-4
    want = (r"ettin/modules\.json lists a Pooling module \(1_Pooling\) after the Transformer"
            r".*Transformer, Pooling, Dense")
    with pytest.raises(ModelFolderError, match=want):   # training from it would drop its trained Dense head
        load_pretrained(tmp_path / "ettin", head=True)


# ---- finding 8: the torch advisory ----

NO_TORCH = '''
import importlib.machinery as m, sys
class NoTorch(m.PathFinder):
    """`import torch` fails and find_spec("torch") is None: an install without torch."""
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [NoTorch if f is m.PathFinder else f for f in sys.meta_path]
'''


def test_no_torch_advisory_on_a_command_without_torch(folders, tmp_path):
    """Without torch importable, `import transformers` prints "PyTorch was not found..." (shown
    first, so the environment reproduces the finding); `xenc score` in that environment does not,
    and still scores."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "JAX_PLATFORMS": "cpu",
           "HF_HUB_OFFLINE": "1"}
    bare = subprocess.run([sys.executable, "-c", "import transformers, importlib.util as u; "
                           "print(u.find_spec('torch'))"], env=env, capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0 and bare.stdout.strip() == "None", bare.stderr[-2000:]
    assert "PyTorch was not found" in bare.stderr
    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"{q}\t{d}\n" for q, d in PAIRS))
    got = subprocess.run([sys.executable, "-c", "import sys; from xenc_jax.cli import main; sys.exit(main())",
                          "score", str(tsv),
                          "--model", str(folders / "ce")], env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert len(got.stdout.splitlines()) == len(PAIRS)
    assert "PyTorch was not found" not in got.stderr, got.stderr


def test_the_advisory_filter_drops_only_that_message():
    import logging

    from xenc_jax.hf import TORCH_ADVISORY
    logger = logging.getLogger("transformers")
    advisory = logger.makeRecord("transformers", logging.WARNING, __file__, 1, TORCH_ADVISORY + " and only ...",
                                 (), None)
    other = logger.makeRecord("transformers", logging.WARNING, __file__, 1, "Token indices sequence length is "
                              "longer than the specified maximum", (), None)
    assert not logger.filter(advisory) and logger.filter(other)


# ---- finding 9: the offline path ----

def test_offline_hub_error_names_the_packaged_model_and_the_default_falls_back_to_it(minilm_dir, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache: the hub fails at once (no network wait). The MS MARCO
    cross-encoder's error says to pass a local directory and names the packaged all-MiniLM-L6-v2's
    folder; sentence-transformers/all-MiniLM-L6-v2 itself resolves to that packaged copy."""
    code = ("import sys; from xenc_jax.hf.hub import resolve_model_dir\n"
            "print(resolve_model_dir('sentence-transformers/all-MiniLM-L6-v2'))\n"
            "try:\n    resolve_model_dir('cross-encoder/ms-marco-MiniLM-L6-v2')\n"
            "except OSError as e:\n    print('ERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    packaged, error = got.stdout.splitlines()
    assert Path(packaged) == Path(minilm_dir)
    assert error.startswith("ERROR could not get 'cross-encoder/ms-marco-MiniLM-L6-v2' from the Hugging Face hub")
    assert "pass a local model directory" in error and f"at {minilm_dir}" in error


def test_default_models_are_hub_ids_for_every_command():
    from xenc_jax.cli import build_parser
    p = build_parser()
    assert p.parse_args(["score", "x.tsv"]).model == "cross-encoder/ms-marco-MiniLM-L6-v2"
    assert p.parse_args(["rank", "--input", "x.jsonl"]).model == "cross-encoder/ms-marco-MiniLM-L6-v2"
    assert p.parse_args(["encode", "x.txt", "-o", "e.npy"]).model == "sentence-transformers/all-MiniLM-L6-v2"
    assert p.parse_args(["search", "--corpus", "c", "--queries", "q"]).model == "sentence-transformers/all-MiniLM-L6-v2"


# ---- finding 12: `xenc tune --show` loads no weights ----

@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_tune_show_reads_the_cache_without_loading_weights(folders, tmp_path, monkeypatch, capsys, kind):
    from xenc_jax import autotune
    monkeypatch.setenv("XENC_AUTOTUNE", "1")
    monkeypatch.setenv("XENC_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    src = folders / ("ce" if kind == "cross" else "st_bi")
    tune_kind = "pairs" if kind == "cross" else "texts"
    # the key computed from config + tokenizer equals the loaded model's, defaults and given lengths alike
    for length in (None, 48):
        model = (CrossEncoder(src, max_length=length, autotune=False) if kind == "cross"
                 else BiEncoder(src, max_seq_length=length, autotune=False))
        assert autotune.folder_key(tune_kind, src, "float32", length) == model.tuning.key
    entry = autotune.Tuning(autotune.Choice(256, 2048, 1, "float32"), "measured",
                            autotune.folder_key(tune_kind, src, "float32"))
    autotune._store(entry)
    noweights = _copy(src, tmp_path / "noweights", drop=("model.safetensors",))
    assert main(["tune", "--model", str(noweights), "--kind", kind, "--show"]) == 0
    assert "autotune (cache): rows of 256 x 2048 tokens" in capsys.readouterr().out


# ---- the exported config's transformers_version ----

def test_saved_config_names_the_installed_transformers(minilm_dir, tmp_path):
    import transformers

    from xenc_jax.hf.pretrained import save_pretrained
    assert json.loads((minilm_dir / "config.json").read_text())["transformers_version"] == "4.8.2"  # the source's
    pt = load_pretrained(minilm_dir, head=False, with_tokenizer=False)
    save_pretrained(tmp_path / "saved", pt.config, pt.params, head=False)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["transformers_version"] == transformers.__version__

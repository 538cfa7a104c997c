"""A new user trains as README says (session 17, task J): `xenc train --config PRESET --set ...`
on real data and the packaged MiniLM, then eval, mine -> train, resume. Each test here failed
before its fix (the finding is named in its docstring): a traceback or a cryptic message, a
setting silently misread, or work lost.

Kept cheap (CI time): the checks of settings run before any model loads; the one that trains
uses the tiny model of test_train_utils (what is checked is the interrupt and the resume, not a
trained result).
"""
from __future__ import annotations

import json
import logging
import signal
import threading

import numpy as np
import pytest
import transformers as tf

from test_train_utils import WORDS, make_tiny_model, minilm_path, write_pairs
from xenc_jax.cli import main
from xenc_jax.train import data as D

NO_MODEL = "/nonexistent/model"   # any load would fail with "does not exist": the checks come first


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """One tiny BERT cross-encoder folder for this file (building one costs seconds of torch)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err  # one line, no traceback
    return lines[0]


def _preset(path, model, data, out, *, evaluator: bool = True, test=None, max_length: int = 64, **kw):
    """A preset file as a user writes one (configs/ style): a pairs TSV, BCE, a dev evaluator.
    The training settings are test_train_utils.tiny_config's with epochs=2 (test_train_progress's
    run): the same programs, so the session's compilation cache (conftest) may already hold them."""
    ev = (f"EvalConfig(kind='correlation', data=DataSource(path={str(data)!r}, format='tsv'), "
          "metric='spearman', name='dev')") if evaluator else "None"
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    if test is not None:
        extra += f", test=EvalConfig(kind='correlation', data=DataSource(path={str(test)!r}, format='tsv'))"
    path.write_text(
        "from xenc_jax.train.config import EvalConfig, TrainConfig\n"
        "from xenc_jax.train.data import DataSource\n"
        "from xenc_jax.train.optim import OptimConfig\n"
        f"CONFIG = TrainConfig(name='walk', model={str(model)!r}, loss='bce', max_length={max_length},\n"
        f"    train=DataSource(path={str(data)!r}, format='tsv'), evaluator={ev},\n"
        f"    epochs=2, batch_size=8, bucket_lengths=(16, 32), seed=5, output_dir={str(out)!r},\n"
        "    log_every=1, progress=False, optim=OptimConfig(learning_rate=1e-3, warmup_ratio=0.1)"
        f"{extra})\n")
    return str(path)


# ----------------------------------------------------------------------------- settings

def test_rows_and_a_label_column_among_the_text_columns_are_refused_before_any_model_loads(tmp_path, capsys):
    """`--set evaluator.data.rows=16` (meaning the first 16) failed after the training data was
    read with "not enough values to unpack (expected 2, got 1)"; `--set train.columns=(4,5)` on
    STS-B (label_column 4, the score) trained the score as the first text without a word."""
    data = write_pairs(tmp_path / "pairs.tsv", n=8)   # text, text, label
    preset = _preset(tmp_path / "p.py", NO_MODEL, data, tmp_path / "out")
    assert main(["train", "--config", preset, "--set", "train.rows=16"]) == 2
    assert (f"{data}: rows must be (start, stop), 0-based data rows, stop excluded or None for the end, "
            "e.g. rows=(0,1000) for the first 1000; got rows=(16,)") in _error(capsys)
    assert main(["train", "--config", preset, "--set", "evaluator.data.rows=(0,)"]) == 2
    assert "rows must be (start, stop)" in _error(capsys)
    assert main(["train", "--config", preset, "--set", "train.columns=(1,2)"]) == 2
    assert (f"{data}: column 2 is both a text column (columns=(1, 2)) and the label_column; the label "
            "would be read as a text too. Set columns to the text columns only") in _error(capsys)
    assert main(["train", "--config", preset, "--set", "train.rows=(0,4)"]) == 2   # valid: on to the model
    assert f"model directory {NO_MODEL} does not exist" in _error(capsys)


def test_mined_jsonl_given_to_a_tsv_preset_names_the_format_and_its_keys(tmp_path, capsys):
    """`xenc mine --format n-tuple -o mined.jsonl`, then `xenc train --config
    configs/bi_encoder_mnrl.py --set train.path=mined.jsonl` (README: mined negatives feed
    training): the preset's format="tsv" read the JSON lines as one-column rows, "missing column 1
    (0-based): the row has only 1 column(s); is the file tab-separated as expected?"."""
    mined = tmp_path / "mined.jsonl"   # the columns `xenc mine --format n-tuple --num-negatives 2` writes
    mined.write_text(json.dumps({"query": "q", "answer": "a", "negative_1": "n1", "negative_2": "n2"}) + "\n")
    preset = _preset(tmp_path / "p.py", NO_MODEL, write_pairs(tmp_path / "pairs.tsv", n=8), tmp_path / "out",
                     evaluator=False)
    trip = ["--set", "task=bi_encoder", "--set", "loss=mnrl", "--set", "train.kind=triplets",
            "--set", "train.label_column=None", "--set", f"train.path={mined}"]
    assert main(["train", "--config", preset, *trip, "--set", "train.columns=0,1,2"]) == 2
    assert (f"{mined} is a .jsonl file, but the data format is 'tsv' (the preset's?): set format='jsonl' "
            "(or 'auto'), and columns / label_column to its column names; its first row's keys are "
            "['query', 'answer', 'negative_1', 'negative_2']") in _error(capsys)
    assert main(["train", "--config", preset, *trip, "--set", "train.format=auto",
                 "--set", "train.columns=query,answer,negative_1,negative_2"]) == 2
    assert f"model directory {NO_MODEL} does not exist" in _error(capsys)   # read: on to the model


def test_a_label_column_under_a_loss_that_reads_no_labels_is_reported(tmp_path, caplog, capsys):
    """configs/bi_encoder_mnrl.py pointed at STS-B pairs (`--set train.kind=pairs --set
    train.columns=5,6 --set train.label_column=4`) trained every pair, the unrelated ones (score
    0) too, as a positive for MNRL, and the scores were dropped without a word."""
    data = write_pairs(tmp_path / "pairs.tsv", n=8)
    preset = _preset(tmp_path / "p.py", NO_MODEL, data, tmp_path / "out", evaluator=False)
    with caplog.at_level(logging.WARNING, logger="xenc_jax.train.data"):
        assert main(["train", "--config", preset, "--set", "task=bi_encoder", "--set", "loss=mnrl"]) == 2
    assert f"model directory {NO_MODEL} does not exist" in _error(capsys)   # the data was read first
    assert (f"{data}: loss 'mnrl' does not read labels: the label column is ignored and every row trains as "
            "(anchor, positive, negatives...); set label_column=None, or choose a loss that reads them "
            "(cosent for scored pairs)") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xenc_jax.train.data"):
        assert main(["train", "--config", preset, "--set", "task=bi_encoder", "--set", "loss=mnrl",
                     "--set", "train.label_column=None"]) == 2
    assert "does not read labels" not in caplog.text


def test_eval_of_a_config_without_a_test_section_says_what_to_use(tmp_path, capsys):
    """`xenc eval --config configs/bi_encoder_mnrl.py` said only "the config has no test section"
    (the preset has an evaluator, measured with --split eval)."""
    data = write_pairs(tmp_path / "pairs.tsv", n=8)
    with_dev = _preset(tmp_path / "p.py", NO_MODEL, data, tmp_path / "out")
    assert main(["eval", "--config", with_dev, "--model", NO_MODEL]) == 2
    assert "the config has no test section; use --split eval (its evaluator section)" in _error(capsys)
    bare = _preset(tmp_path / "q.py", NO_MODEL, data, tmp_path / "out", evaluator=False)
    assert main(["eval", "--config", bare, "--split", "eval", "--model", NO_MODEL]) == 2
    assert ("the config has no evaluator section; add one with --set evaluator.data.path=FILE "
            "(and its kind, columns, label_column)") in _error(capsys)


def test_lists_cut_or_padded_by_list_size_are_reported(tmp_path, caplog):
    """configs/msmarco_distill_cross_encoder.py (list_size=8) fed a file that `xenc mine
    --num-negatives 3` wrote (4 documents a list) padded every list to 8: twice the pairs computed
    per step, silently; a file mined with more negatives than list_size lost the rest silently."""
    lists = tmp_path / "mined.jsonl"
    lists.write_text("".join(json.dumps({"query": f"q{i}", "answer": [f"d{i} {j}" for j in range(4)],
                                         "scores": [0.9, 0.5, 0.4, 0.3]}) + "\n" for i in range(3)))
    ex = D.read_examples(D.DataSource(path=str(lists), kind="lists", format="jsonl",
                                      columns=("query", "answer"), label_column="scores"))
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_path()))
    with caplog.at_level(logging.WARNING, logger="xenc_jax.train.data"):
        padded = D.make_groups(ex, tok, 32, group_size=8)
    assert padded.group_size == 8
    assert (f"{lists}: every list has at most 4 documents, but list_size=8: 50% of each step's pairs are "
            "padding; set list_size=4 (or 0: the longest list)") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xenc_jax.train.data"):
        cut = D.make_groups(ex, tok, 32, group_size=2)
    assert cut.group_size == 2 and cut.labels.tolist() == [[pytest.approx(0.9), 0.5]] * 3
    assert (f"{lists}: 3 of 3 lists have more than list_size=2 documents (up to 4): only the first 2 of "
            "each are trained on; set list_size=4 (or 0: the longest list) to train on all") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xenc_jax.train.data"):
        D.make_groups(ex, tok, 32, group_size=4)
        D.make_groups(ex, tok, 32)   # list_size 0: the longest list
    assert not caplog.records


def _three_labels(src, dst):
    """The shared tiny model as a 3-class classifier (config and classifier weights rewritten in
    numpy): a second make_tiny_model would import and run torch again (~10 s here)."""
    import shutil

    from safetensors.numpy import load_file, save_file
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}
    cfg["label2id"] = {f"LABEL_{i}": i for i in range(3)}
    (dst / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(dst / "model.safetensors"))
    rng = np.random.default_rng(0)
    w["classifier.weight"] = rng.normal(0, 0.02, (3, w["classifier.weight"].shape[1])).astype(np.float32)
    w["classifier.bias"] = np.zeros(3, np.float32)
    save_file(w, str(dst / "model.safetensors"))
    return dst


def test_a_classifier_export_names_its_classes_as_the_label_map_does(tiny_model, tmp_path):
    """configs/snli_cross_encoder.py (label_map contradiction 0, entailment 1, neutral 2) exported
    config.json with id2label LABEL_0..LABEL_2: which logit is which class was in no file of the
    model. Now the label_map's names, read back by transformers (as sentence-transformers reads it)."""
    import jax

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.train.config import TrainConfig
    from xenc_jax.train.loop import export_model
    model = _three_labels(tiny_model, tmp_path / "model")
    pt = load_pretrained(model, head=True)
    snli = {"contradiction": 0, "entailment": 1, "neutral": 2}
    cfg = TrainConfig(model=str(model), num_labels=3, loss="ce", max_length=32,
                      train=D.DataSource(path="snli.jsonl", label_map=snli))
    out = export_model(tmp_path / "export", cfg, pt.config, jax.device_get(pt.params), pt.tokenizer, model)
    got = tf.AutoConfig.from_pretrained(str(out))
    assert got.id2label == {0: "contradiction", 1: "entailment", 2: "neutral"} and got.label2id == snli
    # a label_map that does not name each class once (two names for one id) keeps LABEL_i
    two = D.DataSource(path="x", label_map={"yes": 1, "y": 1, "no": 0, "maybe": 2})
    assert D.label_names(two, 3) is None and D.label_names(D.DataSource(path="x", label_map=snli), 2) is None


# ----------------------------------------------------------------------------- interrupt, resume, eval

def _long_pairs(path, n: int = 12):
    """Pairs of 40-90 words (over 64 tokens each pair), labels in [0, 1]: a max_length of 64 and
    one of 128 see different tokens, so they score differently."""
    rng = np.random.default_rng(1)
    lines = []
    for i in range(n):
        a = rng.choice(WORDS, rng.integers(40, 90))
        b = rng.choice(WORDS, rng.integers(40, 90))
        lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{round(len(set(a) & set(b)) / len(set(a) | set(b)), 3)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ctrl_c_saves_the_running_step_a_rerun_resumes_and_eval_measures_the_export_as_it_scores(
        tiny_model, tmp_path, capsys, caplog, monkeypatch):
    """Ctrl-C during `xenc train` raised inside orbax's wait for the async save in flight: two
    tracebacks, `<step>.orbax-checkpoint-tmp` left behind, every step since the last due
    checkpoint lost, and "xenc train: interrupted" said nothing of what a rerun does. A rerun then
    printed nothing of resuming, nor any evaluation result until the end (INFO lines, -v only).
    Now the first Ctrl-C finishes the step, saves it, and names it; the rerun resumes there."""
    from xenc_jax.train import loop
    if threading.current_thread() is not threading.main_thread():
        pytest.fail("signal handlers need the main thread: run this test there")
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    model = tiny_model
    data = write_pairs(tmp_path / "pairs.tsv", n=40)   # 5 steps of 8 an epoch, 2 epochs
    long = _long_pairs(tmp_path / "long.tsv")           # the test split: pairs over 64 tokens
    out = tmp_path / "out"
    # no evaluator (its compile would add to the time): "resuming at step" shows the INFO lines
    argv = ["train", "--config", _preset(tmp_path / "p.py", model, data, out, evaluator=False, test=long,
                                         checkpoint_every=0)]
    save = loop.Run.save

    def save_then_ctrl_c(self, step, force=False):
        save(self, step, force)
        if step == 3 and not force:
            signal.raise_signal(signal.SIGINT)   # a real SIGINT, handled by whatever handler is set

    monkeypatch.setattr(loop.Run, "save", save_then_ctrl_c)
    train_logger = logging.getLogger("xenc_jax.train")
    try:
        assert main(argv) == 130
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        assert "xenc train: Ctrl-C: stopping after this step, which is saved as a checkpoint" in err
        assert (f"xenc train: interrupted; the last checkpoint is step 3 in {out / 'checkpoints'}: run the "
                "same command again to resume from it") in err
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3"]   # whole, nothing half-written
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handed back

        monkeypatch.setattr(loop.Run, "save", save)
        caplog.clear()   # the root logger stays at WARNING, as without -v
        assert main(argv) == 0   # no -v: the INFO lines of training are shown all the same
        summary = json.loads(capsys.readouterr().out)
        assert summary["steps"] == 10 and summary["steps_run_now"] == 7   # steps 4..10: resumed at 3
        assert "resuming at step 3 (epoch 0, batch 3)" in caplog.text
        # metrics.jsonl: a row per logged step (log_every=1) with loss, lr and the step time (was
        # missing: only pairs/s), both runs appended; the test metrics at the end
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train_rows = [r for r in rows if "train/loss" in r]
        assert [r["step"] for r in train_rows] == list(range(1, 11))
        assert all(r["train/step_seconds"] > 0 and r["train/lr"] >= 0 for r in train_rows)
        assert rows[-1]["test/spearman"] == summary["test_final"]["spearman"]

        # `xenc eval` of the export with a preset of another max_length (as the STS-B preset's 256
        # after `--set max_length=32` for training) measured it at the preset's: other scores
        # than CrossEncoder / sentence-transformers give it. Now the export's own, as they load it.
        caplog.clear()
        preset_128 = _preset(tmp_path / "p128.py", model, data, out, evaluator=False, test=long, max_length=128)
        assert main(["eval", "--config", preset_128]) == 0
        got = json.loads(capsys.readouterr().out)
        assert f"evaluating {out / 'final'} with max_length 64" in caplog.text
        # the same program as the run's own test evaluation, on the same weights: equal to rounding
        assert got["spearman"] == pytest.approx(summary["test_final"]["spearman"], abs=1e-6)
        assert got["pearson"] == pytest.approx(summary["test_final"]["pearson"], abs=1e-6)
    finally:
        signal.signal(signal.SIGINT, old_handler)
        train_logger.setLevel(logging.NOTSET)

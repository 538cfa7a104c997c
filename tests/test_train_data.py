"""Training data readers, the batch stream (fixed shapes, determinism, resume, host shards) and
bad-input errors that must come before any compute."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import transformers as tf

from test_train_utils import minilm_path, write_pairs
from xenc_jax.train import data as D
from xenc_jax.train.config import ConfigError, apply_overrides, load_config


@pytest.fixture(scope="module")
def tokenizer():
    return tf.AutoTokenizer.from_pretrained(str(minilm_path()))


def test_reads_sts_tsv_with_extra_columns(data_dir):
    cfg = load_config("configs/stsb_cross_encoder.py")
    ex = D.read_examples(cfg.train)
    assert len(ex) == 5749
    assert ex.texts[0] == ("A plane is taking off.", "An air plane is taking off.")
    assert ex.labels[0] == pytest.approx(1.0) and 0 <= min(ex.labels) and max(ex.labels) <= 1
    both = D.read_examples(dataclasses.replace(cfg.train, add_swapped=True))
    assert len(both) == 2 * 5749 and both.labels[:2] == [ex.labels[0]] * 2
    assert both.texts[:2] == [ex.texts[0], ex.texts[0][::-1]]
    with pytest.raises(D.DataError, match="add_swapped applies to pairs"):
        D.read_examples(dataclasses.replace(load_config("configs/bi_encoder_mnrl.py").train, add_swapped=True,
                                            rows=(0, 3)))


def test_reads_snli_jsonl_with_label_map_and_skips(data_dir):
    cfg = load_config("configs/snli_cross_encoder.py")
    ex = D.read_examples(cfg.train)
    assert set(ex.labels) == {0, 1, 2}
    D.check_labels(ex, "ce", 3)


def test_qqp_malformed_row_skipped_with_warning(data_dir, caplog):
    cfg = load_config("configs/qqp_cross_encoder.py")
    with caplog.at_level("WARNING"):
        ex = D.read_examples(cfg.train)
    assert len(ex) == 19999 and "skipped 1 bad row" in caplog.text


def test_triplets_and_lists(tmp_path, tokenizer):
    trip = tmp_path / "t.tsv"
    trip.write_text("q1\tp1\tn1\nq2\tp2\tn2\n")
    ex = D.read_examples(D.DataSource(path=str(trip), kind="triplets", columns=(0, 1, 2), label_column=None))
    g = D.make_groups(ex, tokenizer, 32)
    assert g.group_size == 2 and len(g.encodings) == 4
    lists = tmp_path / "l.jsonl"
    lists.write_text(json.dumps({"query": "q", "documents": ["a", "b", "c"], "labels": [1, 0, 2]}) + "\n"
                     + json.dumps({"query": "r", "documents": ["d"], "labels": [1]}) + "\n")
    src = D.DataSource(path=str(lists), kind="lists", columns=("query", "documents"), label_column="labels")
    g = D.make_groups(D.read_examples(src), tokenizer, 32)
    assert g.group_size == 3 and g.encodings[4] is None and g.labels.tolist() == [[1, 0, 2], [1, 0, 0]]
    s = D.BatchStream(g, D.StreamConfig(batch_size=2, bucket_lengths=(8,), max_length=32, shuffle=False))
    b = next(s)
    assert b.input_ids.shape == (6, 8) and b.valid.tolist() == [True] * 4 + [False] * 2
    # The rows are laid out by batching.fill_rows, inference's function: row q * G + s is slot s
    # of the step's group q, 0-based positions, one segment read at token 0, padding elsewhere.
    (ix,), G = s.plan(0)[0][:1], g.group_size
    assert b.cls_positions.tolist() == [[0]] * 6 and b.labels.tolist() == g.labels[ix].tolist()
    for r in range(6):
        e = ix[r // G] * G + r % G
        enc = g.encodings[e]
        n = 0 if enc is None else len(enc)
        assert b.example_ids[r, 0] == (e if enc is not None else -1)
        assert b.attention_mask[r].tolist() == [1] * n + [0] * (8 - n)
        assert b.position_ids[r].tolist() == list(range(n)) + [0] * (8 - n)
        assert b.input_ids[r, n:].tolist() == [0] * (8 - n) and (b.token_type_ids[r, n:] == 0).all()
        if enc is not None:
            assert b.input_ids[r, :n].tolist() == enc.input_ids.tolist()
            assert b.token_type_ids[r, :n].tolist() == enc.token_type_ids.tolist()
    arrays = b.arrays()  # what the jitted train step takes: the model inputs, labels and valid
    assert set(arrays) == {"input_ids", "attention_mask", "token_type_ids", "position_ids", "cls_positions",
                           "labels", "valid"}
    assert arrays["valid"].dtype == bool and arrays["labels"].dtype == np.float32


def test_stream_is_fixed_shape_deterministic_and_resumable(tmp_path, tokenizer):
    ex = D.read_examples(D.DataSource(path=str(write_pairs(tmp_path / "p.tsv", n=50))))
    g = D.make_groups(ex, tokenizer, 64)
    cfg = D.StreamConfig(batch_size=8, bucket_lengths=(8, 16), max_length=64, seed=9, group_factor=2)
    a = D.BatchStream(g, cfg)
    first = [next(a) for _ in range(11)]  # crosses into epoch 1 (7 batches per epoch)
    assert a.steps_per_epoch() == 7
    shapes = {x.input_ids.shape for x in first}
    assert shapes <= {(8, 8), (8, 16), (8, 64)}
    # every example exactly once per epoch
    seen = sorted(i for ix in a.plan(0)[0] for i in ix)
    assert seen == list(range(50))
    assert [x.tolist() for x in a.plan(0)[0]] != [x.tolist() for x in a.plan(1)[0]]  # reshuffled
    b = D.BatchStream(g, cfg)
    b.start_at({"epoch": 0, "index": 5})
    for want in first[5:]:
        got, want = next(b).arrays(), want.arrays()
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert b.position == {"epoch": 1, "index": 4}


def test_each_process_reads_only_its_shard(tmp_path):
    path = write_pairs(tmp_path / "p.tsv", n=11)
    src = D.DataSource(path=str(path))
    parts = [D.read_examples(src, process_index=i, process_count=3).texts for i in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert sorted(t for p in parts for t in p) == sorted(D.read_examples(src).texts)


def test_multi_process_plans_agree_on_steps_and_shapes(tmp_path, tokenizer):
    ex = [D.read_examples(D.DataSource(path=str(write_pairs(tmp_path / "p.tsv", n=37))), process_index=i,
                          process_count=2) for i in range(2)]
    groups = [D.make_groups(e, tokenizer, 64) for e in ex]
    cfg = D.StreamConfig(batch_size=8, bucket_lengths=(8, 16), max_length=64, seed=1)
    local = [D.BatchStream(g, cfg, process_index=i, process_count=2) for i, g in enumerate(groups)]
    plans = [s._local_plan(0) for s in local]
    lens = [[D.bucket_of(int(g.lengths[ix].max()), (8, 16), 64) for ix in p] for g, p in zip(groups, plans)]
    n = max(len(p) for p in plans)
    table = np.zeros((2, n), int)
    for i, l in enumerate(lens):
        table[i, :len(l)] = l

    def allgather(x):  # stands in for jax's process_allgather across the two processes
        return np.stack([np.asarray([n]) if x.shape == (1,) else table[i] for i in range(2)])
    streams = [D.BatchStream(g, cfg, process_index=i, process_count=2, allgather=allgather)
               for i, g in enumerate(groups)]
    batches = [[s.build(ix, L) for ix, L in zip(*s.plan(0))] for s in streams]
    assert [b.input_ids.shape for b in batches[0]] == [b.input_ids.shape for b in batches[1]]


# ----------------------------------------------------------------------------- bad input

def test_missing_column_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("a\tb\t0.5\nonly one column\n")
    with pytest.raises(D.DataError, match=r"bad.tsv:2: missing column 1 .*only 1 column"):
        D.read_examples(D.DataSource(path=str(p)))


def test_label_out_of_range_is_a_clear_error(tmp_path):
    p = write_pairs(tmp_path / "cls.tsv", n=10, classes=3)
    ex = D.read_examples(D.DataSource(path=str(p)))
    D.check_labels(ex, "ce", 3)
    with pytest.raises(D.DataError, match="out of range for 2 classes"):
        D.check_labels(ex, "ce", 2)
    p.write_text("a\tb\t4.0\n")
    with pytest.raises(D.DataError, match="out of range for binary cross-entropy"):
        D.check_labels(D.read_examples(D.DataSource(path=str(p))), "bce", 1)
    p.write_text("a\tb\tmaybe\n")
    with pytest.raises(D.DataError, match="not a number"):
        D.read_examples(D.DataSource(path=str(p)))


def test_empty_file_is_a_clear_error(tmp_path):
    p = tmp_path / "empty.tsv"
    p.write_text("\n\n")
    with pytest.raises(D.DataError, match="no examples"):
        D.read_examples(D.DataSource(path=str(p)))


def test_unknown_config_key_is_an_error_naming_close_keys():
    cfg = load_config("configs/stsb_cross_encoder.py")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rat'.*did you mean optim.learning_rate"):
        apply_overrides(cfg, ["optim.learning_rat=1e-5"])
    with pytest.raises(ConfigError, match="must be an int"):
        apply_overrides(cfg, ["batch_size=big"])
    with pytest.raises(ConfigError, match="cache_chunks must be a positive int dividing batch_size=16"):
        apply_overrides(cfg, ["cache_chunks=3"]).validate()
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\)"):
        apply_overrides(cfg, ["dropout=1.5"]).validate()
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\)"):
        apply_overrides(cfg, ["ema_decay=1.0"]).validate()
    with pytest.raises(ValueError, match=r"optim.layer_decay must be in \(0, 1\]"):
        apply_overrides(cfg, ["optim.layer_decay=0"])
    new = apply_overrides(cfg, ["optim.learning_rate=3e-5", "evaluator=None", "bucket_lengths=[16,32]"])
    assert new.optim.learning_rate == 3e-5 and new.evaluator is None and new.bucket_lengths == (16, 32)


@pytest.mark.parametrize("case", ["unknown_key", "missing_column", "extra_column", "label_range", "empty"])
def test_cli_bad_input_fails_before_compute(tmp_path, case, capsys, monkeypatch):
    """`xenc train` exits 2 with a one-line error, and never loads the model."""
    from xenc_jax import cli
    from xenc_jax.train import loop
    data = write_pairs(tmp_path / "p.tsv", n=8)
    sets = ["output_dir=" + str(tmp_path / "out"), "train.path=" + str(data), "evaluator=None", "test=None",
            "train.columns=(0,1)", "train.label_column=2", "train.label_scale=1.0"]
    if case == "unknown_key":
        sets.append("train.bogus=1")
    elif case == "missing_column":
        data.write_text("a\tb\t0.1\nno tabs here\n")
    elif case == "extra_column":  # a tab inside a text: the STS-B preset ignores extra columns, so undo that
        data.write_text("a\tb\t0.1\nq\tpassage with a\ttab\t0.2\n")
        sets.append("train.extra_columns=error")
    elif case == "label_range":
        data.write_text("a\tb\t0.1\nc\td\t3.0\n")
    else:
        data.write_text("")
    monkeypatch.setattr(loop, "load_pretrained", lambda *a, **k: pytest.fail("model loaded before the error"))
    argv = ["train", "--config", "configs/stsb_cross_encoder.py"] + [x for s in sets for x in ("--set", s)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("xenc train: error:") and len(err.strip().splitlines()) == 1
    want = {"unknown_key": "unknown config key 'train.bogus'", "missing_column": "missing column 1",
            "extra_column": "p.tsv:2: 4 columns, but the data reads only 3",
            "label_range": "out of range", "empty": "no examples"}[case]
    assert want in err


def test_streamed_jsonl_and_tsv_units_from_a_line_index(tmp_path, monkeypatch):
    """streaming=True on JSON Lines (a BOM, blank lines) and a TSV with a header: the line index
    cuts them into units (7 rows here) read from their byte offset, so an epoch holds every row
    once in an order mixed across the whole file, each row named by its real line; a window read
    first in a fresh reader (a resume) equals the same window read after the ones before; a bad
    row in a later unit is named by file:line when its window is read."""
    from xenc_jax.train import streaming
    monkeypatch.setattr(streaming, "TEXT_UNIT_ROWS", 7)
    lines = []
    for i in range(50):
        lines.append(json.dumps({"q": f"q{i}", "d": "d", "y": i / 100}))
        if i % 9 == 0:
            lines.append("  ")
    path = tmp_path / "rows.jsonl"
    path.write_text("\ufeff" + "\n".join(lines) + "\n")
    src = D.DataSource(path=str(path), columns=("q", "d"), label_column="y", streaming=True, window=10)
    ex = streaming.read_examples(src)
    assert ex.num_rows == 50 and len(ex.units.units) == 8
    for epoch in range(2):
        rows = [r for w in range(5) for r in ex.local_rows(0, epoch, w)]
        assert sorted(round(r["y"] * 100) for _, r in rows) == list(range(50))
        assert all(lines[n - 1] == json.dumps(r) for n, r in rows)  # where = the row's own line
        assert {round(r["y"] * 100) // 7 for _, r in rows[:10]} != {round(rows[0][1]["y"] * 100) // 7}
    fresh = streaming.read_examples(src)
    assert fresh.local_rows(0, 1, 3) == ex.local_rows(0, 1, 3)
    with pytest.raises(D.DataError, match="needs every row in memory.*set streaming false"):
        ex.texts  # what silver pairs read
    with pytest.raises(D.DataError, match="read whole .*says streaming; set streaming false"):
        D.read_examples(src)  # how eval and test data are read
    with pytest.raises(D.DataError, match="window must be a positive number of rows, got 0"):
        streaming.read_examples(dataclasses.replace(src, window=0))
    lists = dataclasses.replace(src, kind="lists", columns=("q", "d"), on_bad_row="skip")  # "d": no list
    with pytest.raises(D.DataError, match="streamed lists need list_size"):
        D.make_groups(streaming.read_examples(dataclasses.replace(lists, label_column=None)), None, 32)

    tsv = tmp_path / "rows.tsv"
    tsv.write_text("a\tb\ty\n" + "".join(f"x{i}\ty{i}\t{i if i != 23 else 'oops'}\n" for i in range(30)))
    src = D.DataSource(path=str(tsv), format="tsv", header=True, columns=("a", "b"), label_column="y",
                       streaming=True, window=10)
    ex = streaming.read_examples(src)  # the first 10 rows are checked now; row 23 when its window comes
    rows = [r for w in range(3) for _, r in ex.local_rows(0, 0, w)]
    assert sorted(int(r["y"]) for r in rows if r["y"] != "oops") == [i for i in range(30) if i != 23]
    with pytest.raises(D.DataError, match=r"rows\.tsv:25: label 'oops' is not a number"):
        for w in range(3):
            ex.window_examples(0, 0, w)

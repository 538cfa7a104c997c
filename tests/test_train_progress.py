"""Training console where no bar is drawn (stderr is not a terminal: a log file, CI, a pipe): plain
progress lines with the real step, loss and learning rate, instead of minutes of silence (issue 29,
finding 12)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from test_train_utils import make_tiny_model, tiny_config, write_pairs

LINE = re.compile(r"train: step (\d+)/(\d+) \(epoch ([\d.]+)\)  loss (\S+)  lr (\S+)  (\S+) steps/s  ETA (\S+)$")


def test_training_without_a_terminal_prints_the_logged_steps_and_losses(tmp_path, capsys, monkeypatch):
    from xenc_jax.train import loop
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)  # a line per step: each is checked below
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=40)
    cfg = tiny_config(model, data, tmp_path / "out", epochs=2, log_every=1, progress=None)
    capsys.readouterr()
    summary = loop.train(cfg)
    err = capsys.readouterr().err   # captured: not a terminal, so no tqdm bar
    lines = [m for m in map(LINE.match, err.splitlines()) if m]
    assert "\r" not in err and len(lines) == summary["steps"] == 10  # 40 pairs / 8 per step, 2 epochs
    logged = [json.loads(l) for l in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in logged if "train/loss" in r}
    assert [int(m.group(1)) for m in lines] == sorted(logged) == list(range(1, 11))
    for m in lines:
        row = logged[int(m.group(1))]
        assert int(m.group(2)) == 10 and float(m.group(3)) == pytest.approx(row["train/epoch"], abs=0.005)
        # printed with 6 (loss) and 3 (lr) significant digits: half a unit in the last digit
        assert float(m.group(4)) == pytest.approx(row["train/loss"], rel=5e-6)
        assert float(m.group(5)) == pytest.approx(row["train/lr"], rel=5e-3)
        assert float(m.group(6)) > 0
    assert lines[-1].group(7) == "0s"
    assert len({round(row["train/loss"], 6) for row in logged.values()}) > 1  # real, changing losses


def test_lines_are_throttled_and_average_the_steps_since_the_last_line(capsys):
    from xenc_jax.train.loop import ProgressLines
    now = [0.0]
    p = ProgressLines(total=100, start_step=0, steps_per_epoch=50, every_s=30.0, clock=lambda: now[0])
    losses = np.linspace(1.0, 0.01, 100)
    for step in range(1, 101):
        now[0] = 10.0 * step          # 10 s per step
        p.step(step, {"loss": losses[step - 1], "lr": 1e-3})
    got = [LINE.match(l) for l in capsys.readouterr().err.splitlines()]
    steps = [int(m.group(1)) for m in got]
    assert steps == [1] + list(range(4, 101, 3))    # first step, then every 30 s (100: the end, too)
    assert float(got[1].group(4)) == pytest.approx(np.mean(losses[1:4]), rel=5e-6)   # steps 2..4
    assert got[1].group(6) == "0.1" and got[1].group(7) == "16m00s"   # 96 steps left at 0.1 steps/s

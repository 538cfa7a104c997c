"""Multi-process training fails together (issue 18): a bad row in one process's share of the data
and an output_dir that the processes do not share both stop every process at start with the
same message, well before the coordination timeout; a damaged checkpoint is dropped by both
processes together and moved once. Real local processes joined by
jax.distributed (CPU, gloo), as in test_multihost.py."""
from __future__ import annotations

import sys
import time

import pytest

from test_multihost import REPO, free_port, run_processes
from test_train_utils import make_tiny_model, write_pairs

# bucket_lengths=(32,): one batch shape (write_pairs' pairs are <= 29 tokens), so each process
# compiles the train step once, not once per shape (compiles are most of the time on 2 cores);
# what is checked (both processes stop together / agree on a damaged step) does not depend on it.
CONFIG = """
import os, sys
sys.path.insert(0, {tests!r})
from test_train_utils import tiny_config
CONFIG = tiny_config({model!r}, {data!r}, os.environ.get("TEST_OUT", {out!r}), max_steps=2,
                    bucket_lengths=(32,))
"""


def _train_cmd(cfg, port: int, pid: int, *flags: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from xenc_jax.cli import main; sys.exit(main(sys.argv[1:]))",
            *flags, "train", "--config", str(cfg), "--coordinator", f"localhost:{port}", "--num-processes", "2",
            "--process-id", str(pid), "--init-timeout", "60"]


def _error_line(err: str) -> str:
    return next((l for l in err.splitlines() if "error:" in l), err[-2000:])


def test_bad_row_in_one_share_and_unshared_output_dir_stop_both_processes(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=24)
    lines = data.read_text().splitlines()
    lines[7] = "a row with one column"  # row 7 -> process 7 % 2 = 1: process 0 never reads it
    data.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "cfg.py"
    cfg.write_text(CONFIG.format(tests=str(REPO / "tests"), model=str(model), data=str(data),
                                 out=str(tmp_path / "out")))

    t = time.monotonic()
    port = free_port()
    results = run_processes([_train_cmd(cfg, port, i) for i in range(2)], timeout=120)
    seconds = time.monotonic() - t
    msgs = [_error_line(err) for _, _, err in results]
    assert all(rc != 0 for rc, _, _ in results), msgs
    assert msgs[0] == msgs[1], msgs
    assert "reading the data failed on process 1 of 2" in msgs[0] and f"{data}:8" in msgs[0], msgs[0]
    # both stopped at start: a process left waiting in a collective would hang until
    # run_processes kills it at 120 s. Start-up of two JAX processes on a loaded 2-core machine
    # (the suite runs two test workers) takes ~10-40 s.
    assert seconds < 80, f"took {seconds:.0f}s"

    # each process with its own output_dir: refused on both, naming the directory problem
    port = free_port()
    results = run_processes([_train_cmd(cfg, port, i) for i in range(2)], timeout=120,
                            envs=[{"TEST_OUT": str(tmp_path / f"out{i}")} for i in range(2)])
    msgs = [_error_line(err) for _, _, err in results]
    assert all(rc != 0 for rc, _, _ in results), msgs
    assert msgs[0] == msgs[1] and "is not shared" in msgs[0], msgs


def _corrupt(step_dir):
    """Random bytes over every array data file of a step (what test_train_checkpoint does)."""
    import os
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 0
             and p.parent.name == "d"]
    assert files, sorted(str(p) for p in step_dir.rglob("*"))
    for p in files:
        p.write_bytes(os.urandom(p.stat().st_size))


@pytest.mark.slow
def test_two_process_training_agrees_on_a_damaged_checkpoint(tmp_path):
    """Two processes train and checkpoint jointly; the newest checkpoint is then damaged. On
    resume both find the damage, agree, process 0 alone moves the step aside (exactly one copy in
    checkpoints.corrupt), and both resume from the previous step and finish."""
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=48)
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.py"
    cfg.write_text(CONFIG.format(tests=str(REPO / "tests"), model=str(model), data=str(data), out=str(out))
                   .replace("max_steps=2,", "max_steps=4, checkpoint_every=2, keep_checkpoints=3,"))
    results = run_processes([_train_cmd(cfg, port, i) for port in [free_port()] for i in range(2)], timeout=300)
    assert all(rc == 0 for rc, _, _ in results), [err[-2000:] for _, _, err in results]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "4"]
    _corrupt(out / "checkpoints" / "4")
    port = free_port()
    # the same config again (max_steps=4): the resumed processes run the very train step the first
    # ones compiled (from the persistent cache; a changed max_steps is a new LR schedule, a new
    # program, ~8 CPU-s more) and save step 4 anew after the damaged one was moved aside
    results = run_processes([_train_cmd(cfg, port, i, "-v") for i in range(2)], timeout=300)
    assert all(rc == 0 for rc, _, _ in results), [err[-2000:] for _, _, err in results]
    for _, _, err in results:
        assert "checkpoint step 4" in err and "unusable" in err, err[-2000:]
        assert "resuming at step 2" in err, err[-2000:]
    assert [p.name.split("-")[0] for p in (out / "checkpoints.corrupt").iterdir()] == ["4"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "4"]

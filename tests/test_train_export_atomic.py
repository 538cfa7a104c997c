"""Exports are atomic (issue 18): a kill during the export of `best/` leaves the previous export
whole and loadable, and the run resumes and finishes. Plus the directory swap of atomic.py on
its own: a failure inside the writer and a kill between its two renames."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_utils import REPO, make_tiny_model, write_pairs

# The training process under test. Two hooks, both only in this script: the evaluator reports a
# metric that grows with every call (so every evaluation exports a new best/, the real scores are
# computed and logged as usual), and from the second best/ export on, the writer finishes its
# files into the temporary directory, records that, and stalls there, which is when the test
# kills it. The real export_model writes the files in both cases.
SCRIPT = """
import hashlib, json, logging, sys, time
logging.basicConfig(level=logging.INFO)
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train_utils import tiny_config
from xenc_jax.train import loop
from xenc_jax.train.config import EvalConfig
from xenc_jax.train.data import DataSource

real_build, real_export, calls = loop.build_evaluator, loop.export_model, []

def build(*a, **kw):
    ev = real_build(*a, **kw)
    def counted(scorer, params):
        calls.append(1)
        return {{**ev(scorer, params), "calls": float(len(calls))}}
    counted.default_metric = "calls"
    return counted

def export(path, *a, **kw):
    out = real_export(path, *a, **kw)
    if not {slow}:
        return out
    if Path(path).name.startswith(".best"):
        files = {{str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(Path(path).rglob("*")) if p.is_file()}}
        exports = json.loads(log.read_text()) if log.exists() else []
        log.write_text(json.dumps(exports + [files]))
        if len(exports) >= 1:
            time.sleep(600)  # the second best/ export stalls before its rename: killed here
    return out

log = Path({log!r})
loop.build_evaluator, loop.export_model = build, export
# one batch shape (pairs <= 29 tokens): one compile of the train step, not one per shape
cfg = tiny_config({model!r}, {data!r}, {out!r}, max_steps=6, checkpoint_every=2, eval_every=2, bucket_lengths=(32,),
                  evaluator=EvalConfig(kind="correlation", data=DataSource(path={data!r}, format="tsv"),
                                       metric="calls"))
loop.train(cfg)
"""


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_sigkill_during_best_export_keeps_the_previous_export(tmp_path):
    from xenc_jax.cross_encoder import CrossEncoder
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=48)
    out, log = tmp_path / "run", tmp_path / "exports.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))

    def script(slow: bool) -> Path:
        path = tmp_path / f"train_{slow}.py"
        path.write_text(SCRIPT.format(tests=str(REPO / "tests"), model=str(model), data=str(data),
                                      out=str(out), log=str(log), slow=slow))
        return path

    proc = subprocess.Popen([sys.executable, str(script(True))], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and len(json.loads(log.read_text() or "[]")) >= 2:
                proc.send_signal(signal.SIGKILL)  # mid-export: the new best/ is in its temp dir
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-export (rc {proc.returncode}): {err[-3000:]}"
    first, second = json.loads(log.read_text())
    assert first != second  # the stalled export holds other weights
    # the earlier export is intact (byte for byte what its writer finished) and loads
    assert _hashes(out / "best") == first
    scores = CrossEncoder(str(out / "best")).predict([("a man is playing", "a man plays the guitar")])
    assert scores.shape == (1,) and float(scores[0]) == float(scores[0])
    assert not (out / "final").exists()

    # resume without the stall: continues from the last checkpoint, finishes, best/ and final/ load
    done = subprocess.run([sys.executable, str(script(False))], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming at step" in done.stderr
    for name in ("best", "final"):
        CrossEncoder(str(out / name)).predict([("a", "b")])
    assert not [p.name for p in out.iterdir() if ".xenc-" in p.name]  # no temporaries left


def test_atomic_dir_keeps_the_old_directory_on_failure_and_recovers_a_cut_swap(tmp_path):
    from xenc_jax.atomic import atomic_dir, recover_dir
    target = tmp_path / "best"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (target / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("v2, half written")
            raise RuntimeError("the writer died")
    assert (target / "a.txt").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    # a kill between the two renames: the target is gone, the old copy sits beside it
    os.replace(target, tmp_path / ".best.xenc-old")
    recover_dir(target)
    assert (target / "a.txt").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, not merged

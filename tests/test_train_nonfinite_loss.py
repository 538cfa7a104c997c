"""A diverged training run (NaN / inf loss or grad norm) never becomes a checkpoint, an evaluation
or an export (train/step.FiniteSteps, loop.Run.check_finite).

The fault is real, not mocked: a tiny BERT whose embedding row of one word ("zebra") is NaN, and
training data where one row (of 40) holds that word. Every step before the batch with that row is
finite; that step's loss is NaN, its gradients NaN, and from then on the weights too: what a run
that diverged looks like to the loop. Which step gets the row is fixed by the data order (seed 5 of
tiny_config, one bucket): step 5 of 6. The metrics log says so independently of the check (its
lines at steps 2 and 4 are finite means, at 6 NaN), and the resumed run names it again through the
other path (a save, where the first run's was a log line).

One batch shape (bucket_lengths=(32,), as test_train_checkpoint's runs) and max_steps=6: both
train() calls run one compiled step program (the second reads it from the test run's persistent
compilation cache).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest

from test_train_utils import nan_word, make_tiny_model, tiny_config, write_pairs

BAD_WORD = "zebra"


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite_loss")
    model = make_tiny_model(root / "model")
    wid = nan_word(model, BAD_WORD)
    data = write_pairs(root / "pairs.tsv", n=40, seed=1)
    lines = data.read_text().splitlines()
    _, text2, label = lines[3].split("\t")
    lines[3] = f"the {BAD_WORD} runs\t{text2}\t{label}"   # the only row with the word: in step 5's batch
    data.write_text("\n".join(lines) + "\n")
    return model, data, wid


def _assert_finite_but_the_bad_row(state_dir, wid: int) -> None:
    """Every saved number (params, optimizer moments, step) is finite but the bad word's own
    embedding row, NaN in the source model and never read before the diverged step (its gradient
    is zero there, so its Adam moments stay 0 and finite)."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint import tree
    saved = tree.to_flat_dict(ocp.StandardCheckpointer().restore(state_dir), sep="/")
    emb = next(k for k in saved if k.startswith("params/") and k.endswith("word/embedding"))
    for key, value in saved.items():
        value = np.asarray(value)
        if key == emb:
            assert np.isnan(value[wid]).all()
            value = np.delete(value, wid, axis=0)
        assert np.isfinite(value).all(), key


def _steps(ckpt_dir) -> list[int]:
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(diverging, tmp_path, caplog):
    """Run 1 reads the losses at its log lines (every 2 steps) and saves every 2 steps, keeping 1:
    the NaN of step 5 is read at step 6's log line, before step 6's save, which would have
    deleted step 4 (the last good state). The error names step 5 (the first bad one, not step 6
    where it was read), the dtype, the kept checkpoint and the fixes; the async save of step 4 is
    finished. Run 2 resumes from step 4 (so it is intact and resumable), reading the losses only
    at its saves (every step): it stops at step 5 again, before saving it."""
    from xenc_jax.runner import NonFiniteOutput
    from xenc_jax.train.loop import NonFiniteLoss, train
    model, data, wid = diverging
    out = tmp_path / "out"
    ckpt = out / "checkpoints"
    cfg = tiny_config(model, data, out, max_steps=6, bucket_lengths=(32,), log_every=2, checkpoint_every=2,
                      keep_checkpoints=1, async_checkpoint=True)
    with pytest.raises(NonFiniteLoss) as err:
        train(cfg)
    msg = str(err.value)
    assert isinstance(err.value, NonFiniteOutput) and "\n" not in msg
    assert msg.startswith("step 5: the training loss is nan (grad norm nan) with compute dtype float32, so "
                          "training stopped without saving a diverged state (stopped at step 6, where it was read); "
                          f"the latest checkpoint is step 4 in {ckpt}; resume=true goes on from it"), msg
    for fix in ("optim.learning_rate", "optim.max_grad_norm", "resume_may_change"):
        assert fix in msg
    # the log says the same without the check: finite means over steps 1-2 and 3-4, NaN over 5-6
    logged = {r["step"]: r["train/loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert sorted(logged) == [2, 4, 6]
    assert math.isfinite(logged[2]) and math.isfinite(logged[4]) and math.isnan(logged[6])
    # only step 4 (step 2 rotated away by it, as keep_checkpoints=1 says); no unfinished save left
    assert [p.name for p in ckpt.iterdir()] == ["4"]
    _assert_finite_but_the_bad_row(ckpt / "4" / "state", wid)
    assert not (out / "final").exists() and not (out / "summary.json").exists()

    # log lines and checkpoints are "how often" settings: a resume may change them
    with caplog.at_level(logging.INFO, logger="xenc_jax.train.loop"), pytest.raises(NonFiniteLoss) as err:
        train(dataclasses.replace(cfg, log_every=100, checkpoint_every=1))
    assert "resuming at step 4" in caplog.text
    msg = str(err.value)
    assert msg.startswith("step 5: the training loss is nan (grad norm nan) with compute dtype float32, so "
                          f"training stopped without saving a diverged state; the latest checkpoint is step 4 in "
                          f"{ckpt}"), msg
    assert _steps(ckpt) == [4]


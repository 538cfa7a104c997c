"""Resume policy (issue 18): a good checkpoint is never moved aside because the run that finds it
has other settings. A changed structure (ema_decay on) or a changed config digest (batch size,
data file) is an error that names the change and leaves every file as it was; resume=false sets
the old checkpoints aside instead of deleting them. Damaged checkpoints still fall back to the
previous one (test_train_checkpoint.py)."""
from __future__ import annotations

import dataclasses

import pytest

from test_train_utils import make_tiny_model, tiny_config, write_pairs


def _files(root):
    """Every file under `root` with its size and mtime: 'untouched' means all three equal."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_changed_settings_are_refused_and_nothing_is_moved(tmp_path):
    from xenc_jax.train.checkpoint import CheckpointMismatchError
    from xenc_jax.train.loop import train
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=48)
    out = tmp_path / "run"
    cfg = tiny_config(model, data, out, max_steps=4, checkpoint_every=2, keep_checkpoints=3)
    train(cfg)
    ckpts = out / "checkpoints"
    before = _files(ckpts)
    assert {k.split("/")[0] for k in before} == {"2", "4"}

    # 1. ema_decay on: the digest names the setting
    with pytest.raises(CheckpointMismatchError) as e:
        train(dataclasses.replace(cfg, ema_decay=0.9))
    assert "ema_decay: 0.0 -> 0.9" in str(e.value) and "Nothing was changed on disk" in str(e.value)
    # 2. the same, with the digest told to let ema_decay change: the state's structure differs,
    #    and the structure check (not a failed restore) says so, naming the EMA
    with pytest.raises(CheckpointMismatchError) as e:
        train(dataclasses.replace(cfg, ema_decay=0.9, resume_may_change=("ema_decay",)))
    assert "ema: this run has it" in str(e.value) and "ema_decay was off" in str(e.value)
    # 3. another optimizer state: gradient accumulation wraps AdamW in optax.MultiSteps
    with pytest.raises(CheckpointMismatchError) as e:
        train(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, grad_accum_steps=2),
                                  resume_may_change=("optim",)))
    assert "opt_state:" in str(e.value)
    # 4. a changed batch size and a changed data file, both named
    with pytest.raises(CheckpointMismatchError) as e:
        train(dataclasses.replace(cfg, batch_size=4))
    assert "batch_size: 8 -> 4" in str(e.value) and "resume_may_change=batch_size" in str(e.value)
    with open(data, "a") as f:
        f.write("a new row\tappended to the data\t0.5\n")
    with pytest.raises(CheckpointMismatchError) as e:
        train(dataclasses.replace(cfg, batch_size=4))
    lines = str(e.value).splitlines()
    assert any(l.strip().startswith("batch_size:") for l in lines)
    assert any(l.strip().startswith("train.file:") for l in lines), str(e.value)

    assert _files(ckpts) == before, "a refused resume changed the checkpoints"
    assert not (out / "checkpoints.corrupt").exists()

    # 5. resume=false: the old checkpoints are set aside whole, and the run starts at step 0
    fresh = train(dataclasses.replace(cfg, resume=False, max_steps=2))
    assert fresh["steps_run_now"] == 2
    aside = [p for p in out.iterdir() if p.name.startswith("checkpoints.set-aside-")]
    assert len(aside) == 1 and _files(aside[0]) == before


def test_resume_may_change_is_checked_and_accepts_a_comma_list():
    from xenc_jax.train.config import ConfigError, TrainConfig, apply_overrides
    from xenc_jax.train.data import DataSource
    base = TrainConfig(train=DataSource(path="x.tsv"))
    cfg = apply_overrides(base, ["resume_may_change=max_steps,optim.learning_rate"])
    assert cfg.resume_may_change == ("max_steps", "optim.learning_rate")
    cfg.validate()
    with pytest.raises(ConfigError, match="unknown keys \\['max_step'\\]"):
        apply_overrides(base, ["resume_may_change=max_step"]).validate()



def _assert_adamw_step(before, after, lr: float, optim) -> int:
    """`after` (a TrainState) is `before` (params) moved by one AdamW step at learning rate `lr`:
    each param by -lr * (mu_hat / (sqrt(nu_hat) + eps) + weight_decay * param (decayed leaves)),
    with mu, nu and the count after the step read from after.opt_state. Per entry the bound is one
    fp32 spacing of the param (p + update rounded once) plus 1e-5 of the update (our float64
    mu_hat / nu_hat vs optax's float32: a few ulp); another lr is off by a multiple of the update.
    Returns how many entries moved by far more than their rounding (a real step)."""
    import jax
    import numpy as np
    import optax

    from xenc_jax.train.optim import decay_mask
    adam, = [s for s in jax.tree.leaves(after.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    c, moved = int(adam.count), 0
    trees = (before, after.params, adam.mu, adam.nu, decay_mask(before))
    for p0, p1, m, v, decays in zip(*(jax.tree.leaves(t) for t in trees), strict=True):
        p0, p1, m, v = (np.asarray(x, np.float64) for x in (p0, p1, m, v))
        direction = (m / (1 - optim.b1 ** c)) / (np.sqrt(v / (1 - optim.b2 ** c)) + optim.eps)
        update = -lr * (direction + (optim.weight_decay * p0 if decays else 0.0))
        spacing = np.spacing(np.abs(p1).astype(np.float32)).astype(np.float64)
        assert (np.abs(p1 - p0 - update) <= spacing + 1e-5 * np.abs(update)).all(), np.abs(p1 - p0 - update).max()
        moved += int((np.abs(update) > 1e3 * spacing).sum())
    return moved


def test_resume_with_a_new_max_steps_applies_the_new_lr_schedule(tmp_path):
    """The LR schedule is a closure over the total steps, compiled into the train step (and into
    the persistent compilation cache the tests share). A run of 2 steps resumed with max_steps=4
    (resume_may_change) must take steps 2 and 3 with make_schedule(optim, 4): 2/3 and 1/3 of the
    lr (linear, one warmup step), not the 2-step schedule's 0 and 0. The lr actually used is read
    off each update (_assert_adamw_step: the params before and after, the optimizer state after;
    step 3's from the resumed run's checkpoint), and the logged lr (the same compiled program)
    says the same. The settings are the test above's (its 2- and 4-step programs are compiled
    already: persistent-cache hits when both run in one process)."""
    import json

    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from xenc_jax.train.checkpoint import Checkpointer
    from xenc_jax.train.loop import train
    from xenc_jax.train.optim import make_schedule
    model = make_tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "pairs.tsv", n=48)
    out = tmp_path / "run"
    cfg = tiny_config(model, data, out, max_steps=2, checkpoint_every=2, keep_checkpoints=3, log_every=1)
    two = train(cfg)["state"].params
    # checkpoint_every is not part of the digest: the resumed run keeps step 3 for the check below
    last = train(dataclasses.replace(cfg, max_steps=4, checkpoint_every=1, resume_may_change=("max_steps",)))["state"]
    assert int(last.step) == 4
    lrs = [float(make_schedule(cfg.optim, 4)(s)) for s in (2, 3)]
    assert np.allclose(lrs, [cfg.optim.learning_rate * 2 / 3, cfg.optim.learning_rate / 3], rtol=1e-6)
    assert [float(make_schedule(cfg.optim, 2)(s)) for s in (2, 3)] == [0.0, 0.0]   # what a stale program uses
    ckpt = Checkpointer(out / "checkpoints", every_steps=1)
    assert ckpt.all_steps() == [2, 3, 4]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), last)
    three = ckpt.manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    ckpt.close()
    assert int(three.step) == 3
    assert _assert_adamw_step(two, three, lrs[0], cfg.optim) > 1000
    assert _assert_adamw_step(three.params, last, lrs[1], cfg.optim) > 1000
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert np.allclose([r["train/lr"] for r in rows[2:]], lrs, rtol=1e-6)

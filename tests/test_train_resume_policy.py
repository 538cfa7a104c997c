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

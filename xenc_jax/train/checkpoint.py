"""Checkpoints with orbax's CheckpointManager: every N steps, keep K, written asynchronously;
resume exactly (params, optimizer state, step, data position, RNG); damaged checkpoints are
detected and skipped.

A checkpoint is a step directory with two items: `state` (the TrainState pytree) and `meta`
(JSON: data position, RNG key data, config digest, and a fingerprint of the params). Orbax
writes into a temporary directory and renames it when complete, so a process killed mid-save
leaves only a temporary directory, which orbax neither lists nor restores (and we clean up).
A checkpoint damaged afterwards (truncated or deleted files, flipped bytes) fails to restore
or fails the fingerprint check: it is moved aside to `<dir>.corrupt/` with a warning that says
why, and the previous good one is used.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


@jax.jit
def _fingerprint(params):
    leaves = jax.tree.leaves(params)
    return jnp.stack([jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.abs(x.astype(jnp.float32)))])
                      for x in leaves])


def fingerprint(params) -> list[list[float]]:
    """Per-leaf (sum, sum of |x|): cheap on device, and catches any damage that changes values."""
    return np.asarray(jax.device_get(_fingerprint(params)), np.float64).tolist()


def _weights(state):
    """What the fingerprint covers: the params, and the EMA when the state keeps one (it is what
    gets exported). Without an EMA the leaves are the params' alone, as in older checkpoints."""
    return (state.params, state.ema)


def _fingerprints_match(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    # A restore onto another mesh may sum in another order: allow float32 rounding, not damage.
    return bool(np.all(np.abs(a - b) <= 1e-4 * np.abs(b[:, 1:2]) + 1e-6))


class Checkpointer:
    def __init__(self, directory: str | Path, *, every_steps: int, keep: int = 2,
                 async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.every_steps = max(int(every_steps), 1)
        from orbax.checkpoint import checkpoint_managers as cm
        # Every N steps and on preemption. Not orbax's default InitialSavePolicy, which also
        # saved step 1 of every run (so checkpoint_every=0 still wrote a checkpoint at step 1).
        policy = cm.AnySavePolicy([cm.FixedIntervalPolicy(self.every_steps), cm.PreemptionCheckpointingPolicy()])
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policy, max_to_keep=max(int(keep), 1), create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
        """Starts an (async) save when `step` is due or `force`; returns whether it did."""
        if not force and not self.manager.should_save(step):
            return False
        meta = dict(meta, step=int(step), fingerprint=fingerprint(_weights(state)), saved_at=time.time())
        return bool(self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _quarantine(self, step: int, why: str) -> None:
        src = self.directory / str(step)
        dest = self.directory.parent / f"{self.directory.name}.corrupt" / f"{step}-{int(time.time())}"
        log.warning("checkpoint step %d in %s is unusable (%s); moved it to %s and trying the previous "
                    "one", step, self.directory, why, dest)
        if src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
        self.manager.reload()

    def restore_latest(self, abstract_state) -> tuple[object, dict] | None:
        """The newest checkpoint that restores and verifies, as (state, meta); None if there is
        none. `abstract_state`: a TrainState of jax.ShapeDtypeStruct with shardings."""
        self.wait()
        for step in reversed(self.all_steps()):
            try:
                got = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                state, meta = got["state"], got["meta"]
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
                self._quarantine(step, f"restore failed: {type(e).__name__}: {msg}")
                continue
            if not isinstance(meta, dict) or "fingerprint" not in meta:
                self._quarantine(step, "its metadata is missing or unreadable")
                continue
            if not _fingerprints_match(fingerprint(_weights(state)), meta["fingerprint"]):
                self._quarantine(step, "its parameters do not match the fingerprint written with them")
                continue
            if int(meta.get("step", step)) != step or int(jax.device_get(state.step)) != step:
                self._quarantine(step, f"it holds step {int(jax.device_get(state.step))}, not {step}")
                continue
            log.info("restored checkpoint step %d from %s", step, self.directory)
            return state, meta
        return None

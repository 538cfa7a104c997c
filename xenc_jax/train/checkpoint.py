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

Only integrity failures move a checkpoint. A good checkpoint that does not fit the run (its
config digest differs, or its state has another structure: an EMA turned on, another
optimizer) raises CheckpointMismatchError naming what differs, and nothing is moved: the run
that wrote it can still be resumed. With several processes every process checks, they agree
(one all-gather) on whether a step is damaged, and only process 0 moves files.
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

from ..multihost import any_process

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint is intact but was written by a run with other settings or another state."""


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _leaf_shapes(tree) -> dict[str, tuple]:
    """{'opt_state.0.mu.w': shape} of orbax's metadata tree (dicts/lists, None for empty nodes)."""
    out = {}

    def walk(t):
        if isinstance(t, dict):
            for v in t.values():
                walk(v)
        elif isinstance(t, (list, tuple)):
            for v in t:
                walk(v)
        elif t is not None:
            out[t.name] = tuple(t.shape)
    walk(tree)
    return out


def _structure_differences(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    """What differs, grouped by top-level field (params / opt_state / ema), with examples."""
    out = []
    for group in sorted({k.split(".")[0] for k in (*saved, *wanted)}):
        s = {k: v for k, v in saved.items() if k.split(".")[0] == group}
        w = {k: v for k, v in wanted.items() if k.split(".")[0] == group}
        only_s, only_w = sorted(set(s) - set(w)), sorted(set(w) - set(s))
        shapes = sorted(k for k in set(s) & set(w) if s[k] != w[k])
        if not s:
            out.append(f"{group}: this run has it ({len(w)} arrays), the checkpoint has none"
                       + (" (ema_decay was off when it was written)" if group == "ema" else ""))
        elif not w:
            out.append(f"{group}: the checkpoint has it ({len(s)} arrays), this run has none"
                       + (" (ema_decay was on when it was written)" if group == "ema" else ""))
        else:
            if only_s or only_w:
                out.append(f"{group}: {len(only_s)} arrays only in the checkpoint (e.g. {only_s[:2]}), "
                           f"{len(only_w)} only in this run (e.g. {only_w[:2]})")
            if shapes:
                out.append(f"{group}: {len(shapes)} arrays of another shape, e.g. {shapes[0]} "
                           f"{s[shapes[0]]} in the checkpoint, {w[shapes[0]]} now")
    return out


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
    close = np.abs(a - b) <= 1e-4 * np.abs(b[:, 1:2]) + 1e-6
    # A NaN / inf weight saved as such (a source model's NaN row of a token never trained on)
    # restores as such: not damage. Only a leaf already NaN could then hide damage.
    same_special = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    return bool(np.all(close | same_special))


class Checkpointer:
    def __init__(self, directory: str | Path, *, every_steps: int, keep: int = 2,
                 async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.every_steps = max(int(every_steps), 1)
        self._keep, self._async = keep, async_save
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

    def save(self, step: int, state, meta: dict, *, force: bool = False, before=None) -> bool:
        """Starts an (async) save when `step` is due or `force`; returns whether it did.
        `before()`: called once the save is decided, before anything is read or written; it
        raises to refuse the save (the loop: a diverged state is never saved)."""
        if not force and not self.manager.should_save(step):
            return False
        if before is not None:
            before()
        meta = dict(meta, step=int(step), fingerprint=fingerprint(_weights(state)), saved_at=time.time())
        return bool(self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _quarantine(self, step: int, why: str) -> None:
        """Called by every process with the same step (after they agreed): process 0 moves it."""
        src = self.directory / str(step)
        dest = self.directory.parent / f"{self.directory.name}.corrupt" / f"{step}-{int(time.time())}"
        log.warning("checkpoint step %d in %s is unusable (%s); moved it to %s and trying the previous "
                    "one", step, self.directory, why, dest)
        if jax.process_index() == 0 and src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
        _barrier(f"xenc-quarantine-{step}")
        self.manager.reload()

    def _check_fits(self, step: int, abstract_state, meta: dict, digest: dict | None, may_change) -> str | None:
        """Raise CheckpointMismatchError if the intact checkpoint `step` was written by another
        kind of run; return why it is damaged (unreadable metadata), or None if it fits."""
        from .digest import differences
        saved = self._saved_shapes(step)   # the shapes, or why they cannot be read
        wanted = {k: tuple(v.shape) for k, v in ocp.tree.to_flat_dict(abstract_state, sep=".").items()}
        structure = _structure_differences(saved, wanted) if isinstance(saved, dict) else []
        if digest is not None:
            if "config_digest" in meta:
                diff = differences(meta["config_digest"], digest, may_change)
                if diff:
                    raise CheckpointMismatchError(_settings_mismatch(step, self.directory, diff, structure))
            else:
                log.warning("checkpoint step %d has no config digest (written by an older version): "
                            "settings not compared", step)
        if isinstance(saved, str):
            return saved
        if structure:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} holds a training state of another structure "
                f"than this run's:\n  " + "\n  ".join(structure) + "\nNothing was changed on disk. Resume with "
                "the settings that wrote it (ema_decay, optimizer, model), or use a new output_dir, or "
                "--set resume=false to set the checkpoints aside and start again from step 0.")
        return None

    def _saved_shapes(self, step: int) -> dict[str, tuple] | str:
        """{flat key: shape} of the state saved at `step`, or why its metadata is unreadable."""
        reader, absl = ocp.StandardCheckpointer(), logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # it warns that the item has no step metadata file: the step has it
        try:
            return _leaf_shapes(reader.metadata(self.directory / str(step) / "state").item_metadata.tree)
        except Exception as e:  # noqa: BLE001 - unreadable metadata is damage
            return f"its state metadata is unreadable: {type(e).__name__}: {_first_line(e)}"
        finally:
            absl.setLevel(level)
            reader.close()

    def _try_step(self, step: int, abstract_state, digest, may_change):
        """(state, meta) or a string saying why the step is damaged. Mismatches raise."""
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged files
            return f"its metadata is unreadable: {type(e).__name__}: {_first_line(e)}"
        if not isinstance(meta, dict) or "fingerprint" not in meta:
            return "its metadata is missing or unreadable"
        if (why := self._check_fits(step, abstract_state, meta, digest, may_change)) is not None:
            return why
        try:
            state = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))["state"]
        except Exception as e:  # noqa: BLE001 - the structure fits, so this is damage
            return f"restore failed: {type(e).__name__}: {_first_line(e)}"
        if not _fingerprints_match(fingerprint(_weights(state)), meta["fingerprint"]):
            return "its parameters do not match the fingerprint written with them"
        if int(meta.get("step", step)) != step or int(jax.device_get(state.step)) != step:
            return f"it holds step {int(jax.device_get(state.step))}, not {step}"
        return state, meta

    def restore_latest(self, abstract_state, *, digest: dict | None = None,
                       may_change=()) -> tuple[object, dict] | None:
        """The newest checkpoint that restores and verifies, as (state, meta); None if there is
        none. `abstract_state`: a TrainState of jax.ShapeDtypeStruct with shardings. `digest`:
        this run's config digest, compared with the checkpoint's (keys in `may_change` may differ).
        Raises CheckpointMismatchError, moving nothing, for an intact checkpoint of another run."""
        self.wait()
        for step in reversed(self.all_steps()):
            got = self._try_step(step, abstract_state, digest, may_change)
            damaged = isinstance(got, str)
            if any_process(damaged):  # every process drops the step if any process found damage
                self._quarantine(step, got if damaged else "another process could not restore it")
                continue
            log.info("restored checkpoint step %d from %s", step, self.directory)
            return got
        return None

    def set_aside(self) -> Path | None:
        """resume=false over existing checkpoints: move them (all of them) to a dated sibling
        instead of deleting or overwriting them."""
        if not self.all_steps():
            return None
        dest = self.directory.parent / f"{self.directory.name}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}"
        self.wait()
        self.manager.close()
        if jax.process_index() == 0:
            shutil.move(str(self.directory), str(dest))
            self.directory.mkdir(parents=True)
        _barrier("xenc-set-aside")
        log.warning("resume=false: moved the existing checkpoints of %s to %s; starting at step 0",
                    self.directory, dest)
        self.__init__(self.directory, every_steps=self.every_steps, keep=self._keep, async_save=self._async)
        return dest


def _settings_mismatch(step: int, directory: Path, diff: list[str], structure: list[str]) -> str:
    """The refusal of a checkpoint written with other settings. resume_may_change is suggested
    only where it can work: named as the config keys it accepts (a label_map entry by its
    train.label_map), and not when the settings also change the state's structure (EMA on/off,
    optimizer state, heads, task): no resume_may_change restores that, the structure check refuses it."""
    from .config import TrainConfig, setting_keys
    head = (f"checkpoint step {step} in {directory} was written with other settings:\n  " + "\n  ".join(diff))
    ways = ("\nNothing was changed on disk. To go on: resume with the old settings; or use a new output_dir; "
            "or --set resume=false to set the checkpoints aside and start again from step 0")
    if structure:
        return (head + "\nThese settings also change the training state's structure, which no resume_may_change "
                "can allow:\n  " + "\n  ".join(structure) + ways + ".")
    valid = set(setting_keys(TrainConfig())) | {"train.file", "model.files"}

    def accepted(key: str) -> str:   # the key itself, else its nearest parent that is a config key
        parts = key.split(".")
        return next((".".join(parts[:n]) for n in range(len(parts), 0, -1)
                     if ".".join(parts[:n]) in valid or key.startswith("model.files.")), key)
    keys = sorted({accepted(d.split(":")[0]) for d in diff})
    return (head + ways + "; or, if these changes are intended, --set resume_may_change=" + ",".join(keys)
            + " (the resumed run will then differ from an uninterrupted one)")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""

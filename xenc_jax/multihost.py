"""Multi-host (multi-process) runs: start-up, which inputs each process takes, gathering results.

SPMD: N processes run the same program; each owns some devices and feeds only its own slice of
the input. A jitted call is a collective, so every process makes the same calls with the same
shapes (runner.BucketedRunner pads the schedule with empty batches to guarantee it).

  initialize(coordinator, num_processes, process_id)   jax.distributed.initialize, arguments or
                                           env ($XENC_COORDINATOR, $XENC_NUM_PROCESSES,
                                           $XENC_PROCESS_ID; JAX's cluster auto-detection when
                                           none is given), gloo collectives on CPU, and a
                                           bounded initialization_timeout so a missing process
                                           fails instead of hanging.
  process_slice(items)                     items[process_index::process_count]: strided, so
                                           every process gets the same mix of lengths (padding
                                           waste stays low) and nothing needs the total first
  slice_indices(n, index, count)           the input positions of one slice
  gather_slices(local, n)                  every process -> the full result in input order
                                           (multihost_utils.process_allgather)
  any_process / raise_together             agree on a flag / on a failure with one all-gather
  check_shared_dir                         every process sees the same output directory
The CLI does not slice: each process reads its own contiguous share of the input file and writes
its own resumable parts of the output (cli/shares.py, cli/jobs.py), one scheme for one process and
for many. See docs/multihost.md for launch commands.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

ENV_COORDINATOR = "XENC_COORDINATOR"
ENV_NUM_PROCESSES = "XENC_NUM_PROCESSES"
ENV_PROCESS_ID = "XENC_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 300, cpu_collectives: str | None = "gloo") -> bool:
    """Join a multi-process JAX run; returns True when one was started, False for 1 process.

    Arguments left None come from $XENC_COORDINATOR ("host:port" of process 0),
    $XENC_NUM_PROCESSES and $XENC_PROCESS_ID. With none of the three anywhere, and
    num_processes unset, this is a single-process run and nothing happens. Must run before any
    other JAX call that touches devices. A process that cannot reach all the others within
    `timeout_s` seconds raises instead of waiting forever.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if coordinator is None and num_processes is None and process_id is None:
        return False
    if num_processes is not None and (isinstance(num_processes, bool) or num_processes < 1):
        raise ValueError(f"num_processes must be >= 1, got {num_processes!r}")
    if num_processes == 1 and process_id in (None, 0):
        return False
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is out of range for num_processes={num_processes} "
                         f"(valid: 0..{num_processes - 1})")
    if coordinator is not None and not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", coordinator):
        raise ValueError(f"coordinator {coordinator!r} must be host:port (process 0's address)")
    missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes),
                              ("process_id", process_id)) if v is None]
    if missing:
        # Only cluster auto-detection (SLURM, TPU pods, ...) can fill the rest in.
        log.info("jax.distributed.initialize will auto-detect %s", ", ".join(missing))
    import jax
    # If a process is missing, XLA's coordination client aborts the process (a C++ fatal error,
    # no Python exception) after timeout_s; this line says what it was waiting for.
    print(f"xenc: process {process_id} of {num_processes} joining coordinator {coordinator}; "
          f"all processes must join within {timeout_s}s", file=sys.stderr, flush=True)
    if cpu_collectives:
        # Without it, cross-process collectives on the CPU backend are not implemented.
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=int(timeout_s))
    except Exception as e:  # XlaRuntimeError / RuntimeError; one message that says what to check
        raise RuntimeError(
            f"jax.distributed.initialize(coordinator={coordinator}, num_processes={num_processes}, "
            f"process_id={process_id}) failed after at most {timeout_s}s: {e}. Check that all "
            f"{num_processes or 'N'} processes were started with the same coordinator and "
            "num_processes and distinct process ids, and that process 0 can bind the port") from e
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def _where(index: int | None, count: int | None) -> tuple[int, int]:
    if index is None or count is None:
        import jax
        index = jax.process_index() if index is None else index
        count = jax.process_count() if count is None else count
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} out of range for {count} processes")
    return int(index), int(count)


def slice_indices(n: int, index: int | None = None, count: int | None = None) -> np.ndarray:
    """Input positions of slice `index` of `count` (default: this process): index, index+count, ..."""
    index, count = _where(index, count)
    return np.arange(index, n, count)


def process_slice(items: Sequence, index: int | None = None, count: int | None = None) -> list:
    """This process's share of `items` (items[index::count])."""
    index, count = _where(index, count)
    return list(items[index::count])


def _interleave(parts: list[np.ndarray], n: int) -> np.ndarray:
    count = len(parts)
    for k, part in enumerate(parts):
        want = len(range(k, n, count))
        if part.shape[0] != want:
            raise ValueError(f"slice {k} of {count} has {part.shape[0]} results; a total of {n} "
                             f"examples gives it {want}")
    out = np.empty((n,) + parts[0].shape[1:], parts[0].dtype)
    for k, part in enumerate(parts):
        out[k::count] = part
    return out


def gather_slices(local: np.ndarray, n: int) -> np.ndarray:
    """Collective: the results of every process's slice, merged into input order (length n).

    Every process must call it (with its own `local`) and gets the whole array back."""
    from jax.experimental import multihost_utils

    local = np.asarray(local)
    index, count = _where(None, None)
    if count == 1:
        return _interleave([local], n)
    rows = -(-n // count)  # the largest slice: pad every slice to it for one fixed-shape gather
    padded = np.zeros((rows,) + local.shape[1:], local.dtype)
    if local.shape[0] != len(range(index, n, count)):
        raise ValueError(f"process {index}: {local.shape[0]} local results, but slice {index} of "
                         f"{count} of {n} examples has {len(range(index, n, count))}")
    padded[:local.shape[0]] = local
    everything = np.asarray(multihost_utils.process_allgather(padded, tiled=False))
    return _interleave([everything[k, :len(range(k, n, count))] for k in range(count)], n)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: all must call it)."""
    import jax
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)], np.int32))))


class ProcessFailed(ValueError):
    """A step failed on some process; every process raises this with the same message."""


_MSG_BYTES = 4096


def raise_together(fn, *args, what: str = "a step", **kw):
    """Run `fn` on every process and agree on the outcome with one all-gather: if it raised on any
    process, every process raises ProcessFailed with the same message (the lowest failing
    process's error), instead of the healthy ones waiting in the next collective until the
    coordination timeout. Single process: `fn`'s own exception, unchanged."""
    import jax
    err, result = None, None
    try:
        result = fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - any failure must reach the other processes
        err = e
    if jax.process_count() == 1:
        if err is not None:
            raise err
        return result
    from jax.experimental import multihost_utils
    text = "" if err is None else f"{type(err).__name__}: {err}"
    raw = text.encode("utf-8")[:_MSG_BYTES]
    buf = np.zeros(_MSG_BYTES + 1, np.uint8)
    buf[0], buf[1:1 + len(raw)] = (err is not None), np.frombuffer(raw, np.uint8)
    got = np.asarray(multihost_utils.process_allgather(buf))
    failed = [i for i in range(got.shape[0]) if got[i, 0]]
    if not failed:
        return result
    i = failed[0]
    msg = bytes(got[i, 1:]).rstrip(b"\0").decode("utf-8", "replace")
    others = f" (and processes {failed[1:]})" if len(failed) > 1 else ""
    raise ProcessFailed(f"{what} failed on process {i} of {got.shape[0]}{others}: {msg}") from err


def check_shared_dir(path: str | os.PathLike) -> None:
    """Every process must see the same `path` (checkpoints and exports are written by process 0,
    or jointly by orbax, and read back by all): process 0 writes a token file, every process
    looks for it. A directory that is not shared is a clear error on every process at start,
    not a hang at the first checkpoint."""
    import jax
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    path = Path(path).absolute()
    token = int(multihost_utils.broadcast_one_to_all(np.asarray(np.random.randint(1, 2**31 - 1), np.int64)))
    probe = path / f".xenc-shared-{token}"
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text(str(token))
    multihost_utils.sync_global_devices("xenc-shared-dir-written")

    def look():
        if not probe.is_file():
            raise FileNotFoundError(
                f"output_dir {path} is not shared: process 0 wrote {probe.name} there and process "
                f"{jax.process_index()} does not see it. Every process of a training run must use the "
                "same output_dir on a shared filesystem (NFS, GCS FUSE, ...): checkpoints are "
                "written jointly and read back by all")
    try:
        raise_together(look, what="checking output_dir")
    finally:
        multihost_utils.sync_global_devices("xenc-shared-dir-checked")
        if jax.process_index() == 0:
            probe.unlink(missing_ok=True)

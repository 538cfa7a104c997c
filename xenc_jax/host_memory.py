"""Keep freed host memory in the process, so XLA:CPU does not page-fault its buffers in on every call.

Why: at every call, XLA:CPU mallocs each executable's temporary buffer on a worker thread and
frees it afterwards. For a MiniLM train step at batch 16 that is 218 MB. glibc serves blocks
this large with a fresh mmap and unmaps them on free; a worker thread's non-main arena falls
back to mmap even with mmap disabled (measured: M_MMAP_MAX=0 alone changes nothing). So every
call page-faults the whole buffer in again: 54k minor faults and ~0.1 s of kernel time per train
step, a fifth of its CPU time (docs/benchmarks.md). PyTorch does not pay this: its tensors are
small enough for glibc's heap.

`tune_malloc()` sets glibc's malloc to one arena (every thread allocates from the main heap),
no mmap for large blocks and a 1 GiB trim threshold. A freed buffer then stays in the heap and
the next call reuses it without faults. The cost: up to 1 GiB of freed memory stays mapped to
the process (the MiniLM train step's peak RSS went from 1.5 to 2.1-2.2 GB), and threads share
one malloc lock (XLA's compute threads rarely allocate). The first few steps still fault while
the heap grows to its working size.

Training applies it (`train.loop.train`, hence `xenc train`): a step's buffer is large, and the
faults cost 15% of a step's wall time. Inference does not: its buffers are small enough for
glibc's heap anyway, and one shared arena made scoring 3-6% slower (probably the tokenizer's and
XLA's threads contending for it; not profiled). Set XENC_MALLOC_TUNING=0 to leave malloc alone.
The setting is process-wide and only fully works before JAX starts its CPU backend, because
threads pick their arena at their first malloc: call `tune_malloc()` first thing in a script
that trains through lower-level APIs. Elsewhere (not glibc, not Linux) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "XENC_MALLOC_TUNING"
# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30

_state: dict = {"applied": False, "reason": "not tried"}


def tune_malloc() -> bool:
    """Apply the settings above once; True when they are in effect. See status() for why not."""
    if _state["applied"]:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        _state["reason"] = f"disabled by {ENV}"
        return False
    if not sys.platform.startswith("linux"):
        _state["reason"] = f"not Linux ({sys.platform})"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_libc_version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state["reason"] = "the C library is not glibc"
        return False
    gnu_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(mallopt(p, v) == 1 for p, v in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    _state.update(applied=ok, reason="applied" if ok else "mallopt refused a setting",
                  glibc=gnu_libc_version().decode())
    if ok and _backend_started():
        _state["reason"] = ("applied after JAX's backend started: threads that already allocated "
                            "keep their own malloc arena, so XLA's buffers may still be re-faulted")
    return ok


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def status() -> dict:
    """{"applied": bool, "reason": str, ("glibc": version)}."""
    return dict(_state)

"""host_memory.tune_malloc: XLA:CPU's per-call buffers stop page-faulting in once malloc is tuned.

Each case runs in a fresh process, because the setting only takes hold before JAX's CPU threads
start.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xenc_jax import host_memory

# A jitted call whose temporary buffer (48 MB, the first cumsum's result) is past glibc's mmap
# threshold: untuned, every call maps it fresh and faults in ~12k pages.
PROBE = r"""
import json, resource, statistics
from xenc_jax.host_memory import status, tune_malloc
tune_malloc()
import jax, jax.numpy as jnp

@jax.jit
def f(x):
    y = jnp.cumsum(x * 2.0, axis=0)
    return jnp.sum(jnp.cumsum(y[::-1], axis=1))

x = jnp.ones((3072, 4096), jnp.float32)
faults = []
for _ in range(31):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# Steady state: the last 15 calls. While the heap grows to its working size the first calls
# still fault, and on a loaded machine that took up to 14 calls.
print(json.dumps({"status": status(), "median_faults": statistics.median(faults[16:])}))
"""


def _probe(tuning: str) -> dict:
    env = dict(os.environ, XENC_MALLOC_TUNING=tuning, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_malloc_stops_per_call_page_faults():
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc tuning is for glibc on Linux")
    untuned, tuned = _probe("0"), _probe("1")
    assert untuned["status"] == {"applied": False, "reason": "disabled by XENC_MALLOC_TUNING"}
    if tuned["status"]["reason"] == "the C library is not glibc":
        pytest.skip("malloc tuning is for glibc; this C library is not")
    assert tuned["status"]["applied"] and tuned["status"]["reason"] == "applied", tuned
    # untuned: the temporaries are faulted in at every call (12k pages of 4 KiB per 48 MB; ~38k seen)
    assert untuned["median_faults"] > 8000, untuned
    # tuned: the freed buffer is reused from the heap
    assert tuned["median_faults"] < untuned["median_faults"] / 10, (tuned, untuned)


def test_tune_malloc_reports_why_not(monkeypatch):
    monkeypatch.setitem(host_memory._state, "applied", False)
    monkeypatch.setitem(host_memory._state, "reason", "not tried")
    monkeypatch.setenv(host_memory.ENV, "off")
    assert host_memory.tune_malloc() is False
    assert host_memory.status()["reason"] == "disabled by XENC_MALLOC_TUNING"

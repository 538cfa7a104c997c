"""Run a Python script in a fresh interpreter with N forced CPU devices.

XLA_FLAGS must be set before jax is first imported, and the rest of the suite imports jax with
one CPU device, so multi-device checks run in a child process: the test file re-runs itself as
a script (or runs a `-c` snippet), which prints "ALL OK" and exits 0 when every check passed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def device_env(devices: int) -> dict:
    """os.environ with `devices` CPU devices forced (other XLA flags kept) and the repo importable."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_on_devices(args: list[str], devices: int = 8, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python *args` with `devices` forced CPU devices; asserts exit 0 and "ALL OK" in stdout."""
    proc = subprocess.run([sys.executable, *args], env=device_env(devices), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    print(proc.stdout)  # per-check details (pytest -s / -rA shows them)
    assert proc.returncode == 0, f"checks on {devices} devices failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert "ALL OK" in proc.stdout, proc.stdout
    return proc


# ---- the check every family's 8-device test runs (in the child, after jax sees the devices) ----

MESHES = ("dp", "fsdp", "tp")  # data=8, fsdp=8, data=4 x model=2 (4 tiny heads over model=2)


def encoders_equal_on_meshes(family: str, ce_dir: str, st_dir: str, *, words: str, n_pairs: int,
                             lengths: tuple, ce: dict, be: dict) -> int:
    """CrossEncoder scores and BiEncoder embeddings on each sharded mesh equal one device's, within
    1e-5 (fp32 sums regrouped across devices, not a different computation); prints each max diff,
    then "ALL OK" and returns 0, or the failures and 1. `ce` / `be` map pack (False / True) to the
    strategies checked with that packing. `n_pairs` random pairs of 1-7 / 1-89 `words` and ("", "")."""
    import dataclasses

    import jax

    from xenc_jax.batching import BucketConfig
    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.sharding import make_mesh
    import numpy as np
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    vocab = words.split()
    text = lambda n: " ".join(rng.choice(vocab, n))
    pairs = [(text(int(rng.integers(1, 8))), text(int(rng.integers(1, 90)))) for _ in range(n_pairs)] + [("", "")]
    sentences = [p[1] for p in pairs]
    mesh_of = {"dp": ("data=8", lambda: make_mesh(8, 1)), "fsdp": ("fsdp=8", lambda: make_mesh(1, 1, fsdp=8)),
               "tp": ("data=4,model=2", lambda: make_mesh(4, 2))}
    buckets = BucketConfig(lengths=lengths, batch_size=8)
    failures = []

    def compare(kind, run, pack, strategies):
        want = run()
        for strategy in strategies:
            name, mesh = mesh_of[strategy]
            got = run(mesh=mesh(), sharding=strategy)
            diff = float(np.abs(got - want).max())
            print(f"{family} {kind} {name} {strategy} pack={pack}: max diff {diff:.2e}")
            if got.shape != want.shape or diff > 1e-5:
                failures.append(f"{kind} {strategy} pack={pack}: {diff}")

    for pack in (False, True):
        b = dataclasses.replace(buckets, pack=pack, max_segments=4) if pack else buckets
        if ce.get(pack):
            compare("cross-encoder", lambda **kw: CrossEncoder(ce_dir, max_length=128, buckets=b, **kw).predict(pairs),
                    pack, ce[pack])
        if be.get(pack):
            compare("bi-encoder", lambda **kw: BiEncoder(st_dir, buckets=b, **kw).encode(sentences), pack, be[pack])
    return report(failures)


def report(failures: list[str]) -> int:
    """A child check's exit: print each failure, else "ALL OK" (what run_on_devices asserts)."""
    for f in failures:
        print("FAIL", f)
    if failures:
        return 1
    print("ALL OK")
    return 0

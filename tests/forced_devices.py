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

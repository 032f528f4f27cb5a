#!/usr/bin/env bash
# Create .venv (if missing) and install qsnn with what the tests and the main job need.
# Pins the CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.qsnn-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==${QSNN_TORCH_VERSION:-2.13.0}"
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,all]"
    touch "$stamp"
fi

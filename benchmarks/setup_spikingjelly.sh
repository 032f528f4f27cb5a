#!/usr/bin/env bash
# Install SpikingJelly 2.0 for `benchmarks/train_throughput.py --spikingjelly`.
#
# It goes into benchmarks/.sj (git-ignored), without its dependencies and outside the project's
# environment: the benchmark reuses the project's torch and numpy and puts benchmarks/.sj on
# sys.path only when --spikingjelly is given. SpikingJelly imports loguru only to disable its
# logger; the benchmark stubs it when it is missing.
#
# Usage: bash benchmarks/setup_spikingjelly.sh   (PYTHON=... to use another interpreter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
"$python" -m pip install --no-deps --upgrade --target "$here/.sj" "spikingjelly==2.0.0"
# Keep the vendored tree out of git and out of ruff (which honours .gitignore files).
printf '*\n' > "$here/.sj/.gitignore"
"$python" - <<PY
import sys
sys.path.insert(0, "$here/.sj")
sys.path.insert(0, "$here")
from train_throughput import import_spikingjelly, sj_version
assert import_spikingjelly() is not None, "spikingjelly does not import"
print("spikingjelly", sj_version(), "imports")
PY

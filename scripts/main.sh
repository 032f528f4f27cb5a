#!/usr/bin/env bash
# README's first command: set up (if needed) and run qsnn's main job on data that ships with
# the install, offline. Extra arguments go to the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qsnn demo "$@"

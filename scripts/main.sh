#!/usr/bin/env bash
# README's first command: set up (if needed) and run qsnn's main job offline: every allocation
# b_w/b_s/T of bit budget 8 trained (2 seeds each) on the embedded digits dataset, then the report in
# runs/main/ (report.md, report.html, figures). Extra arguments go to `qsnn sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qsnn sweep --model small_convnet --dataset digits --budget 8 \
    --epochs 15 --seeds 2 --batch-size 32 --lr 3e-3 --out runs/main "$@"

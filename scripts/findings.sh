#!/usr/bin/env bash
# The paper's four findings, measured on real data (issue 13), into docs/sweeps/:
#
#   docs/sweeps/cifar10-findings   CIFAR-10, small_convnet, 3 seeds, 4 epochs (the budget-4
#                                  recipe of BENCHMARKS.md): F1 and F2 from 1/4/1, 1/2/2,
#                                  1/1/4 (budget 4, b_w = 1); F3 from 1/4/1, 4/4/1, 16/4/1
#   docs/sweeps/nmnist-findings    N-MNIST (the 1,000/100 recordings of nmnist-small), budget
#                                  16 at b_w = 1, 3 seeds, 10 epochs at batch 32 (900
#                                  training recordings make 8 steps an epoch at batch 128): F4
#
#   bash scripts/findings.sh CIFAR_ROOT NMNIST_ROOT [SWEEP ARGS...]   (default: --workers 2)
#
# More workers join a sweep from other shells or machines with the same `qsnn sweep` line
# plus `--no-report` (and `--threads 1` on a shared machine).
#
# Every run uses qsnn's neuron defaults of version 2 (the level step chosen by issue 12's
# measurement), named explicitly so that a run can never be trained with other ones. A re-run
# skips finished runs (their result.json is committed with the report) and resumes interrupted
# ones; unfinished runs travel between checkouts with scripts/park.sh. Run directories keep
# their checkpoints out of git (.gitignore). The reports and `qsnn report --summary` are
# rebuilt at the end, from the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: bash scripts/findings.sh CIFAR_ROOT NMNIST_ROOT [SWEEP ARGS...]" >&2
    exit 2
fi
cifar=$1 nmnist=$2
shift 2
extra=("$@")
[ ${#extra[@]} -gt 0 ] || extra=(--workers 2)
qsnn=.venv/bin/qsnn
common=(--model small_convnet --seeds 3 --neuron-defaults 2 --no-progress "${extra[@]}")

# Cheapest runs first inside each sweep (the sweep orders by T, then b_s), so that a partial
# sweep already compares every seed of the short allocations.
$qsnn sweep "${common[@]}" --dataset cifar10 --data-root "$cifar" \
    --allocations 1/4/1,4/4/1,16/4/1,1/2/2,1/1/4 --epochs 4 --lr 2e-3 --weight-decay 5e-4 \
    --override head=16 --out docs/sweeps/cifar10-findings
$qsnn sweep "${common[@]}" --dataset nmnist --data-root "$nmnist" \
    --budget 16 --weights 1 --epochs 10 --batch-size 32 --lr 2e-3 --weight-decay 5e-4 \
    --out docs/sweeps/nmnist-findings
$qsnn report docs/sweeps/cifar10-findings docs/sweeps/nmnist-findings --summary

#!/usr/bin/env bash
# Issue 16, item 4: does mixing widths across layers help at a fixed cost? A per-layer search
# on real CIFAR-10 (small_convnet, T = 1, every conv layer's b_w in {1, 2, 4} and every
# neuron's b_s in {1, 2, 4}; the classifier stays at 16 bits as in the findings' recipe) under
# the S-ACE of uniform 1/4/1, with the recipe of docs/sweeps/cifar10-findings (4 epochs,
# lr 2e-3, weight decay 5e-4, neuron defaults version 2), so that its trials compare with
# that sweep's three seeds of uniform 1/4/1.
#
#   bash scripts/search_cifar.sh CIFAR_ROOT [SEARCH ARGS...]   (default: --workers 2)
#
# A worker joins from another shell with the same line plus `--resume --threads 1`; a killed
# search continues with `--resume`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: bash scripts/search_cifar.sh CIFAR_ROOT [SEARCH ARGS...]" >&2
    exit 2
fi
cifar=$1
shift
extra=("$@")
[ ${#extra[@]} -gt 0 ] || extra=(--workers 2)
.venv/bin/qsnn search --model small_convnet --dataset cifar10 --data-root "$cifar" \
    --bits 1/4/1 --weights 1,2,4 --spikes 1,2,4 --max-s-ace 1/4/1 --trials 12 \
    --epochs 4 --lr 2e-3 --weight-decay 5e-4 --override head=16 --neuron-defaults 2 \
    --no-progress --out docs/sweeps/cifar10-search "${extra[@]}"

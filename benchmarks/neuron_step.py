"""Training-step cost of the spike-pattern neuron in a small conv net (issue 2 benchmark).

One process, same net, same data, same settings (batch 128, 32x32, bf16 autocast and
channels-last where the CPU supports them). Prints and writes to ``benchmarks/results/``:

- step(neuron at 1/4/1) / step(nn.ReLU at the same place)   target <= 1.2
- step(1/1/4) / step(1/1/1)                                    target <= 1.2 * 4 = 4.8

Run: ``.venv/bin/python benchmarks/neuron_step.py [--steps 20] [--no-bf16]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import qsnn
from qsnn import FoldTime, QuantConv2d, QuantLinear, SpikeNeuron, StaticEncoder, TimeMean

WIDTHS = (32, 64, 64, 128, 128)
POOL_AFTER = (1, 3, 4)  # max-pool after these conv indices (0-based): 32 -> 16 -> 8 -> 4


def make_net(bits: qsnn.Bits, activation: str) -> nn.Module:
    """VGG-style 5-conv net (0.30 M params) with a neuron (or ReLU) after every conv.

    ``activation="neuron"``: ``SpikeNeuron(b_s)`` on ``[T, B, ...]``; ``"relu"``: ``nn.ReLU``
    folded over time at the same places (same quantized convs, same T).
    """

    def act() -> nn.Module:
        return SpikeNeuron(bits.s) if activation == "neuron" else FoldTime(nn.ReLU())

    stem = nn.Sequential(
        QuantConv2d(3, WIDTHS[0], 3, padding=1, bias=False, bits_w=bits.w),
        nn.BatchNorm2d(WIDTHS[0]),
    )
    layers: list[nn.Module] = [StaticEncoder(bits.t, stem), act()]
    for i in range(1, len(WIDTHS)):
        if (i - 1) in POOL_AFTER:
            layers.append(FoldTime(nn.MaxPool2d(2)))
        conv = QuantConv2d(WIDTHS[i - 1], WIDTHS[i], 3, padding=1, bias=False, bits_w=bits.w)
        layers += [FoldTime(nn.Sequential(conv, nn.BatchNorm2d(WIDTHS[i]))), act()]
    layers += [
        FoldTime(nn.MaxPool2d(2)),
        FoldTime(nn.Flatten()),
        TimeMean(),
        QuantLinear(WIDTHS[-1] * 4 * 4, 10, bits_w=bits.w),
    ]
    return nn.Sequential(*layers)


def bf16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = torch.randn(8, 8)
            return (a @ a).dtype == torch.bfloat16
    except RuntimeError:
        return False


def time_steps(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, bf16: bool) -> float:
    """Median wall time of one training step (forward, backward, AdamW update), seconds."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "neuron_step.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    bf16 = bf16_supported() and not args.no_bf16
    x = torch.randn(args.batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    cases = [
        ("relu", "1/4/1"),
        ("neuron", "1/4/1"),
        ("neuron", "1/1/1"),
        ("neuron", "1/1/4"),
        ("relu", "1/1/4"),
    ]
    ms = {}
    for activation, bits in cases:
        net = make_net(qsnn.Bits.parse(bits), activation).to(memory_format=torch.channels_last)
        ms[f"{activation} {bits}"] = 1e3 * time_steps(net, x, y, args.steps, bf16)
        print(f"{activation:>6} {bits}: {ms[f'{activation} {bits}']:8.1f} ms/step", flush=True)
    ratio_relu = ms["neuron 1/4/1"] / ms["relu 1/4/1"]
    ratio_t = ms["neuron 1/1/4"] / ms["neuron 1/1/1"]
    print(f"neuron 1/4/1 / ReLU 1/4/1 = {ratio_relu:.2f}x (target <= 1.20)")
    print(f"neuron 1/1/4 / neuron 1/1/1 = {ratio_t:.2f}x (target <= 4.80)")
    print(
        f"ReLU(T=4) / ReLU(T=1)      = {ms['relu 1/1/4'] / ms['relu 1/4/1']:.2f}x (the convs alone)"
    )
    result = {
        "benchmark": "neuron_step",
        "batch": args.batch,
        "image": "3x32x32",
        "bf16": bf16,
        "channels_last": True,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_1m": os.getloadavg()[0],
        "ms_per_step": ms,
        "ratio_neuron_vs_relu_1_4_1": ratio_relu,
        "ratio_T4_vs_T1_1_1": ratio_t,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

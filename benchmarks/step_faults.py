"""Step time and minor page faults of one qsnn training step against the plain float net.

A diagnostic behind BENCHMARKS.md's note on busy machines: qsnn's step allocates more large
tensors that glibc maps fresh (and returns to the OS) on every step, so it takes more minor page
faults than a plain ReLU net of the same shape, and slows down more when other processes share
the cores. Builds both nets as ``train_throughput.py`` does, warms them up, then times ``--steps``
steps round-robin and counts the process's minor faults (``getrusage``) during each step.

Run: ``.venv/bin/python benchmarks/step_faults.py [--model sew_resnet18_cifar] [--bits 4/2/2]
[--steps 6]``; writes ``benchmarks/results/step_faults.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
from pathlib import Path

import torch

import qsnn
from qsnn.io import write_json_atomic
from qsnn.models import create_model
from train_throughput import MODELS, Trainer, make_plain

OUT = Path(__file__).parent / "results" / "step_faults.json"


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sew_resnet18_cifar", choices=list(MODELS))
    ap.add_argument("--bits", default="4/2/2")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    bits = qsnn.Bits.parse(args.bits)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    same = {"bf16": True, "channels_last": True}
    trainers = {
        "qsnn": Trainer(create_model(args.model, bits=bits), x, y, **same),
        "plain": Trainer(make_plain(args.model, bits.t), x, y, **same),
    }
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    load = os.getloadavg()
    ms: dict[str, list[float]] = {k: [] for k in trainers}
    faults: dict[str, list[int]] = {k: [] for k in trainers}
    for _ in range(args.steps):
        for label, trainer in trainers.items():
            before = _faults()
            ms[label].append(round(1e3 * trainer.step(), 1))
            faults[label].append(_faults() - before)
    result = {"model": args.model, "bits": str(bits), "batch": args.batch,
              "load_average_at_start": load, "cases": {}}
    for label in trainers:
        med_ms, med_faults = statistics.median(ms[label]), statistics.median(faults[label])
        result["cases"][label] = {"ms_per_step": ms[label], "minor_faults": faults[label],
                                  "median_ms": med_ms, "median_faults": med_faults}
        print(f"{label:<6} median {med_ms:7.0f} ms/step, {med_faults:8.0f} minor faults/step "
              f"(steps {ms[label]} ms; faults {faults[label]})")
    ratio = result["cases"]["qsnn"]["median_ms"] / result["cases"]["plain"]["median_ms"]
    result["qsnn_vs_plain"] = ratio
    print(f"qsnn/plain {ratio:.3f}x; load average at start {load[0]:.2f}")
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Step-time cost of the level-scale default and of exact spikes, against today's, in one run.

Two comparisons, each round-robin in one process (every case steps in turn, so load falls on
all alike), median over ``--steps`` after ``--warmup`` steps; small_convnet, batch 128 of random
3x32x32 images, classifier in float, one step = forward + cross-entropy + backward + AdamW:

1. **Level scale**: every candidate of ``benchmarks/level_scale.py`` (the zoo's default among
   them) against the previous default (``fixed``, ``theta = 1``) at ``1/4/1``, ``1/2/2`` and
   ``1/1/4``, in the machine's training precision (what ``qsnn train`` picks: bf16 autocast
   where the CPU has bf16 instructions, else fp32).
2. **Exact spikes under bf16 autocast** (``--precision bf16``): spikes that bf16 cannot hold
   now leave the neuron in float32 and the next layer reads them as three exact bf16 parts;
   before, they were rounded to bf16. The old behaviour is re-created in this process by making
   ``spike_dtype`` return the input dtype. Cases ``1/16/1`` (power-of-two step: float32
   spikes; ``--precision auto`` would train it in float32 anyway) and ``1/4/1`` with
   ``theta = 1.7`` (float32 at every ``b_s > 1``).

    .venv/bin/python benchmarks/level_scale_step.py                  # comparison 1
    .venv/bin/python benchmarks/level_scale_step.py --precision bf16  # comparison 2 (and 1)

Writes ``benchmarks/results/level_scale_step[_bf16].json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import qsnn.models.layers as layers  # noqa: E402
import qsnn.neurons as neurons  # noqa: E402
from qsnn.io import write_json_atomic  # noqa: E402
from qsnn.models import create_model  # noqa: E402
from qsnn.models.layers import MODEL_NEURON_DEFAULTS  # noqa: E402
from qsnn.train.engine import _cpu_bf16  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from level_scale import CANDIDATES  # noqa: E402

PREVIOUS = {"level_scale": "fixed", "learn_theta": False, "theta": 1.0}


class _RoundedSpikes:
    """Context: spikes in the input's dtype whatever it can hold (the behaviour before)."""

    def __enter__(self):
        self.saved = neurons.spike_dtype, layers.spike_dtype
        neurons.spike_dtype = layers.spike_dtype = _input_dtype

    def __exit__(self, *exc):
        neurons.spike_dtype, layers.spike_dtype = self.saved


def _input_dtype(x, theta, levels, dtype=None):
    return x.dtype if dtype is None else dtype


class Case:
    def __init__(self, label: str, bits: str, neuron: dict, amp, rounded: bool = False):
        torch.manual_seed(0)
        self.label, self.bits, self.amp, self.rounded = label, bits, amp, rounded
        self.model = create_model("small_convnet", bits=bits, overrides={"head": 16},
                                  neuron=neuron).to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(128, 3, 32, 32, generator=gen).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (128,), generator=gen)
        self.times: list[float] = []

    def step(self) -> float:
        ctx = _RoundedSpikes() if self.rounded else _Null()
        start = time.perf_counter()
        with ctx, torch.autocast("cpu", dtype=self.amp or torch.float32,
                                 enabled=self.amp is not None):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        with ctx:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def round_robin(cases: list[Case], steps: int, warmup: int) -> None:
    for i in range(warmup + steps):
        # Each round starts at the next case, so no case always runs right after another.
        for case in cases[i % len(cases):] + cases[:i % len(cases)]:
            t = case.step()
            if i >= warmup:
                case.times.append(t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bits", default="1/4/1,1/2/2,1/1/4",
                        help="comma-separated allocations for comparison 1 ('' skips it)")
    parser.add_argument("--results", help="output file (default benchmarks/results/"
                        "level_scale_step[_bf16].json)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    torch.set_num_threads(args.threads)
    native_bf16 = _cpu_bf16()
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16)
    amp = torch.bfloat16 if use_bf16 else None
    new = dict(MODEL_NEURON_DEFAULTS)
    cases, pairs = [], []
    for bits in filter(None, args.bits.split(",")):
        previous = Case(f"{bits} previous (fixed theta=1)", bits, PREVIOUS, amp)
        cases.append(previous)
        for name, neuron in CANDIDATES.items():
            if neuron["level_scale"] == "fixed" and not neuron["learn_theta"]:
                continue  # the previous default itself
            tag = " (the zoo's default)" if all(
                new.get(k) == v for k, v in neuron.items()) and new else ""
            case = Case(f"{bits} {name}{tag}", bits, neuron, amp)
            cases.append(case)
            pairs.append((previous, case, "option / previous"))
    if use_bf16:
        for bits, neuron in (("1/16/1", new), ("1/4/1", {**PREVIOUS, "theta": 1.7})):
            exact = Case(f"{bits} {neuron} exact spikes", bits, neuron, amp)
            old = Case(f"{bits} {neuron} rounded to bf16 (before)", bits, neuron, amp, True)
            cases += [old, exact]
            pairs.append((old, exact, "exact / rounded"))
    round_robin(cases, args.steps, args.warmup)
    rows = [{"case": c.label, "bits": c.bits, "ms_median": 1000 * statistics.median(c.times),
             "ms_steps": [1000 * t for t in c.times]} for c in cases]
    ratios = [{"cases": [a.label, b.label], "what": what,
               "ratio": statistics.median(b.times) / statistics.median(a.times)}
              for a, b, what in pairs]
    name = "level_scale_step_bf16.json" if use_bf16 else "level_scale_step.json"
    write_json_atomic(Path(args.results) if args.results else ROOT / "benchmarks/results" / name, {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__, "threads": args.threads,
        "precision": "bf16 autocast" if use_bf16 else "fp32",
        "cpu_has_bf16_instructions": native_bf16, "steps": args.steps, "warmup": args.warmup,
        "load_average_1min": os.getloadavg()[0], "rows": rows, "ratios": ratios,
    })  # fmt: skip
    for row in rows:
        print(f"{row['ms_median']:9.1f} ms  {row['case']}")
    for r in ratios:
        print(f"{r['ratio']:.3f}x  {r['what']}: {r['cases'][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

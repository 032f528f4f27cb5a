"""Training-step and profile time of this tree against an earlier commit, in one run (issue 14).

A refactor must not make qsnn slower. This benchmark checks out ``--base`` (a git revision) into
a temporary worktree and starts two worker processes, one importing qsnn from that worktree's
``src/`` and one from this tree's. Both build the same cases from the public API that both
revisions share (``qsnn.models.create_model``, ``qsnn.metrics.profile``); the parent then
alternates one timed operation on each worker (ABAB..., so that any load from other processes
falls on both alike) and reports the median of each, and their ratio ``this / base``.

- train: one training step as ``qsnn.train`` takes it on this CPU: forward, cross-entropy,
  backward and an AdamW update, fp32, channels-last model and input, batch ``--batch`` of
  random 3x32x32 images, the default (fused) neuron kernel; 2 untimed warm-up steps compile it.
- profile: ``profile(model, x)`` of SEW-ResNet-18 at 224x224, batch 1 (as
  ``benchmarks/profile_time.py``), after one untimed call.

The worker that is not timed waits on a pipe (no CPU), so each operation has the whole machine.
The JSON records the load average before and after. Writes
``benchmarks/results/revision_compare.json``.

Run: ``.venv/bin/python benchmarks/revision_compare.py --base 6659cfb [--rounds 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "revision_compare.json"

#: (kind, model, bits): the cases both revisions build the same way.
CASES = (
    ("train", "small_convnet", "4/2/2"),
    ("train", "small_convnet", "1/1/4"),
    ("train", "sew_resnet18_cifar", "4/2/2"),
    ("profile", "sew_resnet18", "4/2/2"),
    ("profile", "sew_resnet18", "32/16/1"),
)

# The worker: reads one JSON command per line, answers one JSON line. Only names that exist in
# every revision since issue 3 are used.
WORKER = r"""
import json, sys, time
import torch
from qsnn.models import create_model
from qsnn.metrics import profile

cases = {}

def setup(i, kind, name, bits, batch):
    torch.manual_seed(0)
    if kind == "train":
        model = create_model(name, bits=bits).train().to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        cases[i] = (model, opt, x, y)
        for _ in range(2):
            step(i)
    else:
        model = create_model(name, bits=bits, neuron={"kernel": "eager"}).eval()
        cases[i] = (model, torch.rand(1, 3, 224, 224))
        prof(i)

def step(i):
    model, opt, x, y = cases[i]
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

def prof(i):
    model, x = cases[i]
    profile(model, x)

for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "setup":
        setup(cmd["i"], cmd["kind"], cmd["name"], cmd["bits"], cmd["batch"])
        print(json.dumps({"ok": True}), flush=True)
    else:
        kind = cmd["kind"]
        start = time.perf_counter()
        step(cmd["i"]) if kind == "train" else prof(cmd["i"])
        print(json.dumps({"s": time.perf_counter() - start}), flush=True)
"""


class Worker:
    """One Python process importing qsnn from ``src``; commands in, one JSON answer per line."""

    def __init__(self, src: Path, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env, cwd=tempfile.gettempdir(),
        )

    def ask(self, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()} on {cmd}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="6659cfb", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=7, help="timed operations per case and side")
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    base_sha = subprocess.check_output(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.base], text=True).strip()
    head_sha = subprocess.check_output(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True).strip()
    dirty = bool(subprocess.check_output(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "src"],
        text=True).strip())
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qsnn-base-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.check_call(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                               str(tree), base_sha])
        try:
            base, this = Worker(tree / "src", args.threads), Worker(ROOT / "src", args.threads)
            rows = []
            for i, (kind, name, bits) in enumerate(CASES):
                for w in (base, this):
                    w.ask(op="setup", i=i, kind=kind, name=name, bits=bits, batch=args.batch)
                times: dict[str, list[float]] = {"base": [], "this": []}
                for _ in range(args.rounds):
                    for side, w in (("base", base), ("this", this)):
                        times[side].append(w.ask(op="run", i=i, kind=kind)["s"])
                b, t = statistics.median(times["base"]), statistics.median(times["this"])
                rows.append({"kind": kind, "model": name, "bits": bits, "base_s": b,
                             "this_s": t, "ratio": t / b, "times": times})
                print(f"{kind:8s} {name:20s} {bits:8s} base {b:.3f} s  this {t:.3f} s  "
                      f"this/base {t / b:.3f}", flush=True)
            base.close()
            this.close()
        finally:
            subprocess.call(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
    out = {
        "base": base_sha, "this": head_sha + ("+changes" if dirty else ""),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.processor() or platform.machine(), "threads": args.threads,
        "batch": args.batch, "rounds": args.rounds, "load_before": load_before,
        "load_after": os.getloadavg(), "wall_s": time.perf_counter() - started, "cases": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\n| case | model | b_w/b_s/T | {base_sha} (s) | {out['this']} (s) | this / base |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['model']} | {r['bits']} | {r['base_s']:.3f} | "
              f"{r['this_s']:.3f} | {r['ratio']:.3f}x |")
    print(f"\nload average before {load_before[0]:.2f}, after {out['load_after'][0]:.2f}; "
          f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Sweep wall time with 1 and with N local workers on the same grid (issue 16).

Runs ``qsnn sweep`` twice on fresh directories, the same grid and recipe (the embedded digits,
small_convnet, every allocation of the budget, fp32): once with ``--workers 1`` (one process,
all cores) and once with ``--workers N`` (N processes, the cores divided), and reports the wall
times and their ratio. On a machine with C cores, N workers can only help where one training
process does not use C cores well (small nets, small batches); the figure says how much.

With ``--storage`` the workers claim the runs through an Optuna study in an SQLite file
(``qsnn sweep --storage``, how machines share a sweep) instead of the run-directory locks.

Run: ``.venv/bin/python benchmarks/sweep_workers.py [--budget 4] [--epochs 2] [--workers 2]
[--storage]`` (writes ``benchmarks/results/sweep_workers[_storage].json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sweep_workers.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storage", action="store_true", help="share through an SQLite study")
    args = parser.parse_args()
    results = RESULTS.with_name("sweep_workers_storage.json") if args.storage else RESULTS
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    for workers in (1, args.workers):
        with tempfile.TemporaryDirectory(prefix="qsnn-sweep-") as tmp:
            cmd = [sys.executable, "-m", "qsnn", "sweep", "--model", "small_convnet",
                   "--dataset", "digits", "--budget", str(args.budget), "--epochs",
                   str(args.epochs), "--precision", "fp32", "--no-progress", "--threads",
                   str(cores), "--workers", str(workers), "--out", f"{tmp}/sw"]  # fmt: skip
            if args.storage:
                cmd += ["--storage", f"sqlite:///{tmp}/jobs.db"]
            load = os.getloadavg()[0]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            runs = len(list(Path(tmp, "sw", "runs").iterdir()))
        rows.append({"workers": workers, "threads_each": max(1, cores // workers),
                     "runs": runs, "wall_s": wall, "load_before": load})  # fmt: skip
        print(f"--workers {workers}: {runs} runs in {wall:.1f} s", flush=True)
    ratio = rows[0]["wall_s"] / rows[1]["wall_s"]
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": cores,
           "budget": args.budget, "epochs": args.epochs, "storage": args.storage, "rows": rows,
           "speedup": ratio}  # fmt: skip
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=1) + "\n")
    print(f"speed-up of {args.workers} workers over 1: {ratio:.2f}x; wrote "
          f"{results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

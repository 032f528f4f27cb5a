"""Does a per-layer allocation found by ``qsnn search`` beat the best uniform one of its cost?

Issue 16, item 4. Takes a finished search (``scripts/search_cifar.sh``) and a sweep that
trained the uniform allocation at the search's S-ACE limit with several seeds
(``docs/sweeps/cifar10-findings``), checks that both used the same recipe (every setting that
shapes a run but the allocation, its per-layer overrides and the seed), picks the search's best
mixed allocation by validation accuracy (the search never saw the test split), trains it
again with the other seeds of the sweep, and compares the test accuracies seed against seed
with :func:`qsnn.sweep.findings.compare_seeds` (the rule of the findings: beyond the spread
when every seed of the leader is above every seed of the other and the gap of the means is
more than twice the larger std; the exact permutation p-value beside it).

Run: ``.venv/bin/python benchmarks/search_vs_uniform.py --data-root CIFAR_ROOT
[--search docs/sweeps/cifar10-search] [--sweep docs/sweeps/cifar10-findings] [--uniform 1/4/1]``
(writes ``benchmarks/results/search_vs_uniform.json``; the extra seeds' runs go to
``SEARCH/seeds/``, and finished ones are not trained again).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qsnn.sweep.findings import compare_seeds  # noqa: E402
from qsnn.sweep.report import recorded_rows  # noqa: E402
from qsnn.train import TrainConfig  # noqa: E402
from qsnn.train.config import RESUMABLE_FIELDS, settings_key  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_vs_uniform.json"
#: What may differ between a search trial and the sweep's run of the same recipe.
ALLOCATION_FIELDS = {"bits", "overrides", "seed"}


def _recipe(config: dict) -> dict:
    return {
        k: v for k, v in config.items() if k not in RESUMABLE_FIELDS and k not in ALLOCATION_FIELDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", default="docs/sweeps/cifar10-search")
    parser.add_argument("--sweep", default="docs/sweeps/cifar10-findings")
    parser.add_argument("--uniform", default="1/4/1", help="the uniform allocation to beat")
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()
    search_dir, sweep_dir = ROOT / args.search, ROOT / args.sweep

    settings = json.loads((search_dir / "search.json").read_text())
    swept = json.loads((sweep_dir / "sweep.json").read_text())
    search_recipe, sweep_recipe = _recipe(settings["base"]), _recipe(swept["base"])
    differ = sorted(
        k for k in search_recipe.keys() | sweep_recipe.keys()
        if search_recipe.get(k) != sweep_recipe.get(k)
    )  # fmt: skip
    if differ:
        raise SystemExit(f"the search and the sweep differ in their recipe: {differ}")
    sweep_base = TrainConfig.from_dict(swept["base"])
    uniform_rows = sorted(
        (
            row
            for row in recorded_rows(sweep_dir).values()
            if row["bits"] == args.uniform
            and row["key"] == settings_key(replace(sweep_base, bits=row["bits"], seed=row["seed"]))
        ),
        key=lambda row: row["seed"],
    )
    if len(uniform_rows) < 2:
        raise SystemExit(f"{sweep_dir} has {len(uniform_rows)} seed(s) of {args.uniform}")
    seeds = [row["seed"] for row in uniform_rows]

    front = json.loads((search_dir / "pareto.json").read_text())["front"]
    mixed = [row for row in front if not row["uniform"]]
    best_val = max(front, key=lambda row: row["val_acc"])
    if not mixed:
        raise SystemExit("the search's Pareto front has no mixed allocation")
    best = max(mixed, key=lambda row: row["val_acc"])
    search_base = TrainConfig.from_dict({**sweep_base.to_dict(), **settings["base"]})
    chosen = replace(search_base, bits=best["bits"], overrides=best["layers"])
    trial_key = settings_key(replace(chosen, seed=seeds[0]))
    trial_run = list((search_dir / "runs").glob(f"*-{trial_key}"))
    if len(trial_run) != 1:  # the config rebuilt here must be the trial's own
        raise SystemExit(f"trial {best['trial']}'s run directory not found from its settings")

    seed_runs = {  # seed 0 is the search's own trial
        seed: search_dir / "seeds" / f"trial{best['trial']}-seed{seed}-{settings_key(config)}"
        for seed, config in ((s, replace(chosen, seed=s)) for s in seeds[1:])
    }
    started = time.monotonic()
    jobs = {}
    for seed, out in seed_runs.items():
        if (out / "result.json").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        spec = out.parent / f"{out.name}.config.json"
        spec.write_text(json.dumps(replace(chosen, seed=seed).to_dict(), indent=2))
        cmd = [sys.executable, "-m", "qsnn.cli", "train", "--config", str(spec),
               "--data-root", args.data_root, "--threads", "1", "--no-progress",
               "--out", str(out)]  # fmt: skip
        if (out / "checkpoint.pt").exists():
            cmd.append("--resume")
        jobs[seed] = subprocess.Popen(cmd, cwd=ROOT)
    for seed, proc in jobs.items():
        if proc.wait() != 0:
            raise SystemExit(f"seed {seed} of trial {best['trial']} failed ({proc.returncode})")
    wall = time.monotonic() - started

    mixed_test = {seeds[0]: best["test_acc"]}
    mixed_val = {seeds[0]: best["val_acc"]}
    for seed, out in seed_runs.items():
        result = json.loads((out / "result.json").read_text())
        mixed_test[seed], mixed_val[seed] = result["test_acc_best"], result["val_acc_best"]
    name = f"mixed trial {best['trial']}"
    on_test = compare_seeds(
        name, [mixed_test[s] for s in seeds], args.uniform,
        [row["test_acc_best"] for row in uniform_rows],
    )  # fmt: skip
    on_val = compare_seeds(
        name, [mixed_val[s] for s in seeds], args.uniform,
        [row["val_acc_best"] for row in uniform_rows],
    )  # fmt: skip
    search_uniform = next(
        (row for row in front if row["uniform"] and row["bits"] == args.uniform), None
    )
    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "search": args.search,
        "sweep": args.sweep,
        "uniform": args.uniform,
        "seeds": seeds,
        "chosen": {k: best[k] for k in ("trial", "bits", "layers", "s_ace", "params_16")},
        "best_on_the_front_by_validation": {
            "trial": best_val["trial"], "uniform": best_val["uniform"], "bits": best_val["bits"]
        },
        "mixed_test": mixed_test,
        "mixed_val": mixed_val,
        "uniform_test": {row["seed"]: row["test_acc_best"] for row in uniform_rows},
        "uniform_val": {row["seed"]: row["val_acc_best"] for row in uniform_rows},
        "uniform_s_ace": uniform_rows[0]["s_ace"],
        "search_uniform_trial_test": search_uniform["test_acc"] if search_uniform else None,
        "test": {"text": on_test.text(), "gap_points": on_test.gap,
                 "beyond_spread": on_test.beyond_spread, "p": on_test.p_value},
        "val": {"text": on_val.text(), "gap_points": on_val.gap,
                "beyond_spread": on_val.beyond_spread, "p": on_val.p_value},
        "extra_seed_wall_s": wall,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"chosen: trial {best['trial']} ({best['bits']}), S-ACE {best['s_ace'] / 1e6:.3f} M "
          f"vs {args.uniform} {uniform_rows[0]['s_ace'] / 1e6:.3f} M")  # fmt: skip
    print("test:", on_test.text())
    print("val: ", on_val.text())
    if search_uniform:
        print(f"the search's own {args.uniform} trial (seed {seeds[0]}): test "
              f"{100 * search_uniform['test_acc']:.2f} % (the sweep's seed {seeds[0]}: "
              f"{100 * uniform_rows[0]['test_acc_best']:.2f} %)")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

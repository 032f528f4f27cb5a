"""Which level scale should a b_s-bit neuron get by default? Measured across allocations.

Trains small_convnet on real CIFAR-10 at every allocation of budget 4 with binary weights
(``1/4/1``, ``1/2/2``, ``1/1/4``) once per level-scale option (``qsnn.level_scale``), with the
recipe of BENCHMARKS.md's budget-4 sweep (AdamW lr 2e-3, wd 5e-4, 4 epochs, batch 128, cosine
with 1 warm-up epoch, label smoothing 0.1, crop + flip, classifier in float, 5,000 training
images held out for choosing the epoch, precise-BN statistics, the machine's default precision),
seed 0. Every allocation of a row gets the same rule. ``CANDIDATES`` get every allocation;
``DIAGNOSTICS`` only ``1/4/1`` (the allocation with the most levels), unless ``--all``.

For each run it also reads how the neurons use their levels: on 1,000 test images, the entropy
of each spiking layer's level histogram (bits; at most ``b_s``), the fraction of levels that
occur and the firing rate, averaged over the spiking layers.

    # one or more workers share the job list (each claims a job before training it):
    .venv/bin/python benchmarks/level_scale.py --data-root DIR --threads 1 &
    .venv/bin/python benchmarks/level_scale.py --data-root DIR --threads 1 &
    # then the table, from the finished runs:
    .venv/bin/python benchmarks/level_scale.py --collect

Runs go to ``--out`` (default ``runs/level-scale``; finished runs are kept), the table to
``benchmarks/results/level_scale.json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from qsnn.io import write_json_atomic  # noqa: E402
from qsnn.neurons import SpikeNeuron  # noqa: E402
from qsnn.train import TrainConfig, load_run, train  # noqa: E402


def _level(rule: str, learn: bool = False, theta: float = 1.0, pow2: bool = True) -> dict:
    # Every level setting spelled out, so a run means the same whatever the zoo's default.
    return {"level_scale": rule, "learn_theta": learn, "theta": theta, "pow2_theta": pow2}


#: option name -> SpikeNeuron settings (``--neuron KEY=VALUE`` on the command line).
CANDIDATES: dict[str, dict[str, object]] = {
    "fixed theta=1": _level("fixed"),
    "scaled": _level("scaled"),
    "data (calibrated)": _level("data"),
    "data + learned": _level("data", learn=True),
}
DIAGNOSTICS: dict[str, dict[str, object]] = {
    "theta=1 + learned": _level("fixed", learn=True),
    "data + learned, not pow2": _level("data", learn=True, pow2=False),
    "fixed theta=0.25": _level("fixed", theta=0.25),
}
OPTIONS = {**CANDIDATES, **DIAGNOSTICS}
ALLOCATIONS = ("1/4/1", "1/2/2", "1/1/4")


def jobs(everything: bool) -> list[tuple[str, str]]:
    """(option, allocation) in the order workers take them: cheap allocations first, so that
    a partial table is already comparable; diagnostics last."""
    out = [(name, bits) for bits in ALLOCATIONS for name in CANDIDATES]
    diag = ALLOCATIONS if everything else ALLOCATIONS[:1]
    return out + [(name, bits) for bits in diag for name in DIAGNOSTICS]


def same_run(name: str, bits: str) -> str | None:
    """The option whose run at ``bits`` is this one's, when the two neurons are the same by
    construction: ``scaled`` gives step ``theta * 2**(1 - b_s)``, which is ``fixed``'s ``theta``
    at ``b_s = 1`` (a test checks the identity), so that run is trained once."""
    opt = OPTIONS[name]
    if opt["level_scale"] != "scaled" or int(bits.split("/")[1]) != 1:
        return None
    twin = {**opt, "level_scale": "fixed"}
    return next((other for other, o in OPTIONS.items() if o == twin), None)


def calibrated_twin(out: Path, name: str, bits: str, seed: int) -> str | None:
    """The fixed option whose run this is, when a calibrated (not learned) ``data`` step came
    out equal to that option's ``theta`` in every layer: the rule acts on the first training
    batch only, so from then on the two runs are the same computation. Read from the run's
    checkpoint (after its first epoch); ``None`` before one exists or when any layer differs.
    (At ``1/2/2`` the power-of-two rounding of ``2 mean|I| / sqrt(3)`` gives 1 everywhere.)"""
    opt = OPTIONS[name]
    ckpt = run_dir(out, name, bits, seed) / "checkpoint.pt"
    if opt["level_scale"] != "data" or opt["learn_theta"] or not ckpt.exists():
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    steps = [2.0 ** float(v) for k, v in state.items() if k.endswith("level.log2_theta")]
    for other, o in OPTIONS.items():
        if o == {**opt, "level_scale": "fixed", "theta": o["theta"]} and steps and all(
            t == o["theta"] for t in steps
        ):
            return other
    return None


def twin_of(out: Path, name: str, bits: str, seed: int) -> str | None:
    """The option whose run stands for this one (``same_run`` or ``calibrated_twin``)."""
    return same_run(name, bits) or calibrated_twin(out, name, bits, seed)


def run_dir(out: Path, name: str, bits: str, seed: int) -> Path:
    slug = name.replace(" ", "_").replace("=", "").replace(",", "")
    return out / slug / f"{bits.replace('/', '-')}-seed{seed}"


def config_for(name: str, bits: str, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model="small_convnet", dataset="cifar10", data_root=args.data_root, bits=bits,
        overrides={"head": 16}, epochs=args.epochs, lr=2e-3, weight_decay=5e-4,
        seed=args.seed, progress=False, threads=args.threads,
        model_options={"neuron": OPTIONS[name]},
    )  # fmt: skip


def recorded(args: argparse.Namespace) -> dict[tuple[str, str], dict]:
    """Rows already in ``--results`` for this protocol (same epochs and seed), by (option,
    allocation). Run directories are scratch space that a fresh checkout lacks; the results
    file is committed, so a measured cell is never trained again to be counted."""
    path = Path(args.results)
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("epochs") != args.epochs or saved.get("seed") != args.seed:
        return {}
    return {(r["option"], r["bits"]): r for r in saved["rows"]}


def work(args: argparse.Namespace) -> None:
    """Claim and train jobs until none is left (a claim is a file made with O_EXCL); jobs
    with a recorded row are done."""
    log = logging.getLogger("level_scale")
    done = recorded(args)
    for name, bits in jobs(args.all):
        run = run_dir(Path(args.out), name, bits, args.seed)
        if (name, bits) in done or (run / "result.json").exists() or twin_of(
            Path(args.out), name, bits, args.seed
        ):
            continue
        run.mkdir(parents=True, exist_ok=True)
        claim = run / ".claimed"
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            if not args.reclaim:
                continue
        log.info("training %s at %s into %s", name, bits, run)
        train(config_for(name, bits, args), run, resume=(run / "checkpoint.pt").exists())
        claim.unlink(missing_ok=True)


def level_use(run: Path, images: int = 1000) -> dict[str, float]:
    """Means over spiking layers of: the entropy (bits) of the level histogram, the fraction
    of levels used (occurring at least once, of ``2**b_s``) and the firing rate (non-zero)."""
    model, _, data = load_run(run)
    counts: dict[str, torch.Tensor] = {}
    hooks = []
    for layer, m in model.named_modules():
        if isinstance(m, SpikeNeuron):
            def hook(mod, args, out, layer=layer):
                k = mod.to_levels(out).flatten().long()
                counts[layer] = counts.get(layer, 0) + torch.bincount(
                    k, minlength=mod.levels + 1).double()
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        for x, _ in data.test.batches(250):
            model(x)
            images -= len(x)
            if images <= 0:
                break
    for h in hooks:
        h.remove()
    ent, used, fired = [], [], []
    for c in counts.values():
        p = c / c.sum()
        nz = p[p > 0]
        ent.append(float(-(nz * nz.log2()).sum()))
        used.append(float((c > 0).double().mean()))
        fired.append(float(1 - p[0]))
    thetas = {n: m.theta for n, m in model.named_modules() if isinstance(m, SpikeNeuron)}
    n = len(ent)
    return {"level_entropy_bits": sum(ent) / n, "levels_used": sum(used) / n,
            "firing_rate": sum(fired) / n, "thetas": thetas}


def collect(args: argparse.Namespace) -> str:
    """The table from the finished runs; a job whose run directory is gone keeps the row
    recorded for it (see :func:`recorded`)."""
    rows = []
    done = recorded(args)
    for name, bits in jobs(True):
        twin = twin_of(Path(args.out), name, bits, args.seed)
        run = run_dir(Path(args.out), twin or name, bits, args.seed)
        if not (run / "result.json").exists():
            if (name, bits) in done:
                rows.append(done[(name, bits)])
            continue
        result = json.loads((run / "result.json").read_text())
        rows.append({
            "option": name, "neuron": OPTIONS[name], "bits": bits, "same_run_as": twin,
            "test_acc": result["test_acc_best"], "val_acc": result["val_acc_best"],
            "test_acc_last": result["test_acc_last"], "best_epoch": result["best_epoch"],
            "train_images_per_s": result["train_images_per_s"],
            "precision": result["environment"]["precision"],
            "threads": result["environment"]["threads"],
            **level_use(run),
        })  # fmt: skip
    table = _table(rows)
    write_json_atomic(args.results, {
        "collected": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch": torch.__version__, "epochs": args.epochs, "seed": args.seed,
        "allocations": list(ALLOCATIONS), "rows": rows, "table": table,
    })  # fmt: skip
    return table


def _table(rows: list[dict]) -> str:
    """Markdown: one row per option, test (val) accuracy per allocation (``=``: the run of the
    option that is the same neuron there, see ``twin_of``), means over complete rows, level
    entropy per allocation."""
    head = ["option", *[f"{b} test (val)" for b in ALLOCATIONS], "mean test", "mean val",
            "level entropy, bits (of b_s)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in OPTIONS:
        got = {r["bits"]: r for r in rows if r["option"] == name}
        if not got:
            continue
        cells = [f"{100 * got[b]['test_acc']:.2f} ({100 * got[b]['val_acc']:.2f})"
                 + ("=" if got[b]["same_run_as"] else "") if b in got else "-"
                 for b in ALLOCATIONS]
        complete = len(got) == len(ALLOCATIONS)
        mean_test = sum(r["test_acc"] for r in got.values()) / len(got)
        mean_val = sum(r["val_acc"] for r in got.values()) / len(got)
        means = [f"{100 * mean_test:.2f}", f"{100 * mean_val:.2f}"] if complete else ["-", "-"]
        ent = " / ".join(f"{got[b]['level_entropy_bits']:.2f} ({b.split('/')[1]})"
                         if b in got else "-" for b in ALLOCATIONS)
        lines.append(f"| {name} | " + " | ".join([*cells, *means, ent]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("QSNN_DATA"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "level-scale"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads of this worker")
    parser.add_argument("--all", action="store_true", help="diagnostics at every allocation")
    parser.add_argument("--reclaim", action="store_true", help="take claimed, unfinished jobs")
    parser.add_argument("--collect", action="store_true", help="only build the table")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/level_scale.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    if not args.collect:
        work(args)
    print(collect(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``qsnn`` command line: a thin layer over the library.

Every subcommand parses its flags, calls one library function and prints the result. Bad input
(invalid bits, a budget with no allocation, a missing or corrupt file, ...) ends with one
``qsnn: error: ...`` line and exit status 2, never a traceback. An unexpected error (a bug)
keeps its traceback; ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._cli_options import add_train_flags, check_model_options, train_values
from .allocation import Bits, allocations

__all__ = ["main"]


# -- flag values ------------------------------------------------------------------------------
# Checked by argparse, so a bad value is one "qsnn: error: argument --flag: ..." line before
# anything is loaded.


def _count(minimum: int) -> Callable[[str], int]:
    """An integer flag of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _real(ok: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """A number flag whose value must satisfy ``ok`` (said as ``requirement``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}; got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}; got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


_positive_float = _real(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_fraction = _real(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")  # nan fails both comparisons


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4; got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be at least 1; got {text!r}")
    return values


def _budget_list(text: str) -> list[int]:
    """``--budget`` of ``qsnn sweep``: one budget (``4``), a list (``1,2,4,8``) or a range
    (``1-8``: every budget in it that has an allocation on the power-of-two grid)."""
    from .allocation import allocations

    bad = argparse.ArgumentTypeError(
        f"expected a budget such as 4, a list such as 1,2,4,8 or a range such as 1-8; got {text!r}"
    )
    if "-" in text:
        try:
            low, high = (int(v) for v in text.split("-"))
        except ValueError:
            raise bad from None
        if low < 1 or high < low:
            raise argparse.ArgumentTypeError(f"the range must be 1 <= low <= high; got {text!r}")

        def has_allocation(budget: int) -> bool:
            try:
                return bool(allocations(budget))
            except ValueError:
                return False

        found = [b for b in range(low, high + 1) if has_allocation(b)]
        if not found:
            raise argparse.ArgumentTypeError(
                f"no budget in {text} has an allocation with b_w, b_s and T powers of two"
            )
        return found
    values = _int_list(text)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"the budget list has duplicates: {text!r}")
    return values


def _writable_dir(path: str, flag: str) -> None:
    """Fail now, before data is loaded or a model built, if ``path`` cannot be a directory that
    qsnn writes into: creates it (as the command would) and writes and removes a probe file."""
    if os.path.isfile(path):
        raise ValueError(f"{flag} {path} is an existing file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".qsnn-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {path} is not writable: {err.strerror or err}") from None


def _writable_file(path: str, flag: str) -> None:
    """Fail now if ``path`` cannot be written as a file (its folder is created as it would be)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a directory, not a file")
    _writable_dir(os.path.dirname(os.path.abspath(path)), flag)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is not writable: permission denied")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one ``qsnn: error: ...`` line like every other bad input (the
    usage is one ``--help`` away), with one hint: a value that starts with ``-``
    (``qsnn bits -1/2/2``) is read as a flag, and ``--`` before it makes it a value."""

    def __init__(self, *args: Any, argv: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.argv = tuple(argv)

    def error(self, message: str) -> NoReturn:
        dashed = [a for a in self.argv if len(a) > 1 and a[0] == "-" and a[1].isdigit()]
        if dashed and ("required" in message or "unrecognized" in message):
            message += (f" ({dashed[0]!r} was read as a flag; put values that start with '-' "
                        f"after '--', e.g. qsnn {self.prog.split()[-1]} -- {dashed[0]})")
        self.exit(2, f"qsnn: error: {message} (see: {self.prog} --help)\n")


def _cmd_bits(args: argparse.Namespace) -> int:
    bits = Bits.parse(args.bits)
    info = {
        "allocation": str(bits),
        "b_w": bits.w,
        "b_s": bits.s,
        "T": bits.t,
        "float_weights": bits.float_weights,
        "budget": bits.budget,
        "spike_levels": bits.levels + 1,
        "binary_slices_per_layer": bits.t * bits.s,
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>24}: {value}")
    return 0


def _cmd_allocations(args: argparse.Namespace) -> int:
    found = allocations(args.budget, w=args.w, s=args.s, t=args.t, powers_of_two=not args.any)
    if args.json:
        print(json.dumps([str(b) for b in found]))
    else:
        print(f"{len(found)} allocations b_w/b_s/T with budget {args.budget}:")
        for b in found:
            print(f"  {b!s:>9}  ({b.t * b.s} binary slices per layer)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    for name in list_models():
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(Bits.parse(args.bits), steps=args.steps, seed=args.seed)
    print(report)
    return 0


def _parse_size(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        parts = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ValueError(f"--input-size must look like 3x32x32 or 32; got {text!r}") from None
    if not parts or any(v < 1 for v in parts) or len(parts) not in (1, 2, 3):
        raise ValueError(f"--input-size must look like 3x32x32, 32x32 or 32; got {text!r}")
    return parts


def _model_shape(args: argparse.Namespace) -> dict[str, object]:
    """``--input-size`` and ``--num-classes`` as model constructor arguments."""
    size = _parse_size(args.input_size)
    return {
        "num_classes": args.num_classes,
        "img_size": size[-2:] if size and len(size) >= 2 else (size[0] if size else None),
        "in_channels": size[0] if size and len(size) == 3 else None,
    }


def _add_model_args(p: argparse.ArgumentParser, bits_help: str) -> None:
    """The flags that choose and shape a zoo model (``profile``, ``hw``)."""
    p.add_argument("--model", required=True, help="registered model name (see `qsnn models`)")
    p.add_argument("--bits", required=True, help=bits_help)
    p.add_argument("--input-size", help="CxHxW or HxW or H (default: the model's own)")
    p.add_argument("--num-classes", type=_count(1), help="classifier width (default: the model's)")


def _cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .metrics import profile
    from .models import create_model

    report = _progress(args, "profile")

    if args.json:
        _writable_file(args.json, "--json")
    with torch.random.fork_rng(devices=[]):  # --seed fixes the weights: the same table each run
        torch.manual_seed(args.seed)
        model = create_model(args.model, bits=args.bits, **_model_shape(args))
    channels, height, width = model.input_size
    gen = torch.Generator().manual_seed(args.seed)
    if args.time_major:
        # Event frames: random 0/1 counts per pixel, polarity and step.
        shape = (model.bits.t, args.batch, channels, height, width)
        example = torch.randint(0, 2, shape, generator=gen).float()
    else:
        example = torch.rand(args.batch, channels, height, width, generator=gen)
    result = profile(
        model,
        example,
        counting=args.counting,
        input_bits=None if args.time_major else args.input_bits,
        progress=report,
    )
    if args.json:
        from .io import write_json_atomic

        write_json_atomic(args.json, {"model": args.model, **result.to_dict()})
    print(
        f"{args.model} at {model.bits}, input {tuple(example.shape)} (random; firing rates "
        f"of an untrained model on random input)"
    )
    print(result.table())
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _progress(args: argparse.Namespace, command: str):
    """The progress of a long command on stderr (``qsnn._progress``) and its log lines (data
    loading, kernel compiling); ``--no-progress`` silences both (warnings and errors stay)."""
    from ._progress import Progress

    quiet = bool(getattr(args, "no_progress", False))
    _setup_logging(verbose=not quiet)
    return Progress(command, enabled=not quiet)


class _CountedSplit:
    """A dataset split whose ``batches()`` are counted on a ``Progress`` (for
    ``qsnn.train.evaluate``, which takes no progress argument of its own); every other
    attribute is the split's."""

    def __init__(self, split: Any, progress: Any, what: str) -> None:
        self._split, self._progress, self._what = split, progress, what

    def batches(self, *args: Any, **kwargs: Any) -> Any:
        batches = self._split.batches(*args, **kwargs)
        return self._progress.track(batches, len(batches), "batches", self._what)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)


def _add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", action="store_true",
        help="no progress on stderr (stage lines, counts with time left, tqdm bars, notes); "
        "stdout is the same either way",
    )  # fmt: skip


def _setup_logging(verbose: bool = True) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )


def _train_config(args: argparse.Namespace):
    from .train import TrainConfig

    config = TrainConfig(**train_values(args))
    check_model_options(config.model, config.bits, config.model_options)
    return config


def _resume_config(args: argparse.Namespace, run_dir: str):
    """A resumed run continues with its saved config; flags that contradict it are an error
    (the settings that may change are ``qsnn.train.config.RESUMABLE_FIELDS``)."""
    from dataclasses import replace
    from pathlib import Path

    from .train import read_config
    from .train.config import RESUMABLE_FIELDS, resume_conflicts

    saved = read_config(Path(run_dir) / "config.json")
    given = train_values(args)
    clash = resume_conflicts(saved, replace(saved, **given))
    if clash:
        raise ValueError(
            f"--resume continues {run_dir} as it was started; these flags differ "
            f"from its config.json: {', '.join(clash)}"
        )
    return replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE_FIELDS})


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train
    from .train.environment import launch_rank

    _setup_logging()
    config = _train_config(args)
    out = args.out or f"runs/{config.model}-{config.dataset}-{config.bits.replace('/', '-')}"
    _writable_dir(out, "--out")
    if args.resume and os.path.exists(os.path.join(out, "config.json")):
        config = _resume_config(args, out)
    result = train(config, out, resume=args.resume)
    if result is not None and launch_rank()[0] == 0:
        sel = result["selection"]
        print(
            f"{config.model} on {config.dataset} at {config.bits}: test accuracy "
            f"{100 * result['test_acc_best']:.2f}% ({sel}, epoch {result['best_epoch']}), "
            f"last epoch {100 * result['test_acc_last']:.2f}%; "
            f"{result['train_images_per_s']:.0f} train images/s; wrote {out}/result.json"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data import raw_input_bits
    from .metrics import profile
    from .train import evaluate, load_run

    report = _progress(args, "eval")

    model, config, data = load_run(args.run_dir, which=args.which, data_root=args.data_root)
    if args.time_steps is not None:
        if not hasattr(model, "set_bits"):
            raise ValueError("this model cannot change its number of time steps")
        model.set_bits(model.bits.replace(t=args.time_steps), config.overrides)
    report.stage(f"test accuracy on {len(data.test)} samples")
    test = evaluate(model, _CountedSplit(data.test, report, "evaluated"), batch_size=256)
    print(
        f"{args.run_dir}: {config.model} on {config.dataset} at {model.bits}: test accuracy "
        f"{100 * test['acc']:.2f}% on {test['n']} samples ({args.which} weights, float32)"
    )
    example, _ = next(iter(data.test.batches(2)))
    result = profile(
        model,
        example,
        data=data.test.batches(256),
        max_batches=args.batches,
        input_bits=raw_input_bits(data.test.kind),
        input_normalization=data.test.normalization,
        progress=report,
    )
    print(result.table())
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import build_report, dry_run, plan_sweep, sweep
    from .train.environment import launch_rank

    _setup_logging()
    weights = args.weights
    explicit = args.allocations.split(",") if args.allocations else None
    plan = plan_sweep(args.budget, weights=weights, explicit=explicit, powers_of_two=not args.any)
    base = _train_config(args)
    if args.dry_run:
        rows = dry_run(base, plan)
        print(
            f"{len(plan)} allocations of {base.model} on {base.dataset} "
            "(cheapest to train first: fewest T, then fewest b_s):"
        )
        print(f"{'b_w/b_s/T':>10} {'budget':>6} {'params_16(M)':>12} {'S-ACE(G)':>10}")
        for row in rows:
            print(
                f"{row['bits']:>10} {row['budget']:>6} {row['params_16'] / 1e6:12.4f} "
                f"{row['s_ace'] / 1e9:10.4f}"
            )
        return 0
    budgets = "-".join(str(b) for b in args.budget or []) or "list"
    out = args.out or f"runs/sweep-{base.model}-{base.dataset}-b{budgets}"
    _writable_dir(out, "--out")
    if args.workers > 1:
        _sweep_workers(args, base, out)
    else:
        sweep(base, plan, out, seeds=args.seeds, storage=args.storage, study=args.study,
              command=_command_line(args))  # fmt: skip
    if launch_rank()[0] != 0 or args.no_report:
        return 0  # under torchrun, rank 0 writes the report
    report = build_report(out)
    print(report.table())
    print("\n".join(report.findings()))
    print(f"report: {out}/report.md, {out}/report.html")
    return 0


def _typed_command(args: argparse.Namespace) -> str:
    """The ``qsnn ...`` command the user typed: the parent's line in a worker started by
    ``--workers N`` (it passes it down), else this process's own."""
    import shlex

    return os.environ.get("QSNN_SWEEP_COMMAND") or "qsnn " + shlex.join(args.argv)


def _command_line(args: argparse.Namespace) -> str | None:
    """The command that started this sweep, for its report; none for a worker joined with
    ``--no-report`` by hand (the command already recorded in ``sweep.json`` is kept)."""
    if args.no_report and "QSNN_SWEEP_COMMAND" not in os.environ:
        return None
    return _typed_command(args)


def _sweep_workers(args: argparse.Namespace, base, out: str) -> None:
    """``--workers N``: N ``qsnn sweep`` processes on ``out`` (the same command, the cores
    divided between them, no report each); they share the runs through the run-directory
    locks (or the study of ``--storage``). Fails if any worker fails."""
    _start_workers(args, base, out, ["--no-report"])


def _start_workers(args: argparse.Namespace, base, out: str, extra: list[str],
                   per_worker: list[list[str]] | None = None) -> None:  # fmt: skip
    """Run ``args.workers`` copies of this command (without ``--workers``/``--threads``) on
    ``out`` with the cores divided between them and ``extra`` (+ ``per_worker[i]``) added."""
    import subprocess

    threads = max(1, (base.threads or os.cpu_count() or 1) // args.workers)
    drop = ("--workers", "--threads", "--sampler-seed")
    argv, skip = [], False
    for token in args.argv:  # the command line without --workers / --threads
        if skip:
            skip = False
        elif token in drop:
            skip = True
        elif not token.startswith(tuple(f"{d}=" for d in drop)):
            argv.append(token)
    command = [sys.executable, "-m", "qsnn", *argv, "--out", out, "--threads", str(threads),
               *extra]  # fmt: skip
    # The workers record the command the user typed (sweep.json), not their own.
    env = {**os.environ, "QSNN_SWEEP_COMMAND": _typed_command(args)}
    procs = [subprocess.Popen(command + (per_worker[i] if per_worker else []), env=env)
             for i in range(args.workers)]  # fmt: skip
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ValueError(f"{args.command} workers exited with {codes}; their messages are above")


def _cmd_search(args: argparse.Namespace) -> int:
    from .sweep.search import refuse_unless_resumed, search

    _setup_logging()
    base = _train_config(args)
    out = args.out or f"runs/search-{base.model}-{base.dataset}"
    _writable_dir(out, "--out")
    options = dict(
        weights=args.weights,
        spikes=args.spikes,
        trials=args.trials,
        objectives=args.objectives.split(","),
        max_s_ace=args.max_s_ace,
        sampler=args.sampler,
        eta=None if args.no_prune else args.eta,
        storage=args.storage,
        study=args.study,
    )
    sampler_seed = base.seed if args.sampler_seed is None else args.sampler_seed
    if args.sampler_seed is None and args.resume:
        import logging
        import secrets

        # A worker joining a search by hand (the same command on another machine): with the
        # search's own seed it would replay the first worker's proposals (measured: 14 of 40
        # proposals of a CIFAR-10 search were repeats), so it draws its own.
        sampler_seed = secrets.randbelow(2**31)
        logging.getLogger("qsnn").info(
            "sampler seed %d (drawn: a joining worker; --sampler-seed fixes it)", sampler_seed
        )
    if args.workers > 1:
        refuse_unless_resumed(out, args.resume)  # the workers themselves all join (--resume)
        # The first worker writes search.json, the others join it; distinct sampler seeds, so
        # that they do not propose the same trials.
        seeds = [["--sampler-seed", str(sampler_seed + i)] for i in range(args.workers)]
        _start_workers(args, base, out, ["--resume"], seeds)
    front = search(base, out, **options, sampler_seed=sampler_seed,
                   resume=args.resume or args.workers > 1)  # fmt: skip
    print(f"Pareto front ({len(front)} trials; objectives {args.objectives}):")
    for r in front:
        alloc = f"uniform {r['bits']}" if r["uniform"] else "mixed"
        print(f"  trial {r['trial']:>3} {alloc:<16} val {100 * r['val_acc']:6.2f}%  test "
              f"{100 * r['test_acc']:6.2f}%  S-ACE {r['s_ace'] / 1e6:9.3f} M")  # fmt: skip
    print(f"report: {out}/pareto.md, {out}/trials.csv, {out}/pareto.json, {out}/pareto.png")
    return 0


def _add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage shared by workers on many machines, e.g. "
                        "postgresql://user:pw@host/db (a search's default: DIR/study.db)")
    p.add_argument("--study", help="study name in --storage (default: from the settings)")


def _cmd_report(args: argparse.Namespace) -> int:
    from .sweep import build_report
    from .sweep.findings import summary_markdown

    entries = []
    for sweep_dir in args.sweep_dir:
        report = build_report(sweep_dir)
        if args.summary:
            entries += [(f"{sweep_dir}/report.md", f) for f in report.paper_findings()]
            continue
        print(report.table())
        print("\n".join(report.findings()))
        print(f"report: {sweep_dir}/report.md, {sweep_dir}/report.html")
    if args.summary:
        if not entries:
            raise ValueError(
                "none of these sweeps has rows for the paper's findings (F1-F4: a split of one "
                "budget between b_s and T, or three b_w at one b_s and T)"
            )
        print(summary_markdown(entries), end="")
    return 0


def _cmd_hw(args: argparse.Namespace) -> int:
    from .hardware import Accelerator, estimate_model

    progress = _progress(args, "hw")

    accel = Accelerator()
    if args.array:
        accel = accel.with_array(args.array)
    changes = {"clock_hz": args.clock, "dma_bytes_per_cycle": args.dma}
    accel = accel.replace(**{k: v for k, v in changes.items() if v is not None})
    if args.json and args.json != "-":
        _writable_file(args.json, "--json")
    shape = _model_shape(args)
    bits = [b.strip() for b in args.bits.split(",")]
    for b in bits:  # every allocation checked before the first is traced
        Bits.parse(b)
    reports = [estimate_model(args.model, b, accel=accel, progress=progress, **shape)
               for b in bits]  # fmt: skip
    if args.json == "-":
        print(
            json.dumps(
                [r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict(),
                indent=2,
            )
        )
        return 0
    for report in reports:
        print(report.table())
        print()
    if len(reports) > 1:
        first = reports[0]
        print(
            f"{'b_w/b_s/T':>10} {'T*b_s':>6} {'cycles':>12} {'fps':>9} {'x cycles':>9} "
            f"{'energy(uJ)':>11}"
        )
        for r in reports:
            print(
                f"{r.bits!s:>10} {r.bits.t * r.bits.s:6d} {r.cycles:12,d} {r.fps:9.1f} "
                f"{r.cycles / first.cycles:9.3f} {r.totals['energy_pj'] / 1e6:11.1f}"
            )
    if args.json:
        from .io import write_json_atomic

        write_json_atomic(
            args.json, [r.to_dict() for r in reports] if len(reports) > 1 else reports[0].to_dict()
        )
        print(f"wrote {args.json}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .deploy import convert
    from .train import load_run

    report = _progress(args, "deploy")

    if args.out:
        (_writable_file if args.out.endswith(".npz") else _writable_dir)(args.out, "--out")
    model, config, data = load_run(args.run_dir, which=args.which, data_root=args.data_root)
    test = data.test
    if test.kind != "static":
        raise ValueError(f"qsnn deploy supports static image datasets; {test.name} is {test.kind}")
    program = convert(model, mean=test.mean, std=test.std, input_size=test.sample_shape,
                      progress=report)  # fmt: skip
    program.source.update(run_dir=str(args.run_dir), dataset=config.dataset, weights=args.which)
    path = program.save(Path(args.out) if args.out else Path(args.run_dir) / "deploy")
    print(program.summary())
    print(f"wrote {path} and {path.with_name('manifest.json')}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .deploy import load_program, verify_run

    progress = _progress(args, "verify")

    if args.json:
        _writable_file(args.json, "--json")
    stored = Path(args.program) if args.program else Path(args.run_dir) / "deploy"
    use_stored = bool(args.program) or (stored / "program.npz").is_file()
    program = load_program(stored) if use_stored else None
    report, _ = verify_run(
        args.run_dir,
        program=program,
        which=args.which,
        batch_size=args.batch_size,
        limit=args.limit,
        bitserial=not args.dense,
        data_root=args.data_root,
        progress=progress,
    )
    source = f"stored program {stored}" if use_stored else "program converted now"
    print(f"{args.run_dir} ({source}): {report.summary()}")
    if args.json:
        from .io import write_json_atomic

        write_json_atomic(args.json, report.to_dict())
        print(f"wrote {args.json}")
    if report.agreement < args.min_agreement:
        print(
            f"qsnn: agreement {100 * report.agreement:.2f}% is below "
            f"{100 * args.min_agreement:.2f}%",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import check_export, export_run

    progress = _progress(args, "export")  # data loading lines, the check's progress

    if args.out:
        _writable_file(args.out, "--out")
    path = export_run(
        args.run_dir, args.format, args.out, which=args.which, data_root=args.data_root,
        batch_size=args.batch_size,
    )
    print(f"wrote {path} ({args.format})")
    if args.check:
        r = check_export(
            args.run_dir, path, args.format, which=args.which, data_root=args.data_root,
            limit=args.limit, progress=progress,
        )
        print(
            f"{args.run_dir} vs {path}: agreement {100 * r['agreement']:.2f}% on {r['n']} test "
            f"samples, max |logit diff| {r['max_abs_diff']:.3g}, accuracy qsnn "
            f"{100 * r['acc_qsnn']:.2f}% / export {100 * r['acc_export']:.2f}%"
        )
    return 0


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root", help="read the run's dataset from here (default: where it was trained)"
    )


_DEBUG_HELP = "show the traceback of an error (bad input too, not only bugs)"


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``qsnn`` parser; ``argv`` (the command line it will parse) only shapes its error
    hints."""
    parser = _Parser(
        prog="qsnn",
        description="Quantized spiking neural networks under a bit budget T*b_w*b_s.",
        argv=argv,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"qsnn {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        parser_class=functools.partial(_Parser, argv=argv),
    )

    p = sub.add_parser("bits", help="show an allocation b_w/b_s/T and its bit budget")
    p.add_argument("bits", help="allocation 'b_w/b_s/T', e.g. 4/2/2")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_bits)

    p = sub.add_parser("allocations", help="list every allocation of a bit budget")
    p.add_argument("--budget", type=_count(1), required=True, help="bit budget T*b_w*b_s")
    p.add_argument("--w", type=int, help="fix weight bits b_w")
    p.add_argument("--s", type=int, help="fix spike bits b_s")
    p.add_argument("--t", type=int, help="fix time steps T")
    p.add_argument("--any", action="store_true", help="allow fields that are not powers of two")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_allocations)

    p = sub.add_parser("profile", help="count MACs, params, S-ACE, SOPs, NS-ACE of a model")
    _add_model_args(p, "allocation b_w/b_s/T, e.g. 4/2/2")
    p.add_argument("--batch", type=_count(1), default=2, help="example batch size (default 2)")
    p.add_argument("--counting", choices=("exact", "paper"), default="exact")
    p.add_argument("--input-bits", type=_count(1), default=8, help="raw input width (default 8)")
    p.add_argument(
        "--time-major",
        action="store_true",
        help="feed [T, B, C, H, W] event frames instead of a static image",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the input")
    p.add_argument("--json", help="also write the profile to this JSON file")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("train", help="train a model at one allocation")
    add_train_flags(p)
    p.add_argument("--out", help="run directory (default runs/MODEL-DATASET-BITS)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="train every allocation of a bit budget and report")
    p.add_argument(
        "--budget", type=_budget_list,
        help="bit budget T*b_w*b_s; several (1,2,4,8) or a range (1-8) sweep every budget in it",
    )
    p.add_argument("--weights", type=_int_list, help="only these b_w, comma-separated (e.g. 1,2,4)")
    p.add_argument("--allocations", help="explicit list, e.g. 4/4/1,1/1/16")
    p.add_argument("--any", action="store_true", help="allow fields that are not powers of two")
    p.add_argument("--seeds", type=_count(1), default=1, help="seeds per allocation (default 1)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the allocations and their S-ACE without training",
    )
    p.add_argument("--out", help="sweep directory (default runs/sweep-MODEL-DATASET-bBUDGET)")
    p.add_argument(
        "--workers", type=_count(1), default=1,
        help="worker processes sharing the sweep, the cores divided between them (default 1)",
    )
    p.add_argument(
        "--no-report", action="store_true",
        help="train only (a worker that joins a sweep another process reports)",
    )
    _add_storage_args(p)
    add_train_flags(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "search", help="search per-layer allocations for accuracy against S-ACE (Optuna)"
    )
    p.add_argument("--weights", type=_int_list, required=True,
                   help="b_w each weight layer may take, comma-separated (e.g. 1,2,4)")
    p.add_argument("--spikes", type=_int_list,
                   help="b_s each neuron may take (default: the --bits b_s for all)")
    p.add_argument("--trials", type=_count(1), default=20,
                   help="trials to train or prune, all workers together (default 20)")
    p.add_argument("--objectives", default="acc,s_ace",
                   help="acc and any of s_ace, params_16, fps (default acc,s_ace)")
    p.add_argument("--max-s-ace", metavar="LIMIT",
                   help="skip allocations costlier than this S-ACE per sample: a number or "
                        "a uniform allocation such as 1/4/1 (its S-ACE)")
    p.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe")
    p.add_argument("--sampler-seed", type=int, help="sampler seed (default: --seed)")
    p.add_argument("--eta", type=_count(2), default=3,
                   help="prune after an epoch trials outside the best 1/ETA at no higher "
                        "S-ACE (default 3)")
    p.add_argument("--no-prune", action="store_true", help="train every trial fully")
    p.add_argument("--out", help="search directory (default runs/search-MODEL-DATASET)")
    p.add_argument("--resume", action="store_true", help="continue or join the search in --out")
    p.add_argument("--workers", type=_count(1), default=1,
                   help="worker processes sharing the search, the cores divided (default 1)")
    _add_storage_args(p)
    add_train_flags(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("report", help="rebuild a sweep's report from its finished runs")
    p.add_argument("sweep_dir", nargs="+", help="one or more sweep directories")
    p.add_argument(
        "--summary", action="store_true",
        help="print one Markdown table of the paper's findings (F1-F4) over the sweeps",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("eval", help="re-evaluate a finished run and print its profile")
    p.add_argument("run_dir", help="a run directory written by `qsnn train`")
    _add_data_root(p)
    p.add_argument("--time-steps", type=_count(1), help="evaluate at another T")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--batches", type=_count(1), default=8, help="test batches for firing rates")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "demo", help="train a tiny quantized SNN on a toy problem, check the bit-serial identity"
    )
    p.add_argument("--bits", default="2/2/2", help="allocation b_w/b_s/T (default 2/2/2)")
    p.add_argument("--steps", type=_count(1), default=200, help="training steps (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("hw", help="cycles, latency, fps and energy on the bit-serial accelerator")
    _add_model_args(p, "allocation b_w/b_s/T, or a comma list")
    p.add_argument("--array", help="PE array ROWSxCOLS (default 32x16)")
    p.add_argument("--clock", type=_positive_float, help="clock in Hz (default 200e6)")
    p.add_argument("--dma", type=_positive_float, help="DMA bytes per cycle (default 16)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print JSON instead of the table, or also write it to PATH",
    )
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_hw)

    p = sub.add_parser("deploy", help="convert a trained run into an integer program (.npz)")
    p.add_argument("run_dir", help="a run directory written by `qsnn train`")
    _add_data_root(p)
    p.add_argument("--out", help="output folder or .npz (default RUN_DIR/deploy)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("verify", help="run the integer program on the test set, compare")
    p.add_argument("run_dir", help="a run directory written by `qsnn train`")
    _add_data_root(p)
    p.add_argument("--program", help="a stored program (default RUN_DIR/deploy if present)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--batch-size", type=_count(1), default=64, help="samples per batch")
    p.add_argument("--limit", type=_count(1), help="only the first N test samples")
    p.add_argument("--dense", action="store_true", help="integer but not bit-serial (faster)")
    p.add_argument(
        "--min-agreement",
        type=_fraction,
        default=0.995,
        help="exit 1 below this prediction agreement (default 0.995)",
    )
    p.add_argument("--json", help="also write the report to this JSON file")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "export", help="export a trained run for other tools (safetensors, ONNX, QONNX)"
    )
    p.add_argument("run_dir", help="a run directory written by `qsnn train`")
    _add_data_root(p)
    p.add_argument(
        "--format",
        required=True,
        choices=("safetensors", "onnx", "qonnx", "nir"),
        help="safetensors (weights + config), onnx (float graph, T unrolled), qonnx (T = 1) "
        "or nir (binary spikes, b_s = 1)",
    )
    p.add_argument(
        "--batch-size",
        type=_count(1),
        default=1,
        help="qonnx: the graph's fixed batch size (default 1, as FINN takes it)",
    )
    p.add_argument("--out", help="output file (default RUN_DIR/export/model.<format>)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument(
        "--check",
        action="store_true",
        help="run the written file on the test set (onnxruntime for ONNX) and report agreement",
    )
    p.add_argument("--limit", type=_count(1), help="with --check: the first N test samples")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_export)
    for p in sub.choices.values():  # also after the command; SUPPRESS keeps `qsnn --debug CMD`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # torch's compiler otherwise starts a pool of worker processes that import torch on every
    # run (tens of CPU-seconds, even when nothing is compiled); one in-process thread suffices
    # for qsnn's two small fused kernels. Must be set before torch._inductor is imported.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for commands that start copies of themselves
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("qsnn: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        status, message = _error_exit(err)
        if status is None:
            raise  # a bug, not bad input: the traceback says where
        if args.debug:
            traceback.print_exc()
        print(message, file=sys.stderr)
        return status


_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))

#: File-system conditions that are the machine's or the user's to fix, not qsnn bugs: one line
#: even when the error carries no file name (a full disk inside torch.save's writer).
_ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.EFBIG, errno.ENOTEMPTY,
    errno.ELOOP, errno.EBUSY, errno.EMFILE, errno.ENFILE, errno.EIO,
})


def _error_exit(err: Exception) -> tuple[int | None, str]:
    """The exit status and the one line for an error that is the user's to fix; ``None`` for
    anything else (a bug keeps its traceback)."""
    from .train import NonFiniteLossError, TrainingInterrupted

    # Training stops (non-finite loss, Ctrl-C) say what happened and what was kept.
    if isinstance(err, TrainingInterrupted):
        return 130, f"qsnn: {err}"
    if isinstance(err, NonFiniteLossError):
        return 3, f"qsnn: error: {err}"
    if isinstance(err, OSError) and err.filename is not None:
        return 2, f"qsnn: error: {err.filename}: {err.strerror or err}"
    if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:
        return 2, f"qsnn: error: {err.strerror or err}"
    if _is_user_error(err):
        return 2, f"qsnn: error: {err}"
    return None, ""


def _is_user_error(err: Exception) -> bool:
    """Bad input rather than a bug: a missing optional extra (an ``ImportError`` that says
    what to ``pip install``), a ``ValueError`` that qsnn raised itself (its innermost
    frame is qsnn code, or its class is qsnn's: ``DataError``, ``CheckpointError``), or a file
    qsnn read that is not JSON or not text. A ``ValueError`` from inside another library (numpy,
    torch, ...) is a bug of qsnn's in how it called it, and keeps its traceback."""
    if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):
        return True
    if isinstance(err, ImportError) and "pip install" in str(err):
        return True  # an optional extra that is not installed, named with its install line
    if not isinstance(err, ValueError):
        return False
    if type(err).__module__.partition(".")[0] == "qsnn":
        return True
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    where = os.path.realpath(tb.tb_frame.f_code.co_filename)
    return where.startswith(_PACKAGE_DIR + os.sep)


if __name__ == "__main__":
    sys.exit(main())

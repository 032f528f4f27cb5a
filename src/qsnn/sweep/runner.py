"""``sweep``: train every allocation of a bit budget (several seeds), resumably.

Layout of a sweep directory::

    DIR/sweep.json                        the sweep's settings (written first)
    DIR/runs/<w>-<s>-<t>-seed<k>-<key>/   one ``qsnn train`` run directory each
    DIR/results.csv, results.jsonl, report.md, report.html, *.png   (``qsnn report DIR``)

``<key>`` is the run's :func:`~qsnn.train.config.settings_key`: a hash of everything that
shapes it (model, data, allocation, overrides, recipe, seed, neuron options). A run counts as
finished when its ``result.json`` exists, or when its directory is gone but the last report's
``results.jsonl`` holds its row under that key (a checkout with the report, not the runs).
Re-running the same sweep skips finished runs and resumes an interrupted one from its
checkpoint, while a re-run with other settings (more epochs, another learning rate) trains
new runs beside the old ones. Directories written before run keys (``<w>-<s>-<t>-seed<k>``)
are reused when their ``config.json`` matches. Under ``torchrun`` only rank 0 writes the
sweep's own files (each run writes from rank 0 too).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._progress import eta as _eta  # the one estimate of time left (sweep, loops)
from ..allocation import Bits, allocations
from ..io import DirectoryInUseError, lock_directory, read_json_object, write_json_atomic
from ..train import TrainConfig, read_config
from ..train.config import settings_key
from ..train.engine import CHECKPOINT, CONFIG
from ..train.environment import launch_rank

__all__ = ["dry_run", "plan_sweep", "run_dir_for", "run_dir_name", "sweep"]

log = logging.getLogger(__name__)


def run_dir_name(bits: Bits, seed: int, key: str | None = None) -> str:
    """``4-2-2-seed0-<key>`` for allocation ``4/2/2``, seed 0 and settings key ``key``
    (``4-2-2-seed0`` without one: the layout before run keys)."""
    name = f"{bits.w}-{bits.s}-{bits.t}-seed{seed}"
    return f"{name}-{key}" if key else name


def run_dir_for(runs: Path, config: TrainConfig) -> Path:
    """The directory of the run ``config`` describes: its keyed directory, or a legacy
    unkeyed one whose saved settings are exactly ``config``'s."""
    bits = Bits.parse(config.bits)
    keyed = runs / run_dir_name(bits, config.seed, settings_key(config))
    legacy = runs / run_dir_name(bits, config.seed)
    if not keyed.exists() and (legacy / CONFIG).is_file():
        try:
            saved = read_config(legacy / CONFIG)
        except ValueError:
            return keyed
        if settings_key(saved) == settings_key(config):
            return legacy
    return keyed


def plan_sweep(
    budget: int | Sequence[int] | None = None,
    *,
    weights: Sequence[int] | None = None,
    explicit: Sequence[str | Bits] | None = None,
    powers_of_two: bool = True,
) -> list[Bits]:
    """The allocations of a sweep, cheapest first (fewest time steps, then fewest spike bits).

    Either every allocation of ``budget`` (one budget or several, e.g. ``[1, 2, 4, 8]``, so that
    one sweep and one Fig. 4 cover them all; optionally only ``b_w`` in ``weights``) or the
    ``explicit`` list. Training cost grows with ``T`` (the layers run ``T`` times), so runs
    are ordered by ``(T, b_s, b_w)``.
    """
    budgets = _budgets(budget)
    if explicit:
        plan = [Bits.parse(b) for b in explicit]
        if budgets:
            off = [str(b) for b in plan if b.budget not in budgets]
            if off:
                raise ValueError(f"allocations {off} do not have budget {_join(budgets)}")
    else:
        if not budgets:
            raise ValueError("give --budget or --allocations")
        plan = []
        for one in budgets:
            found = allocations(one, powers_of_two=powers_of_two)  # raises when there is none
            if weights:
                wanted = {min(int(w), 16) for w in weights}
                found = [b for b in found if b.w_eff in wanted]
                if not found:
                    raise ValueError(
                        f"no allocation of budget {one} has b_w in {sorted(wanted)}; the "
                        f"budget's allocations are "
                        f"{[str(b) for b in allocations(one, powers_of_two=powers_of_two)]}"
                    )
            plan += found
    if len(set(plan)) != len(plan):
        raise ValueError("the allocation list has duplicates")
    return sorted(plan, key=lambda b: (b.t, b.s, b.w_eff))


def _budgets(budget: int | Sequence[int] | None) -> list[int]:
    if budget is None:
        return []
    values = [int(budget)] if isinstance(budget, int) else [int(b) for b in budget]
    if len(set(values)) != len(values):
        raise ValueError(f"budget list {values} has duplicates")
    return sorted(values)


def _join(budgets: Sequence[int]) -> str:
    return ",".join(str(b) for b in budgets)


def dry_run(base: TrainConfig, plan: Sequence[Bits], *, batch: int = 2) -> list[dict[str, Any]]:
    """Each allocation's params, params_16 and S-ACE without training (``--dry-run``).

    S-ACE does not depend on the data; the model is built at the dataset's input size and
    profiled on a random batch with ``qsnn.metrics.profile`` (the same numbers a trained run
    reports, since ``S-ACE = MACs * b_w * b_in * T_op`` uses no firing rate).
    """
    import torch

    from ..data import dataset_spec, get_dataset, raw_input_bits
    from ..metrics import profile
    from ..models import create_model

    spec = dataset_spec(base.dataset)
    steps = plan[0].t if spec.kind == "events" else None
    data = get_dataset(
        base.dataset, base.data_root, "test", time_steps=steps, **(base.data_options or {})
    )
    shape = data.sample_shape
    rows = []
    for bits in plan:
        model = create_model(
            base.model,
            bits=str(bits),
            overrides=base.overrides,
            num_classes=data.num_classes,
            in_channels=shape[0],
            img_size=tuple(shape[-2:]),
            **(base.model_options or {}),
        )
        if spec.kind == "events":
            x = torch.randint(0, 2, (bits.t, batch, *shape)).float()
        else:
            x = torch.rand(batch, *shape)
        p = profile(model, x, input_bits=raw_input_bits(data.kind))
        rows.append(
            {
                "bits": str(bits),
                "budget": bits.budget,
                "params": p.params,
                "params_16": p.params_16,
                "s_ace": p.s_ace,
                "macs": p.macs,
            }
        )
    return rows


def sweep(
    base: TrainConfig,
    plan: Sequence[Bits],
    out_dir: str | os.PathLike,
    *,
    seeds: int = 1,
    poll_s: float = 1.0,
    storage: str | None = None,
    study: str | None = None,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Train every allocation in ``plan`` for ``seeds`` seeds (``base.seed + k``) into
    ``out_dir/runs``; skip finished runs, resume interrupted ones. Returns the results.

    Several ``sweep`` processes may share one ``out_dir``: a run being trained by another
    process (its directory is locked, :func:`qsnn.io.lock_directory`) is left to it and looked
    at again every ``poll_s`` seconds once this process has nothing else to do; when it has
    finished, its result is read; when its process died (the lock is gone with it), this
    process resumes it from its checkpoint. Each run is trained by one process at a time. The
    ranks of one ``torchrun`` job do not share this way: they train every run together.

    ``storage`` (an Optuna storage URL, :mod:`qsnn.sweep.study`) lets workers on other
    machines share the sweep too: each run is claimed through the study ``study`` (default:
    one named after the base settings), a dead worker's claim is retried after its heartbeat
    stops, and a run finished anywhere is reported everywhere (its result is in the study).

    ``command`` (the command line that started the sweep) is kept in ``sweep.json`` for the
    report's header; a call without one keeps the command already recorded there."""
    from ..train import train

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    out = Path(out_dir)
    settings = {"base": base.to_dict(), "allocations": [str(b) for b in plan], "seeds": seeds}
    previous = out / "sweep.json"
    if previous.exists():
        saved = read_json_object(previous, "a sweep's settings")
        old = saved.get("base")
        old = old if isinstance(old, dict) else {}
        if command is None and isinstance(saved.get("command"), str):
            command = saved["command"]
        if old.get("model") not in (None, base.model) or old.get("dataset") not in (
            None,
            base.dataset,
        ):
            raise ValueError(
                f"{out} holds a sweep of {old.get('model')} on {old.get('dataset')}; "
                "choose another --out"
            )
    if command is not None:
        settings["command"] = command
    rank, world = launch_rank()
    if rank == 0:  # one writer under torchrun
        write_json_atomic(previous, settings)
    # Several sweep processes share the runs through the run locks; the ranks of one torchrun
    # job must train the same run together instead (only rank 0 locks; no rank may skip one).
    shared = world == 1
    jobs = [replace(base, bits=str(bits), seed=base.seed + k) for bits in plan
            for k in range(seeds)]  # fmt: skip
    reported = _reported(out)  # read once: the report rewrites results.jsonl only at the end
    if storage is not None:
        if world > 1:
            raise ValueError(
                "--storage shares a sweep between processes; under torchrun the "
                "ranks of one job train each run together (drop --storage)"
            )
        return _sweep_on_board(jobs, out, storage, study or _study_name(base), poll_s, reported)

    def attempt(i: int) -> dict[str, Any] | None:
        config = jobs[i]
        run = run_dir_for(out / "runs", config)
        tag = f"[{i + 1}/{len(jobs)}] {config.bits} seed {config.seed}"
        row = None if (run / "result.json").exists() else reported.get(settings_key(config))
        if row is not None:
            log.info("%s: finished before (recorded in results.jsonl), skipped", tag)
            return row
        try:
            if shared and not (run / "result.json").exists():
                with lock_directory(run, "run directory"):
                    pass  # free now (a worker that takes it first is caught below)
            if (run / "result.json").exists():  # looked at after the lock: settled
                log.info("%s: finished before, skipped", tag)
                return read_json_object(run / "result.json", "a run's result")
            resume = (run / CHECKPOINT).exists()
            log.info("%s%s", tag, " (resuming)" if resume else "")
            return train(config, run, resume=resume)
        except DirectoryInUseError as err:
            if not shared:
                raise
            log.info("%s: %s; back to it later", tag, err)
            return None

    return _until_done(len(jobs), attempt, poll_s, base.progress)


def _study_name(base: TrainConfig) -> str:
    """The default study of a sweep: the same on every machine that runs the same command."""
    return f"sweep-{base.model}-{base.dataset}-{settings_key(replace(base, bits='1/1/1', seed=0))}"


def _sweep_on_board(
    jobs: list[TrainConfig],
    out: Path,
    storage: str,
    study: str,
    poll_s: float,
    reported: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """``sweep`` with the runs claimed through an Optuna study (``--storage``); ``reported``:
    :func:`_reported`."""
    from ..train import train
    from .study import JobBoard

    board = JobBoard(storage, study)

    def attempt(i: int) -> dict[str, Any] | None:
        config = jobs[i]
        run, key = run_dir_for(out / "runs", config), settings_key(config)
        tag = f"[{i + 1}/{len(jobs)}] {config.bits} seed {config.seed}"
        recorded = board.result(key)
        if recorded:
            log.info("%s: finished (recorded in the study), skipped", tag)
            if not (run / "result.json").exists():  # trained elsewhere: report it here too
                write_json_atomic(run / "result.json", recorded)
            return recorded
        if (run / "result.json").exists():  # finished before the study knew of it
            result = read_json_object(run / "result.json", "a run's result")
            board.record(key, _value(result), result)
            return result
        row = reported.get(key)
        if row is not None:  # its run directory is gone, its row kept by the last report
            # (not put in the study: a worker there would take the row for a run's result)
            log.info("%s: finished before (recorded in results.jsonl), skipped", tag)
            return row
        try:
            with board.holding(key, {"bits": config.bits, "seed": config.seed}) as claim:
                if claim is None:
                    return None
                resume = (run / CHECKPOINT).exists()
                log.info("%s (trial %d%s)", tag, claim.number, ", resuming" if resume else "")
                result = train(config, run, resume=resume)
                claim.finish(_value(result), result)
                return result
        except DirectoryInUseError as err:  # a worker outside the study trains it here
            log.info("%s: %s; back to it later", tag, err)
            return None

    return _until_done(len(jobs), attempt, poll_s, all(job.progress for job in jobs))


def _reported(out: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``out/results.jsonl`` by settings key, as the report wrote them: runs
    finished before, which the report keeps when their directories are gone, so a sweep does
    not train them again."""
    from .report import public_row, recorded_rows  # the report's reader of its own file

    return {key: public_row(row) for key, row in recorded_rows(out).items()}


def _until_done(
    n: int, attempt: Callable[[int], dict[str, Any] | None], poll_s: float, progress: bool = True
) -> list[dict[str, Any]]:
    """``attempt(i)`` for jobs ``0..n-1`` until each gave its result (``None``: another worker
    has it now; looked at again every ``poll_s`` seconds once nothing else is left). After
    each run trained here, ``progress`` logs ``k of N runs done`` with the time elapsed and
    left (``--no-progress``: not)."""
    results: dict[int, dict[str, Any]] = {}
    pending = list(range(n))
    started = time.monotonic()
    while pending:
        busy = []
        for i in pending:
            before = time.monotonic()
            got = attempt(i)
            if got is None:
                busy.append(i)
                continue
            results[i] = got
            if progress and time.monotonic() - before > 1.0:  # trained here, not found finished
                log.info("sweep: %d of %d runs done, %s", len(results), n,
                         _eta(time.monotonic() - started, len(results), n))  # fmt: skip
        pending = busy
        if pending:  # another worker trains these: wait until they finish or it dies
            time.sleep(poll_s)
    return [results[i] for i in range(n)]


def _value(result: dict[str, Any]) -> float:
    """A finished run's trial value: its selection accuracy (validation, else test)."""
    value = result.get("val_acc_best")
    return float(value if value is not None else result["test_acc_best"])

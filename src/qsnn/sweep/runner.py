"""``sweep``: train every allocation of a bit budget (several seeds), resumably.

Layout of a sweep directory::

    DIR/sweep.json                  the sweep's settings (written first)
    DIR/runs/<w>-<s>-<t>-seed<k>/   one ``qsnn train`` run directory each
    DIR/results.csv, results.jsonl, report.md, report.html, *.png   (``qsnn report DIR``)

A run counts as finished when its ``result.json`` exists; re-running the same sweep skips
finished runs and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..allocation import Bits, allocations
from ..io import read_json_object, write_json_atomic
from ..train import TrainConfig
from ..train.engine import CHECKPOINT

__all__ = ["dry_run", "plan_sweep", "run_dir_name", "sweep"]

log = logging.getLogger(__name__)


def run_dir_name(bits: Bits, seed: int) -> str:
    """``4-2-2-seed0`` for allocation ``4/2/2`` and seed 0."""
    return f"{bits.w}-{bits.s}-{bits.t}-seed{seed}"


def plan_sweep(
    budget: int | None = None,
    *,
    weights: Sequence[int] | None = None,
    explicit: Sequence[str | Bits] | None = None,
    powers_of_two: bool = True,
) -> list[Bits]:
    """The allocations of a sweep, cheapest first (fewest time steps, then fewest spike bits).

    Either every allocation of ``budget`` (optionally only ``b_w`` in ``weights``) or the
    ``explicit`` list. Training cost grows with ``T`` (the layers run ``T`` times), so runs
    are ordered by ``(T, b_s, b_w)``.
    """
    if explicit:
        plan = [Bits.parse(b) for b in explicit]
        if budget is not None:
            off = [str(b) for b in plan if b.budget != budget]
            if off:
                raise ValueError(f"allocations {off} do not have budget {budget}")
    else:
        if budget is None:
            raise ValueError("give --budget or --allocations")
        plan = allocations(budget, powers_of_two=powers_of_two)
        if weights:
            wanted = {min(int(w), 16) for w in weights}
            plan = [b for b in plan if b.w_eff in wanted]
            if not plan:
                raise ValueError(
                    f"no allocation of budget {budget} has b_w in {sorted(wanted)}; "
                    f"the budget's allocations are "
                    f"{[str(b) for b in allocations(budget, powers_of_two=powers_of_two)]}"
                )
    if len(set(plan)) != len(plan):
        raise ValueError("the allocation list has duplicates")
    return sorted(plan, key=lambda b: (b.t, b.s, b.w_eff))


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
) -> list[dict[str, Any]]:
    """Train every allocation in ``plan`` for ``seeds`` seeds (``base.seed + k``) into
    ``out_dir/runs``; skip finished runs, resume interrupted ones. Returns the results."""
    from ..train import train

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    out = Path(out_dir)
    settings = {"base": base.to_dict(), "allocations": [str(b) for b in plan], "seeds": seeds}
    previous = out / "sweep.json"
    if previous.exists():
        old = read_json_object(previous, "a sweep's settings").get("base")
        old = old if isinstance(old, dict) else {}
        if old.get("model") not in (None, base.model) or old.get("dataset") not in (
            None,
            base.dataset,
        ):
            raise ValueError(
                f"{out} holds a sweep of {old.get('model')} on {old.get('dataset')}; "
                "choose another --out"
            )
    write_json_atomic(previous, settings)
    results = []
    total = len(plan) * seeds
    done = 0
    for bits in plan:
        for k in range(seeds):
            run = out / "runs" / run_dir_name(bits, base.seed + k)
            done += 1
            result_path = run / "result.json"
            if result_path.exists():
                log.info(
                    "[%d/%d] %s seed %d: finished before, skipped", done, total, bits, base.seed + k
                )
                results.append(read_json_object(result_path, "a run's result"))
                continue
            resume = (run / CHECKPOINT).exists()
            log.info(
                "[%d/%d] %s seed %d%s",
                done,
                total,
                bits,
                base.seed + k,
                " (resuming)" if resume else "",
            )
            config = replace(base, bits=str(bits), seed=base.seed + k)
            results.append(train(config, run, resume=resume))
    return results

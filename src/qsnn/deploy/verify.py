"""Check an integer program against the trained model it came from.

The trained model runs in float32 without autocast (``model.eval()``); the program runs on the
same uint8 images. Reported: prediction agreement, accuracies, the fraction of samples whose
every spike level agrees (every neuron's and every restricted ADD's output), and the logit
error on those samples next to the tolerance that follows from the fixed-point format (output
rounding, ``bound_fixed``) plus the float32 rounding of the trained model's last layer
(``bound_float32``). A spike can only differ where
the float membrane sits within ``membrane_bound`` of a level boundary; such a flip moves the
logits by a whole level's weight, which no rounding bound covers, so logit errors are checked
on spike-exact samples.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from .._progress import Progress, resolve
from ..data import TensorData
from ..models.layers import SEWAdd
from ..neurons import SpikeNeuron
from .convert import convert
from .program import AddLayer, IntegerProgram, SpikingLayer

log = logging.getLogger(__name__)

__all__ = ["VerifyReport", "verify", "verify_run"]


@dataclass
class VerifyReport:
    """Agreement of an integer program with its trained model on one dataset split."""

    samples: int
    agreement: float  # fraction of samples with the same predicted class
    accuracy_float: float
    accuracy_integer: float
    spike_exact: float  # fraction of samples whose every spike level agrees
    level_mismatches: int  # spike levels that differ, over all layers, steps and samples
    max_logit_error: float  # over all samples
    max_logit_error_exact: float  # over spike-exact samples
    max_tolerance_exact: float  # the largest tolerance on spike-exact samples
    within_tolerance: bool  # every spike-exact sample's logits within its tolerance
    membrane_bound: float  # largest layer bound on |u_int - u| near a decision (thresholds)
    bitserial: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.samples} samples: predictions agree on {100 * self.agreement:.2f}% "
            f"(float32 accuracy {100 * self.accuracy_float:.2f}%, integer "
            f"{100 * self.accuracy_integer:.2f}%); every spike agrees on "
            f"{100 * self.spike_exact:.2f}% ({self.level_mismatches} levels differ); max logit "
            f"error {self.max_logit_error_exact:.3g} on spike-exact samples (tolerance "
            f"{self.max_tolerance_exact:.3g}: {'within' if self.within_tolerance else 'EXCEEDED'}"
            f"), {self.max_logit_error:.3g} over all; membrane bound "
            f"{self.membrane_bound:.2g} thresholds; "
            f"{'bit-serial' if self.bitserial else 'dense'} integer run"
        )


def _neuron_hooks(model: nn.Module, names: set[str], store: dict[str, torch.Tensor]) -> list:
    """Record the integer levels of every neuron and restricted ADD named in ``names``."""
    handles = []
    for name, module in model.named_modules():
        if name in names and isinstance(module, (SpikeNeuron, SEWAdd)):
            def hook(mod, args, out, name=name):
                store[name] = mod.to_levels(out).to(torch.int64)
            handles.append(module.register_forward_hook(hook))
    return handles


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def verify(
    model: nn.Module,
    program: IntegerProgram,
    data: TensorData,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    bitserial: bool = True,
    progress: Progress | bool | None = None,
) -> VerifyReport:
    """Run ``model`` (float32) and ``program`` on ``data`` (raw uint8 images) and compare.

    ``batch_size`` and ``limit`` (the first ``limit`` samples; ``None``: all) must be integers
    >= 1, and there must be at least one sample to compare. ``progress`` (a
    ``qsnn._progress.Progress`` or ``True``) reports the samples compared on stderr; default:
    quiet.
    """
    _check_count("batch_size", batch_size)
    if limit is not None:
        _check_count("limit", limit)
    if data.kind != "static":
        raise ValueError(f"verify needs static images; {data.name} holds {data.kind}")
    if len(data) == 0:
        raise ValueError(f"verify needs samples; {data.name} {data.split} is empty")
    model.eval()
    names = {layer.name for layer in program.layers
             if isinstance(layer, (SpikingLayer, AddLayer))}
    float_levels: dict[str, torch.Tensor] = {}
    handles = _neuron_hooks(model, names, float_levels)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = len(data) if limit is None else min(limit, len(data))
    agree = correct_f = correct_i = exact = mismatches = 0
    max_err = max_err_exact = max_tol = 0.0
    within = True
    kind = "bit-serially" if bitserial else "densely"
    report = resolve(progress, "verify")
    report.stage(f"{n} samples through the float model and, {kind}, the integer program")
    count = report.counter(n, "samples", "compared")
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                raw = data.inputs[start:start + batch_size][: n - start].cpu()
                labels = data.labels[start:start + len(raw)].cpu()
                x = data.to_float(raw.to(device))
                with torch.autocast(device.type, enabled=False):
                    ref = model(x).double().cpu()
                out = program.run(raw, bitserial=bitserial, trace=True)
                pred_f, pred_i = ref.argmax(1), out.logits.argmax(1)
                agree += int((pred_f == pred_i).sum())
                correct_f += int((pred_f == labels).sum())
                correct_i += int((pred_i == labels).sum())
                same = torch.ones(len(raw), dtype=torch.bool)
                for name, levels in out.levels.items():
                    ref_levels = float_levels[name].cpu()  # [T, B, ...]
                    diff = (ref_levels != levels).flatten(2).transpose(0, 1).flatten(1)
                    mismatches += int(diff.sum())
                    same &= ~diff.any(1)
                err = (out.logits - ref).abs()
                max_err = max(max_err, float(err.max()))
                exact += int(same.sum())
                if bool(same.any()):
                    tol = out.tolerance[same]
                    max_err_exact = max(max_err_exact, float(err[same].max()))
                    max_tol = max(max_tol, float(tol.max()))
                    within = within and bool((err[same] <= tol).all())
                # Short: it is also the postfix of the bar on a terminal.
                count.advance(len(raw), lambda agree=agree: f"{100 * agree / count.done:.2f}% "
                              "agree so far")  # fmt: skip
    finally:
        count.close()
        for handle in handles:
            handle.remove()
    bound = max(layer.membrane_bound for layer in program.layers
                if isinstance(layer, SpikingLayer))
    return VerifyReport(
        samples=n, agreement=agree / max(1, n), accuracy_float=correct_f / max(1, n),
        accuracy_integer=correct_i / max(1, n), spike_exact=exact / max(1, n),
        level_mismatches=mismatches, max_logit_error=max_err, max_logit_error_exact=max_err_exact,
        max_tolerance_exact=max_tol, within_tolerance=within, membrane_bound=bound,
        bitserial=bitserial,
    )


def verify_run(
    run_dir: str | os.PathLike,
    *,
    program: IntegerProgram | None = None,
    which: str = "best",
    batch_size: int = 64,
    limit: int | None = None,
    bitserial: bool = True,
    data_root: str | os.PathLike | None = None,
    progress: Progress | bool | None = None,
) -> tuple[VerifyReport, IntegerProgram]:
    """Load a run directory, convert (unless ``program`` is given) and ``verify`` on its test
    split (read from ``data_root`` instead of the run's saved root when given); ``progress``
    as in :func:`verify`, with a line for the conversion."""
    _check_count("batch_size", batch_size)
    if limit is not None:
        _check_count("limit", limit)
    from ..train import load_run

    report = resolve(progress, "verify")
    model, _config, data = load_run(run_dir, which=which, data_root=data_root)  # type: ignore[arg-type]
    test = data.test
    if test.kind != "static":
        raise ValueError(f"qsnn.deploy supports static image datasets; {test.name} is {test.kind}")
    if program is None:
        program = convert(model, mean=test.mean, std=test.std, input_size=test.sample_shape,
                          progress=report)  # fmt: skip
    found = verify(model, program, test, batch_size=batch_size, limit=limit,
                   bitserial=bitserial, progress=report)  # fmt: skip
    return found, program

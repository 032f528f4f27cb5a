"""Whole-model estimates: observe a forward pass, cost every layer, sum, print.

``estimate(model)`` runs a forward pass under ``qsnn.metrics``' op tracker, turns every
conv / linear / matmul it sees into a ``GemmShape`` (conv ``M = C_out / groups``,
``K = C_in * k_h * k_w / groups``, ``N = H_out * W_out``; linear ``M = out``, ``K = in``,
``N = tokens``), costs each with ``layer_cost`` and adds them up: layers run one after the
other, one sample at a time, so

    latency = sum(cycles) / clock,     fps = clock / sum(cycles).

The layer shapes do not depend on ``T``: a layer that runs every step has the same GEMM at
every step, only its ``T_op`` is ``T``. So a static input is traced at ``T = 2`` and ``T = 3``
(the model's encoders set for the run and restored) instead of at the model's ``T``; when both
give the same layers (``T_op`` of ``T`` steps read as the model's ``T``) they are the model's,
exactly, at any ``T`` (``qsnn hw`` at ``T = 1000`` traced 1000 steps of every neuron before:
128 s and 1.4 GB; now two short traces). A model whose layers change with ``T``, and
time-major input, are traced at their own ``T`` after a memory check (``qsnn._memory``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from .._memory import ModelMemoryCheck, at_time_steps
from .._progress import Progress, resolve
from .._table import layer_table
from ..allocation import FLOAT_WEIGHT_BITS, Bits
from ..bitwidth import declared_weight_bits
from ..metrics.tracker import OpRecord, example_shape, run_tracked
from .cost import GemmShape, LayerCost, layer_cost
from .device import DEFAULT_ACCELERATOR, Accelerator

__all__ = ["HardwareReport", "estimate", "estimate_model", "gemms_from_model"]


def _per_step_macs(record: OpRecord, batch: int) -> int:
    return round(record.macs_total / (batch * record.steps))


def _weight_bits(module: nn.Module | None) -> int:
    bits = declared_weight_bits(module)
    return FLOAT_WEIGHT_BITS if bits is None else bits  # a foreign layer: float weights


def _gemm(record: OpRecord, batch: int, steps: int, spike_bits: int, last: bool,
          t_op: int | None = None) -> GemmShape:
    macs = _per_step_macs(record, batch)
    module = record.weight_module
    out_steps, out_bits = (1, 32) if last else (steps, spike_bits)
    common = {"name": record.name, "kind": record.kind,
              "t_op": record.steps if t_op is None else t_op,
              "b_in": record.b_in, "out_steps": out_steps, "out_bits": out_bits}
    if record.kind == "conv":
        weight = module.weight  # [C_out, C_in / groups, k_h, k_w]
        groups = int(getattr(module, "groups", 1))
        m = weight.shape[0] // groups
        k = math.prod(weight.shape[1:])
        n = macs // (groups * m * k)
        in_elems = math.prod(record.shapes[0][1:])  # [T*B, C, H, W] -> C * H * W
        b_w = _weight_bits(module)
        return GemmShape(m=m, k=k, n=n, groups=groups, b_w=b_w, in_elems=in_elems, **common)
    if record.kind == "linear":
        weight = getattr(module, "weight", None)
        if weight is not None and weight.dim() == 2:
            m, k = int(weight.shape[0]), int(weight.shape[1])
        else:  # a functional matmul against a parameter
            k, m = int(record.shapes[1][-2]), int(record.shapes[1][-1])
        n = max(1, macs // (m * k))
        b_w = _weight_bits(module)
        return GemmShape(m=m, k=k, n=n, b_w=b_w, in_elems=k * n, **common)
    # A product of two activations: the right operand [.., K, M] is stationary.
    left, right = record.shapes
    n, k, m = int(left[-2]), int(right[-2]), int(right[-1])
    groups = max(1, macs // (n * k * m))
    b_w = record.b_in_b or FLOAT_WEIGHT_BITS
    return GemmShape(m=m, k=k, n=n, groups=groups, b_w=b_w, in_elems=groups * n * k, **common)


def gemms_from_model(
    model: nn.Module,
    example_input: Tensor,
    *,
    input_bits: int | None = 8,
    time_major: bool | None = None,
    progress: Progress | None = None,
) -> list[GemmShape]:
    """Every multiply-accumulate layer of one forward pass of ``model`` as a ``GemmShape``.

    ``T_op`` and ``b_in`` come from the tracker (SPEC §5: a stem computed once has
    ``T_op = 1``, the raw image ``input_bits``). Outputs are charged ``T`` steps of the model's
    ``b_s`` bits, except the last layer's, which writes 32-bit logits once. ``progress``: a
    line every few seconds of a long trace (none without it).
    """
    time_major = example_input.dim() == 5 if time_major is None else time_major
    steps_in, batch = example_shape(example_input, time_major, "hw")
    bits = getattr(model, "bits", None)
    steps = bits.t if isinstance(bits, Bits) else steps_in
    spike_bits = bits.s if isinstance(bits, Bits) else 16

    def trace(t_op: Callable[[int], int] | None = None) -> list[GemmShape]:
        records = run_tracked(model, example_input, steps_in, input_bits, measure=False,
                              time_major=time_major, progress=progress)
        if not records:
            raise ValueError(f"{type(model).__name__} ran no conv, linear or matmul op")
        last = len(records) - 1
        return [_gemm(r, batch, steps, spike_bits, i == last,
                      None if t_op is None else t_op(r.steps)) for i, r in enumerate(records)]

    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            gemms = None if time_major else _short_trace(model, steps, trace)
            if gemms is None:
                ModelMemoryCheck(model, example_input, time_major=time_major)("hw", steps, batch)
                gemms = trace()
    finally:
        for module, mode in was:
            module.training = mode
    return gemms


#: Steps of the two short traces (``_short_trace``); a model at ``T`` <= their sum is
#: traced at its own ``T``.
_SHORT_STEPS = (2, 3)


def _short_trace(model: nn.Module, steps: int, trace) -> list[GemmShape] | None:
    """The model's layers traced at ``T = 2`` and ``T = 3`` with ``T_op`` read as ``steps``
    (module docstring), or ``None`` when that is not exact: no encoder that takes ``T``, a
    ``T_op`` other than 1 or the traced ``T``, or layers that differ between the traces."""
    if steps <= sum(_SHORT_STEPS):  # no shorter than one trace at T
        return None
    found = []
    for short in _SHORT_STEPS:
        seen: set[int] = set()

        def t_op(record_steps: int, short: int = short, seen: set[int] = seen) -> int:
            seen.add(record_steps)
            return steps if record_steps == short else record_steps

        with at_time_steps(model, short) as settable:
            if not settable:
                return None
            gemms = trace(t_op)
        if not seen <= {1, short}:
            return None
        found.append(gemms)
    return found[0] if all(g == found[0] for g in found) else None


@dataclass
class HardwareReport:
    """Per-layer costs and totals of one model on one accelerator, per sample."""

    layers: list[LayerCost]
    accel: Accelerator
    bits: Bits | None = None
    model: str | None = None
    totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cycles = sum(r.cycles for r in self.layers)
        useful = sum(r.gemm.binary_macs for r in self.layers)
        latency = cycles / self.accel.clock_hz
        self.totals.update(
            cycles=float(cycles),
            compute_cycles=float(sum(r.compute_cycles for r in self.layers)),
            dma_cycles=float(sum(r.dma_cycles for r in self.layers)),
            latency_s=latency,
            fps=1.0 / latency if latency > 0 else math.inf,
            utilization=useful / (self.accel.pes * cycles) if cycles else 0.0,
            bytes_moved=float(sum(r.bytes_moved for r in self.layers)),
            weight_bytes=float(sum(r.weight_bytes for r in self.layers)),
            binary_macs=float(useful),
            bit_ops=float(sum(r.gemm.bit_ops for r in self.layers)),
            energy_compute_pj=float(sum(r.energy_compute_pj for r in self.layers)),
            energy_dram_pj=float(sum(r.energy_dram_pj for r in self.layers)),
        )
        self.totals["energy_pj"] = self.totals["energy_compute_pj"] + self.totals["energy_dram_pj"]

    @property
    def cycles(self) -> int:
        return int(self.totals["cycles"])

    @property
    def fps(self) -> float:
        return self.totals["fps"]

    @property
    def latency_s(self) -> float:
        return self.totals["latency_s"]

    def bound_counts(self) -> dict[str, int]:
        """How many layers are compute-, DMA- or post-processing-bound."""
        out = {"compute": 0, "dma": 0, "post": 0}
        for r in self.layers:
            out[r.bound] += 1
        return out

    def resources(self) -> dict[str, object]:
        """Device use at the widest weight of the model (see ``Accelerator.resources``)."""
        widest = max((r.gemm.b_w for r in self.layers), default=8)
        return self.accel.resources(min(widest, FLOAT_WEIGHT_BITS))

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "bits": str(self.bits) if self.bits else None,
            "budget": self.bits.budget if self.bits else None,
            "accelerator": self.accel.to_dict(),
            "totals": dict(self.totals),
            "bounds": self.bound_counts(),
            "resources": self.resources(),
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self, max_rows: int | None = None) -> str:
        """Per-layer table (GEMM, slices, tiles, cycles, bound, utilisation) and totals."""
        head = (
            f"{'layer':<28} {'GEMM MxKxN':>16} {'S':>3} {'tiles':>6} {'compute':>10} "
            f"{'DMA':>9} {'post':>8} {'cycles':>10} {'bound':>7} {'util':>6}"
        )
        t = self.totals
        lines = layer_table(
            head,
            self.layers,
            lambda name, r: (
                f"{name:<28} {r.gemm.label():>16} {r.gemm.slices:3d} {r.tiles:6d} "
                f"{r.compute_cycles:10d} {r.dma_cycles:9d} {r.post_cycles:8d} {r.cycles:10d} "
                f"{r.bound + ('*' if r.weight_load_limited else ''):>7} {r.utilization:6.1%}"
            ),
            f"{'total':<28} {'':>16} {'':>3} {sum(r.tiles for r in self.layers):6d} "
            f"{int(t['compute_cycles']):10d} {int(t['dma_cycles']):9d} {'':>8} "
            f"{self.cycles:10d} {'':>7} {t['utilization']:6.1%}",
            name_width=28,
            max_rows=max_rows,
        )
        alloc = f" at {self.bits} (T*b_s = {self.bits.t * self.bits.s})" if self.bits else ""
        lines.append(
            f"{self.model or 'model'}{alloc}: {self.cycles:,} cycles, latency "
            f"{t['latency_s'] * 1e3:.3f} ms, {t['fps']:.1f} fps, "
            f"{t['bytes_moved'] / 2**20:.2f} MiB moved, energy {t['energy_pj'] / 1e6:.2f} uJ "
            f"(compute {t['energy_compute_pj'] / 1e6:.2f}, DRAM {t['energy_dram_pj'] / 1e6:.2f})"
        )
        res = self.resources()
        used, fits = res["used"], res["fits"]
        lines.append(
            f"{self.accel.describe()}; at b_w={res['bits_w']}: {used['dsps']} DSP, "
            f"{used['luts']:,.0f} LUT, {used['ffs']:,.0f} FF of {self.accel.device.name} "
            f"({'fits' if res['fits_all'] else 'does NOT fit: ' + str(fits)})"
        )
        bounds = self.bound_counts()
        lines.append(
            f"layers bound by compute {bounds['compute']}, DMA {bounds['dma']}, "
            f"post-processing {bounds['post']}"
            + ("; * the array waits for weight tiles to load" if any(
                r.weight_load_limited for r in self.layers) else "")
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def estimate(
    model: nn.Module,
    example_input: Tensor | None = None,
    *,
    accel: Accelerator = DEFAULT_ACCELERATOR,
    input_bits: int | None = 8,
    time_major: bool | None = None,
    name: str | None = None,
    progress: Progress | bool | None = None,
) -> HardwareReport:
    """Cycles, latency, fps, bytes and energy of ``model`` on ``accel`` (one sample).

    ``example_input`` defaults to one random static image of ``model.input_size`` (a zoo
    model); the cost does not depend on the values, only on shapes and widths. ``progress``
    (a ``qsnn._progress.Progress`` or ``True``) reports the trace on stderr; default: quiet.
    """
    if example_input is None:
        size = getattr(model, "input_size", None)
        if size is None:
            raise ValueError(
                f"{type(model).__name__} has no input_size: pass example_input [1, C, H, W]"
            )
        example_input = torch.rand(1, *size, generator=torch.Generator().manual_seed(0))
    bits = getattr(model, "bits", None)
    report = resolve(progress, "hw")
    report.stage(f"tracing the layers of {name or type(model).__name__}"
                 + (f" at {bits}" if isinstance(bits, Bits) else ""))  # fmt: skip
    gemms = gemms_from_model(model, example_input, input_bits=input_bits, time_major=time_major,
                             progress=report)  # fmt: skip
    return HardwareReport(
        [layer_cost(g, accel) for g in gemms],
        accel,
        bits if isinstance(bits, Bits) else None,
        name or type(model).__name__,
    )


def estimate_model(
    name: str,
    bits: Bits | str,
    *,
    accel: Accelerator = DEFAULT_ACCELERATOR,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_channels: int | None = None,
    progress: Progress | bool | None = None,
    **model_kwargs,
) -> HardwareReport:
    """``estimate`` of the registered model ``name`` at ``bits`` (what ``qsnn hw`` and a
    sweep's fps column use); ``progress`` as in :func:`estimate`."""
    from ..models import create_model

    model = create_model(name, bits=bits, num_classes=num_classes, img_size=img_size,
                         in_channels=in_channels, **model_kwargs)
    return estimate(model, accel=accel, name=name, progress=progress)

"""``profile(model, example_input)``: MACs, params, S-ACE, SOPs, NS-ACE, firing rates, energy.

All figures are per sample (per image or per event recording). For each multiply-accumulate op
of the real forward pass (conv, linear, and products of two activations such as attention's
``Q K^T`` and ``A V``), with ``MACs`` per time step, ``T_op`` the steps it really runs, ``b_w``
its weight bits and ``b_in`` the width of its input levels (SPEC §5):

    S-ACE       = MACs * b_w * b_in * T_op                  (paper Eq. 8)
    SOPs        = fr * MACs * b_in * T_op                   (bit-level synaptic operations)
    NS-ACE      = fr * MACs * b_w * b_in * T_op = b_w * SOPs (paper Eq. 9)
    events      = fr * MACs * T_op                          (the classic SOP count)
    NS-ACE bits = density * MACs * b_w * b_in * T_op        (bit-serial variant)

``fr`` is the fraction of non-zero values in the op's input and ``density`` the fraction of
1-bits over its ``b_in`` bit-planes. A product of two activations has no weight: its second
(stationary) operand's width takes the place of ``b_w`` and its first (streamed) operand gives
``fr``. Float weights and dense (non-level) inputs count as 16 bits.

``counting="paper"`` charges every conv and linear layer ``MACs * b_w * b_s * T`` at the model's
allocation (stem included, attention products excluded), the pure "MACs x bit budget" scaling
of the paper's tables; the default ``counting="exact"`` counts what the model computes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from .._memory import ModelMemoryCheck, time_step_modules
from .._progress import Progress, resolve
from .._table import layer_table
from ..allocation import FLOAT_WEIGHT_BITS, Bits
from ..bitwidth import declared_weight_bits
from .energy import DEFAULT_ENERGY, EnergyModel
from .tracker import OpRecord, example_shape, run_tracked

__all__ = ["LayerProfile", "Profile", "group_time_loop", "profile"]

Counting = Literal["exact", "paper"]


@dataclass
class LayerProfile:
    """Per-op figures, per sample (see module docstring for the definitions)."""

    name: str
    kind: str
    macs: float
    t_op: int
    b_w: int
    b_in: int
    budget: int
    fr: float
    density: float
    s_ace: float
    sops: float
    ns_ace: float
    ns_ace_bits: float
    events: float
    energy_conventional_pj: float
    energy_bits_pj: float
    params: int
    params_16: float
    spiking_input: bool
    counted: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_TOTALS = (
    "macs",
    "s_ace",
    "sops",
    "ns_ace",
    "ns_ace_bits",
    "events",
    "energy_conventional_pj",
    "energy_bits_pj",
)


@dataclass
class Profile:
    """The cost of one model at one allocation, per sample. ``layers`` holds one row per op."""

    layers: list[LayerProfile]
    params: int
    params_16: float
    bits: Bits | None
    counting: str
    input_bits: int | None
    firing_rates_from: str
    energy_model: EnergyModel
    totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in _TOTALS:
            self.totals[key] = float(sum(getattr(r, key) for r in self.layers if r.counted))
        self.totals["energy_bits_peak_pj"] = self.energy_model.e_bit_pj * self.totals["s_ace"]

    @property
    def size_bytes(self) -> float:
        """Model size: ``params_16`` 16-bit words."""
        return 2.0 * self.params_16

    def __getattr__(self, name: str) -> float:
        totals = self.__dict__.get("totals", {})
        if name in totals:
            return totals[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary: settings, totals and one entry per layer."""
        return {
            "bits": str(self.bits) if self.bits else None,
            "budget": self.bits.budget if self.bits else None,
            "counting": self.counting,
            "input_bits": self.input_bits,
            "firing_rates_from": self.firing_rates_from,
            "energy_model": self.energy_model.to_dict(),
            "params": self.params,
            "params_16": self.params_16,
            "size_bytes": self.size_bytes,
            "totals": dict(self.totals),
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self, max_rows: int | None = None) -> str:
        """A per-layer table with totals: MACs per step in M; S-ACE, SOPs and NS-ACE in G (or
        M, K for small models: the unit is in the header)."""
        scale, unit = next(
            ((v, u) for v, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if self.totals["s_ace"] >= v),
            (1.0, ""),
        )
        head = (
            f"{'layer':<34} {'kind':<6} {'MACs(M)':>9} {'T':>3} {'b_w':>3} {'b_in':>4} "
            f"{'BB':>4} {'fr':>6} {'dens':>6} {f'S-ACE({unit})':>9} {f'SOPs({unit})':>9} "
            f"{f'NS-ACE({unit})':>9} {'params(K)':>9}"
        )
        t = self.totals
        lines = layer_table(
            head,
            self.layers,
            lambda name, r: (
                f"{name:<34} {r.kind + ('' if r.counted else '*'):<6} {r.macs / 1e6:9.3f} "
                f"{r.t_op:3d} {r.b_w:3d} {r.b_in:4d} {r.budget:4d} {r.fr:6.3f} {r.density:6.3f} "
                f"{r.s_ace / scale:9.4f} {r.sops / scale:9.4f} {r.ns_ace / scale:9.4f} "
                f"{r.params / 1e3:9.1f}"
            ),
            f"{'total':<34} {'':<6} {t['macs'] / 1e6:9.3f} {'':>3} {'':>3} {'':>4} {'':>4} "
            f"{'':>6} {'':>6} {t['s_ace'] / scale:9.4f} {t['sops'] / scale:9.4f} "
            f"{t['ns_ace'] / scale:9.4f} {self.params / 1e3:9.1f}",
            name_width=34,
            max_rows=max_rows,
        )
        alloc = f"{self.bits} (budget {self.bits.budget})" if self.bits else "float model"
        lines.append(
            f"allocation {alloc}; counting={self.counting}; params {self.params / 1e6:.4f} M, "
            f"params_16 {self.params_16 / 1e6:.4f} M ({self.size_bytes / 2**20:.2f} MiB); "
            f"firing rates from {self.firing_rates_from}"
        )
        lines.append(
            f"energy per sample: conventional (E_MAC {self.energy_model.e_mac_pj} pJ, E_AC "
            f"{self.energy_model.e_ac_pj} pJ) {t['energy_conventional_pj'] / 1e6:.4f} uJ; "
            f"bit budget (e_bit {self.energy_model.e_bit_pj:.4g} pJ) "
            f"{t['energy_bits_pj'] / 1e6:.4f} uJ (peak {t['energy_bits_peak_pj'] / 1e6:.4f} uJ)"
        )
        if any(not r.counted for r in self.layers):
            lines.append("* not counted under counting='paper' (products of two activations)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _batches(data: Iterable, max_batches: int) -> Iterable[Tensor]:
    for i, item in enumerate(data):
        if i >= max_batches:
            break
        yield item[0] if isinstance(item, (tuple, list)) else item


def _param_bits(model: nn.Module, default_w: int) -> dict[int, int]:
    """Bits of each parameter (by id): its layer's ``b_w``; layers without weight bits (batch
    norm, ...) count at the model's ``b_w``, as they fold into the integer program's scales."""
    out = {}
    for module in model.modules():
        bits = declared_weight_bits(module)
        for p in module.parameters(recurse=False):
            out[id(p)] = default_w if bits is None else bits
    return out


def profile(
    model: nn.Module,
    example_input: Tensor,
    *,
    bits: Bits | str | None = None,
    data: Iterable | None = None,
    max_batches: int = 8,
    input_bits: int | None = 8,
    counting: Counting = "exact",
    energy: EnergyModel = DEFAULT_ENERGY,
    time_major: bool | None = None,
    time_steps: int | None = None,
    input_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    reset: Callable[[nn.Module], object] | None = None,
    progress: Progress | bool | None = None,
) -> Profile:
    """Count the cost of ``model`` on ``example_input`` (SPEC §5). All figures per sample.

    Args:
        model: any ``nn.Module``: a qsnn model, a plain PyTorch ANN (16-bit weights and
            activations) or a spiking model from another library (spikes are recognised from
            their values: non-negative multiples of one scale).
        example_input: one batch, ``[B, ...]`` static or ``[T, B, ...]`` time-major.
        bits: the model's allocation, used by ``counting="paper"`` and for parameters with no
            width of their own; defaults to ``model.bits`` when present.
        data: iterable of batches (or ``(x, y)`` pairs) to measure firing rates on (at most
            ``max_batches``); else they are measured on ``example_input``.
        input_bits: width of the raw input (8 for images); ``None`` infers it from the values
            (event counts: the bits of the largest count; non-integer floats: 16).
        counting: ``"exact"`` (what the model computes) or ``"paper"`` (see module docstring).
        energy: per-operation energies for both estimates.
        time_major: whether ``example_input`` is ``[T, B, ...]``; default: when it is 5-D.
        time_steps: ``T`` of a model that takes its steps folded into the batch
            (``[T * B, ...]``, time-step-major): the input then holds ``B`` samples and every
            op runs ``T_op = T`` steps (without it such a model's S-ACE per sample comes out
            ``T`` times too small). Not with ``time_major``.
        input_normalization: ``(mean, std)`` per channel when the raw input is
            ``(k / (2**input_bits - 1) - mean) / std`` (how qsnn's image batches come): the
            first layer's bit density is then counted on the bit-planes of the pixels ``k``.
            Without it the pixels are read off ``k``-valued or ``k / 255``-valued inputs; an
            input whose pixels cannot be read falls back to the firing rate (``density``).
        reset: called with ``model`` before every batch (``example_input`` and each of
            ``data``), for a stateful model that keeps membrane potentials between calls;
            default: SpikingJelly's ``functional.reset_net`` when ``model`` contains its
            neurons (``spikingjelly`` modules with a ``reset`` method), else nothing.
        progress: a ``qsnn._progress.Progress`` (or ``True``) to report the traces and the
            batches of ``data`` on stderr as they go; default: quiet.

    Raises ``ValueError`` for an input with no sample (batch size 0), one the model cannot
    take (smaller than its downsampling allows, another size than its head was built for: the
    message gives the model's ``input_size``), and ``qsnn._memory.MemoryLimitError`` (a
    ``ValueError``) for a call whose activations (estimated from one sample at ``T = 1`` and
    ``2``, scaled by ``T`` and the batch) cannot fit in the memory available.
    """
    if counting not in ("exact", "paper"):
        raise ValueError(f"counting must be 'exact' or 'paper'; got {counting!r}")
    if not isinstance(example_input, Tensor):
        raise ValueError(f"example_input must be a tensor; got {type(example_input).__name__}")
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
        raise ValueError(f"max_batches must be an integer >= 1; got {max_batches!r}")
    if input_bits is not None and (not isinstance(input_bits, int) or not 1 <= input_bits <= 32):
        raise ValueError(f"input_bits must be an integer in 1..32 or None; got {input_bits!r}")
    if bits is None:
        bits = getattr(model, "bits", None)
    bits = Bits.parse(bits) if bits is not None else None
    if counting == "paper" and bits is None:
        raise ValueError("counting='paper' needs the model's allocation: pass bits='b_w/b_s/T'")
    time_major = example_input.dim() == 5 if time_major is None else time_major
    if time_steps is not None:
        if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
            raise ValueError(f"time_steps must be an integer >= 1; got {time_steps!r}")
        if time_major:
            raise ValueError("time_steps is for [T * B, ...] inputs; a time-major input "
                             "[T, B, ...] gives T itself")  # fmt: skip
    steps_in, batch = _input_shape(example_input, time_major, time_steps)
    fits = _memory_check(model, example_input, time_major)
    reset = _default_reset(model) if reset is None else reset
    report = resolve(progress, "profile")

    def trace(x: Tensor, steps: int, measure: bool = True) -> list[OpRecord]:
        if reset is not None:
            reset(model)
        records = run_tracked(
            model,
            x,
            steps,
            input_bits,
            measure=measure,
            time_major=time_major,
            input_normalization=input_normalization,
            progress=report,
        )
        return group_time_loop(records)

    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            fits(example_input)
            report.stage(f"tracing the ops of {type(model).__name__} on the example input")
            records = trace(example_input, steps_in, measure=data is None)
            source = f"example input ({batch} samples)"
            if data is not None:
                device = next((p.device for p in model.parameters()), example_input.device)
                samples = 0
                size = len(data) if hasattr(data, "__len__") else None
                total = max_batches if size is None else min(max_batches, size)
                report.stage(f"firing rates on {total} data batches")
                with report.counter(total, "batches", "measured") as count:
                    for x in _batches(data, max_batches):
                        x = x.to(device)
                        t_in, n = _input_shape(x, time_major, time_steps,
                                               "profile (a data batch)")  # fmt: skip
                        fits(x)
                        _merge(records, trace(x, t_in))
                        samples += n
                        count.advance()
                if samples == 0:
                    raise ValueError("data yielded no batches to measure firing rates on")
                source = f"data ({samples} samples)"
    finally:
        for module, mode in was_training:
            module.training = mode

    default_w = bits.w_eff if bits is not None else FLOAT_WEIGHT_BITS
    pbits = _param_bits(model, default_w)
    seen: set[int] = set()
    rows = [_row(r, batch, bits, counting, energy, pbits, seen) for r in records]
    params = sum(p.numel() for p in model.parameters())
    params_16 = sum(p.numel() * pbits.get(id(p), default_w) / 16 for p in model.parameters())
    return Profile(rows, params, params_16, bits, counting, input_bits, source, energy)


def group_time_loop(records: list[OpRecord]) -> list[OpRecord]:
    """One record per weight layer that a model's own time loop calls once per step.

    A model that loops over ``T`` inside ``forward`` (snnTorch style) calls each layer ``T``
    times; the tracker sees ``fc1``, ``fc1#1``, ... of ``MACs / T`` each. Calls of one weight
    module on inputs of one shape are one layer that runs ``T_op`` = (number of calls x the
    steps of each call) steps; their counts add up. Other records are left as they are."""
    groups: dict[tuple, OpRecord] = {}
    out: list[OpRecord] = []
    for r in records:
        if r.weight_module is None or r.kind == "matmul":
            out.append(r)
            continue
        key = (id(r.weight_module), r.kind, r.shapes, r.b_in, r.raw_input)
        first = groups.get(key)
        if first is None:
            groups[key] = r
            out.append(r)
            continue
        first.macs_total += r.macs_total
        first.steps += r.steps
        first.nonzero += r.nonzero
        first.numel += r.numel
        first.ones += r.ones
        first.bit_slots += r.bit_slots
        first.density_known = first.density_known and r.density_known
    return out


def _input_shape(
    x: Tensor, time_major: bool, time_steps: int | None, who: str = "profile"
) -> tuple[int, int]:
    """``(steps, samples)`` of an input (``time_steps``: ``[T * B, ...]`` folded)."""
    steps, batch = example_shape(x, time_major, who)
    if time_steps is None:
        return steps, batch
    if batch % time_steps:
        raise ValueError(
            f"{who}: an input folded over time_steps={time_steps} needs a first dimension "
            f"divisible by it ([T * B, ...]); got {tuple(x.shape)}"
        )
    return time_steps, batch // time_steps


def _default_reset(model: nn.Module) -> Callable[[nn.Module], object] | None:
    """SpikingJelly's ``reset_net`` for a model with its stateful modules, else ``None``."""
    uses = any(type(m).__module__.startswith("spikingjelly") and hasattr(m, "reset")
               for m in model.modules())  # fmt: skip
    if not uses:
        return None
    from spikingjelly.activation_based import functional  # the model's own library

    return functional.reset_net


def _memory_check(model: nn.Module, example: Tensor, time_major: bool):
    """A function that raises ``MemoryLimitError`` for a batch whose forward pass cannot fit
    (``qsnn._memory``: estimated once from one sample at T = 1 and 2), checked before it
    runs."""
    encoders = [m.output_time_steps for m in time_step_modules(model)]
    model_steps = max(encoders, default=1)
    check = ModelMemoryCheck(model, example, time_major=time_major)

    def fits(x: Tensor) -> None:
        steps, batch = (x.shape[0], x.shape[1]) if time_major else (model_steps, x.shape[0])
        check("profile", steps, batch)

    return fits


def _merge(into: list[OpRecord], new: list[OpRecord]) -> None:
    if [r.name for r in into] != [r.name for r in new]:
        raise ValueError(
            "the model ran different ops on a data batch than on example_input; "
            "profile needs the same graph for every batch"
        )
    for a, b in zip(into, new, strict=True):
        a.nonzero += b.nonzero
        a.numel += b.numel
        a.ones += b.ones
        a.bit_slots += b.bit_slots
        a.density_known = a.density_known and b.density_known


def _row(
    r: OpRecord,
    batch: int,
    bits: Bits | None,
    counting: str,
    energy: EnergyModel,
    pbits: dict[int, int],
    seen: set[int],
) -> LayerProfile:
    macs = r.macs_total / (batch * r.steps)
    if abs(macs - round(macs)) < 1e-6 * max(1.0, macs):
        macs = float(round(macs))
    fr = r.nonzero / r.numel if r.numel else 0.0
    if r.kind == "matmul":
        b_w, b_in, t_op = r.b_in_b or FLOAT_WEIGHT_BITS, r.b_in, r.steps
    else:
        weight_bits = declared_weight_bits(r.weight_module)  # foreign layers: float weights
        b_w = FLOAT_WEIGHT_BITS if weight_bits is None else weight_bits
        b_in, t_op = r.b_in, r.steps
    counted = True
    if counting == "paper":
        assert bits is not None
        if r.kind == "matmul":
            counted = False
        b_w, b_in, t_op = bits.w_eff, bits.s, bits.t
    density = r.ones / r.bit_slots if (r.density_known and r.bit_slots) else fr
    s_ace = macs * b_w * b_in * t_op
    sops = fr * macs * b_in * t_op
    events = fr * macs * t_op
    ns_ace = b_w * sops
    params = params_16 = 0
    if r.weight_module is not None and id(r.weight_module) not in seen:
        seen.add(id(r.weight_module))
        own = list(r.weight_module.parameters(recurse=False))
        params = sum(p.numel() for p in own)
        params_16 = sum(p.numel() * pbits.get(id(p), FLOAT_WEIGHT_BITS) / 16 for p in own)
    conventional = energy.e_ac_pj * events if r.spiking_input else energy.e_mac_pj * macs * t_op
    row = LayerProfile(
        name=r.name,
        kind=r.kind,
        macs=macs,
        t_op=t_op,
        b_w=b_w,
        b_in=b_in,
        budget=b_w * b_in * t_op,
        fr=fr,
        density=density,
        s_ace=s_ace,
        sops=sops,
        ns_ace=ns_ace,
        ns_ace_bits=density * macs * b_w * b_in * t_op,
        events=events,
        energy_conventional_pj=conventional,
        energy_bits_pj=energy.e_bit_pj * ns_ace,
        params=params,
        params_16=params_16,
        spiking_input=r.spiking_input,
        counted=counted,
    )
    if not counted:
        for key in _TOTALS:
            if key != "macs":
                setattr(row, key, 0.0)
    assert math.isfinite(row.s_ace)
    return row

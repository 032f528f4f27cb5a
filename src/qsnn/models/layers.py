"""Building blocks shared by the model zoo, made only of qsnn's foundation modules.

- ``LayerFactory``: builds every quantized conv/linear at the model's ``b_w`` and every neuron at
  its ``b_s`` (SPEC §3: first and last layer included), with the model's neuron settings.
- ``ConvBN`` (stateless, ``[N, C, H, W]``), ``ConvBNNeuron`` and ``LinearBNNeuron`` (time-major:
  the stateless part folded over ``T``, then a ``SpikeNeuron``).
- ``SEWAdd`` (alias ``RestrictedAdd``): the paper's restricted spike-element-wise ADD,
  ``out = clamp(round(a/theta) + round(b/theta), 0, L) * theta`` (SPEC §6).
- ``LevelQuantizer``: a stateless ``b_s``-bit quantizer (paper Eq. 2, applied to each step on
  its own) used to restrict Spikformer's attention matrices to ``b_s`` bits.
- ``SpikingStem``: the first conv + batch norm, run once on a static image through
  ``StaticEncoder`` (``T_op = 1``) or folded over time for ``[T, B, C, H, W]`` input, then a neuron.

Every module whose output is integer levels times a scale declares ``output_bits`` (read by
``qsnn.profile``): ``SpikeNeuron`` (and so ``LevelQuantizer``) and ``SEWAdd``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .. import _neuron_kernels as _kernels
from ..allocation import Bits, BitsPolicy, check_spike_bits
from ..level_scale import LevelScale
from ..neurons import SpikeLevels, SpikeNeuron, _SpikePatternFn
from ..precision import low_precision_autocast, spike_dtype
from ..quant import QuantConv2d, QuantLinear
from ..surrogate import Surrogate
from ..temporal import FoldTime, StaticEncoder, autocast_input, fold_time

__all__ = [
    "MODEL_NEURON_DEFAULTS",
    "NEURON_KWARGS",
    "QUANT_KWARGS",
    "ConvBN",
    "ConvBNNeuron",
    "LayerFactory",
    "LevelQuantizer",
    "LinearBNNeuron",
    "RestrictedAdd",
    "SEWAdd",
    "SpikingStem",
    "level_matmul",
    "to_2tuple",
]

#: Neuron settings a model accepts through ``neuron={...}``: every keyword of ``SpikeNeuron``
#: (``tau``, ``theta``, ``level_scale``, ``learn_theta``, ``reset``, ``surrogate``, ...) but the
#: shared ``level`` object; ``b_s`` comes from ``bits``.
NEURON_KWARGS = frozenset(
    name
    for name, p in inspect.signature(SpikeNeuron.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "level"
)
#: The neuron settings every zoo model starts from (``neuron={...}`` overrides them): the level
#: scale chosen by measurement across allocations (BENCHMARKS.md, "Which level step by
#: default"): the scaled step ``theta * 2**(1 - b_s)``, so the ``2**b_s`` levels span ``2 theta``
#: at every ``b_s``. Version 2 of ``qsnn.train.config.NEURON_DEFAULTS``. A plain
#: ``SpikeNeuron`` keeps its own defaults (``fixed``, ``theta = 1``: Eq. 7 with the step given).
MODEL_NEURON_DEFAULTS: dict[str, Any] = {"level_scale": "scaled"}
#: The settings that make a neuron's ``LevelScale`` (the rest go to ``SpikeNeuron`` itself).
_LEVEL_KWARGS = {"theta": "theta", "level_scale": "rule", "learn_theta": "learn",
                 "pow2_theta": "pow2"}
#: Weight-quantizer settings a model accepts through ``quant={...}`` (``b_w`` comes from ``bits``).
QUANT_KWARGS = frozenset({"per_channel", "learn_scale"})


def to_2tuple(value: int | tuple[int, int] | list[int], name: str = "img_size") -> tuple[int, int]:
    """``224 -> (224, 224)``; a pair passes through. Raises ``ValueError`` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise ValueError(f"{name} must be an int or a pair (H, W); got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must hold positive integers; got {value!r}")
    return pair


def level_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of two level tensors whose operands stay exact under autocast: when either
    holds levels that the autocast precision cannot (a float32 tensor, ``qsnn.precision``),
    the product runs in float32 instead of rounding them. (Like any layer under autocast, a
    bf16 product rounds its output: counts above 256 before a clamping quantizer, sums of
    products before a neuron.)"""
    if a.dtype == torch.float32 or b.dtype == torch.float32:
        device = a.device.type
        if low_precision_autocast(device) is not None:
            with torch.autocast(device, enabled=False):
                return a.float() @ b.float()
    return a @ b


def _check_kwargs(given: Mapping[str, Any] | None, allowed: frozenset[str], what: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(
            f"{what} settings {unknown} are not supported; expected some of {sorted(allowed)}"
        )
    return given


@dataclass(frozen=True)
class LayerFactory:
    """Makes a model's layers at one allocation, so every model builds them the same way.

    Args:
        bits: the model's default allocation; conv/linear layers get ``b_w = bits.w`` and neurons
            ``b_s = bits.s`` (``apply_bits`` later applies per-layer overrides).
        neuron: ``SpikeNeuron`` settings for every neuron (``tau``, ``theta``, ``level_scale``,
            ``learn_theta``, ``pow2_theta``, ``reset``, ``v_reset``, ``surrogate``, ``kernel``);
            defaults are the neuron's.
        quant: weight-quantizer settings for every conv/linear (``per_channel``, ``learn_scale``).
    """

    bits: Bits
    neuron: Mapping[str, Any] = field(default_factory=dict)
    quant: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(
        cls,
        bits: Bits | str | BitsPolicy,
        neuron: Mapping[str, Any] | None = None,
        quant: Mapping[str, Any] | None = None,
    ) -> LayerFactory:
        """The factory of a model built at ``bits``: a policy's default allocation (its
        per-layer overrides are applied afterwards by ``SpikingModel.set_bits``)."""
        default = bits.default if isinstance(bits, BitsPolicy) else Bits.parse(bits)
        return cls(default, neuron or {}, quant or {})

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", Bits.parse(self.bits))
        neuron = _check_kwargs(self.neuron, NEURON_KWARGS, "neuron")
        object.__setattr__(self, "neuron", {**MODEL_NEURON_DEFAULTS, **neuron})
        object.__setattr__(self, "quant", _check_kwargs(self.quant, QUANT_KWARGS, "quant"))

    @property
    def theta(self) -> float:
        """The ``theta`` setting of the model's neurons (the step itself under ``fixed``)."""
        return float(self.neuron.get("theta", 1.0))

    def level_scale(self, *, theta_scale: float = 1.0) -> LevelScale:
        """A new ``LevelScale`` with the model's rule; ``theta_scale`` multiplies ``theta``."""
        kw = {_LEVEL_KWARGS[k]: v for k, v in self.neuron.items() if k in _LEVEL_KWARGS}
        kw["theta"] = self.theta * theta_scale
        return LevelScale(**kw)

    def conv(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        bias: bool = False,
    ) -> QuantConv2d:
        """``b_w``-bit ``Conv2d`` (``padding`` defaults to ``kernel_size // 2``)."""
        pad = kernel_size // 2 if padding is None else padding
        return QuantConv2d(
            cin,
            cout,
            kernel_size,
            stride=stride,
            padding=pad,
            bias=bias,
            bits_w=self.bits.w,
            **self.quant,
        )

    def linear(self, fin: int, fout: int, *, bias: bool = True) -> QuantLinear:
        """``b_w``-bit ``Linear``."""
        return QuantLinear(fin, fout, bias, bits_w=self.bits.w, **self.quant)

    def neuron_module(
        self, *, theta_scale: float = 1.0, level: LevelScale | None = None
    ) -> SpikeNeuron:
        """``b_s``-bit ``SpikeNeuron`` with its own level scale (``theta_scale`` times
        ``theta``) or the shared ``level``."""
        kw = {k: v for k, v in self.neuron.items() if k not in _LEVEL_KWARGS}
        return SpikeNeuron(self.bits.s, level=level or self.level_scale(theta_scale=theta_scale),
                           **kw)

    def quantizer(self, *, theta: float) -> LevelQuantizer:
        """Stateless ``b_s``-bit ``LevelQuantizer`` with step ``theta`` (or the step passed to
        each call)."""
        kw = {k: v for k, v in self.neuron.items() if k in ("surrogate", "kernel")}
        return LevelQuantizer(self.bits.s, theta=theta, **kw)

    def sew_add(self, level: LevelScale) -> SEWAdd:
        """Restricted ``b_s``-bit ADD on the grid ``level`` that both its inputs share."""
        return SEWAdd(self.bits.s, level=level)

    def stem(
        self,
        conv_bn: nn.Module,
        pool: nn.Module | None = None,
        *,
        in_channels: int,
        level: LevelScale | None = None,
    ) -> SpikingStem:
        """The model's stem at ``T = bits.t``: ``conv_bn`` computed once, a neuron (on the
        shared grid ``level`` if given), ``pool``."""
        return SpikingStem(
            self.bits.t, conv_bn, self.neuron_module(level=level), pool, in_channels=in_channels
        )

    def conv_bn(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
    ) -> ConvBN:
        return ConvBN(self.conv(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))

    def conv_bn_neuron(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        level: LevelScale | None = None,
    ) -> ConvBNNeuron:
        return ConvBNNeuron(
            self.conv(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
            self.neuron_module(level=level),
        )

    def linear_bn_neuron(
        self,
        fin: int,
        fout: int,
        *,
        bias: bool = True,
        theta_scale: float = 1.0,
    ) -> LinearBNNeuron:
        return LinearBNNeuron(
            self.linear(fin, fout, bias=bias),
            nn.BatchNorm1d(fout),
            self.neuron_module(theta_scale=theta_scale),
        )


class ConvBN(nn.Module):
    """Stateless ``conv -> batch norm`` on ``[N, C, H, W]`` (a stem, or a residual shortcut)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class ConvBNNeuron(nn.Module):
    """``conv -> batch norm`` folded over time, then a neuron.

    ``[T, B, C, H, W] -> [T, B, C', H', W']``.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, sn: SpikeNeuron) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.sn = sn

    def _conv_bn(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.sn(fold_time(self._conv_bn, x))  # [T, B, ...] -> [T*B, ...] -> [T, B, ...]


class LinearBNNeuron(nn.Module):
    """Token-wise ``linear -> batch norm -> neuron``: ``[T, B, N, D] -> [T, B, N, D']``.

    The same layer as Spikformer's ``1x1 conv -> BatchNorm1d`` over ``[T*B, D, N]``: batch-norm
    statistics are taken per channel over every step, sample and token.
    """

    def __init__(self, linear: nn.Linear, bn: nn.BatchNorm1d, sn: SpikeNeuron) -> None:
        super().__init__()
        self.linear = linear
        self.bn = bn
        self.sn = sn

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)  # [T, B, N, D] -> [T, B, N, D']
        y = self.bn(y.flatten(0, -2)).view_as(y)  # [T, B, N, D'] -> [T*B*N, D'] -> [T, B, N, D']
        return self.sn(y)


class _RestrictedAddFn(torch.autograd.Function):
    """``clamp(round(a/theta) + round(b/theta), 0, L) * theta``; gradient 1 inside the clamp.

    Forward is one fused pass for large training calls (``qsnn._neuron_kernels``), backward one
    ``where`` over the saved mask.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, theta: Tensor, levels: int,  # type: ignore[override]
                out_dtype: torch.dtype) -> Tensor:
        training = any(ctx.needs_input_grad)
        out, inside = _kernels.run(
            "restricted_add", "auto", training, a.numel(), a, b, theta, levels, out_dtype
        )
        ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        g = torch.where(inside, grad, 0.0)
        return g, g, None, None, None


class SEWAdd(SpikeLevels, nn.Module):
    """The restricted spike-element-wise ADD of SEW-ResNet (Shen et al., CVPR 2024; SPEC §6).

    Both inputs are spikes on one shared grid ``theta`` (``s = k * theta``); their integer
    levels are added and clamped back to ``b_s`` bits, so the next layer's input really is
    ``b_s``-bit (the unrestricted SEW ADD of Fang et al. 2021 would widen it to ``b_s + 1``):

        out = clamp(round(a / theta) + round(b / theta), 0, L) * theta,    L = 2**b_s - 1

    Gradient: straight-through, ``d out / d a = d out / d b = 1`` where the level sum lies in
    ``[0, L]`` and 0 where the clamp binds. With ``b_s = 1`` this is a logical OR of two spike
    trains. The grid is a ``LevelScale`` shared with the neurons that make both inputs (the
    zoo's SEW-ResNet passes it), so a step set from data or learned stays one grid; a fixed
    ``theta`` builds one of its own. Output dtype as a neuron's (``qsnn.precision``): under
    autocast its dtype where that holds every level, else float32; without autocast the inputs'
    promoted dtype.

    ``b_s`` comes from ``set_layer_bits`` like a neuron's, so ``qsnn.apply_bits`` and per-layer
    overrides reach it; ``output_bits`` tells ``qsnn.profile`` its output width.
    """

    def __init__(
        self, bits_s: int = 1, *, theta: float = 1.0, level: LevelScale | None = None
    ) -> None:
        super().__init__()
        self.bits_s = check_spike_bits(bits_s, "bits_s")
        if level is None:
            if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
                raise ValueError(f"theta (shared threshold) must be a number > 0; got {theta!r}")
            level = LevelScale(float(theta))
        elif not isinstance(level, LevelScale):
            raise ValueError(f"level must be a LevelScale; got {type(level).__name__}")
        self.level = level

    @property
    def theta(self) -> float:
        """The grid's current step as a float."""
        return self.level.value(self.bits_s)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape:
            raise ValueError(
                f"{type(self).__name__} adds two spike tensors of one shape; got {tuple(a.shape)} "
                f"and {tuple(b.shape)}"
            )
        dtype = torch.promote_types(a.dtype, b.dtype)
        step = self.level.step(self.bits_s)
        step = step.detach() if isinstance(step, Tensor) else step  # the grid, not a weight
        theta = torch.as_tensor(step, dtype=_kernels.membrane_dtype(dtype), device=a.device)
        known = self.level.exact_theta(self.bits_s)
        out_dtype = spike_dtype(a, known, self.levels, dtype)
        return _RestrictedAddFn.apply(a, b, theta, self.levels, out_dtype)

    def to_levels(self, out: Tensor) -> Tensor:
        """Integer levels (int32) of an output of this module."""
        with torch.no_grad():
            return torch.round(out.float() / self.theta).to(torch.int32)

    def extra_repr(self) -> str:
        return f"bits_s={self.bits_s}, theta={self.theta:g}"


#: The name SPEC §5 uses for a sum that the model restricts to ``b_s`` bits.
RestrictedAdd = SEWAdd


class LevelQuantizer(SpikeNeuron):
    """A stateless ``b_s``-bit quantizer on ``[T, B, ...]``: each step quantized on its own.

    The neuron of paper Eq. 6-7 at ``T = 1`` (Eq. 2): ``clamp(floor(x / theta), 0, L) * theta``
    with the neuron's surrogate gradient; no membrane is carried between steps (the ``T`` steps
    are folded into the batch). Spikformer uses it to restrict the attention matrix ``Q K^T`` of
    each step to ``b_s`` bits, with the step ``theta_q * theta_k`` of the two level tensors
    passed to each call (``forward(x, theta)``). It is a ``SpikeNeuron``, so ``output_bits``,
    ``set_layer_bits`` and ``to_levels`` behave the same; ``theta`` reads the last step used.
    """

    def __init__(
        self,
        bits_s: int = 1,
        *,
        theta: float = 1.0,
        surrogate: Surrogate | str | None = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__(bits_s, tau=1.0, theta=theta, surrogate=surrogate, kernel=kernel)
        self._last: tuple[float | Tensor, float | None] | None = None

    @property
    def theta(self) -> float:
        """The step of the last call (the fixed ``theta`` before any call with a step)."""
        if self._last is None:
            return super().theta
        step = self._last[0]
        return float(step.detach()) if isinstance(step, Tensor) else float(step)

    def forward(
        self, x: Tensor, theta: float | Tensor | None = None, exact_theta: float | None = None
    ) -> Tensor:
        """``x: [T, B, ...]``; ``theta``: a step for this call (a float or a 0-dim tensor, not
        trained here), ``exact_theta`` its value when known (``qsnn.precision``)."""
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects [T, B, ...] input; got {tuple(x.shape)}"
            )
        if theta is None:
            step, known = self.level.step(self.bits_s), self.level.exact_theta(self.bits_s)
        else:
            step = theta.detach() if isinstance(theta, Tensor) else float(theta)
            known = exact_theta if isinstance(theta, Tensor) else float(theta)
        self._last = (step, known)
        steps, batch = x.shape[:2]
        flat = x.flatten(0, 1).unsqueeze(0)  # [T, B, ...] -> [1, T*B, ...]
        y = _SpikePatternFn.apply(
            flat, step, 1.0, self.levels, True, 0.0, self.surrogate, self.kernel,
            spike_dtype(x, known, self.levels),
        )
        return y.squeeze(0).unflatten(0, (steps, batch))  # [1, T*B, ...] -> [T, B, ...]


class SpikingStem(nn.Module):
    """The first layer: ``conv -> batch norm`` (stateless), a neuron, and an optional pool.

    A static image ``[B, C, H, W]`` goes through ``StaticEncoder(T, conv_bn)``: the conv runs
    once and its output is presented for ``T`` steps (``T_op = 1`` in ``qsnn.profile``).
    Time-major input ``[T, B, C, H, W]`` (event frames) is used as it is, the conv folded over
    time; its ``T`` must equal the allocation's ``T`` (the budget counts ``T`` steps).
    Output: ``[T, B, C', H', W']`` spikes.
    """

    def __init__(
        self,
        time_steps: int,
        conv_bn: nn.Module,
        sn: SpikeNeuron,
        pool: nn.Module | None = None,
        *,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.encoder = StaticEncoder(time_steps, conv_bn)
        self.sn = sn
        self.pool = FoldTime(pool) if pool is not None else None
        self.in_channels = in_channels

    @property
    def time_steps(self) -> int:
        return self.encoder.time_steps

    def forward(self, x: Tensor) -> Tensor:
        steps, chans = self.encoder.time_steps, self.in_channels
        if x.dim() == 4 and x.shape[1] == chans:
            x = self.encoder(x)  # [B, C, H, W] -> [T, B, C', H', W'] (conv run once)
        elif x.dim() == 5 and x.shape[2] == chans:
            if x.shape[0] != steps:
                raise ValueError(
                    f"time-major input has T={x.shape[0]} steps but the allocation has T={steps}; "
                    f"expected [{steps}, B, {chans}, H, W], got {tuple(x.shape)}"
                )
            # [T, B, C, H, W] -> [T, B, C', H', W']
            x = fold_time(self.encoder.stem, autocast_input(x))
        else:
            raise ValueError(
                f"expected a static image [B, {chans}, H, W] or time-major frames "
                f"[{steps}, B, {chans}, H, W]; got shape {tuple(x.shape)}"
            )
        x = self.sn(x)
        return x if self.pool is None else self.pool(x)

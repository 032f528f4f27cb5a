"""The integer program: layers, their bit-serial execution, and the self-describing file.

Activations between layers are integer spike levels ``k`` (int64 tensors), time-major
``[T', B, ...]`` with ``T' = T`` steps, or ``T' = 1`` for a tensor that is the same at every
step (the first layer's accumulator on a static image, computed once). A conv or linear layer
runs **bit-serially**: ``b_in``-bit levels are split into ``T' * b_in`` binary slices
(``qsnn.bitserial.bit_slices``), each slice goes through the ``b_w``-bit integer weights, and
the slice results are recombined with ``sum_k 2**k`` (paper Eq. 3, SPEC §4) -- what the
accelerator of ``qsnn.hardware`` does. Slice products are computed with torch convolutions in
float32 (exact: every partial sum of a binary slice is an integer below ``2**24``, checked) or
float64; everything after the accumulator is int64.

Residual models add four layer types: ``store`` keeps the current activation in a named slot,
``load`` makes a stored one current again, ``add`` is SEW-ResNet's restricted ADD of the current
levels and a stored one (``clamp(k_a + k_b, 0, 2**b_s - 1)``), and ``residual`` is a spiking
layer whose membrane also integrates a shortcut read from a slot (a conv or the identity
levels, ResNet-19).

File format: ``program.npz`` holds every integer array as ``"<layer index>.<field>"`` plus the
JSON manifest (as UTF-8 bytes under ``"manifest"``); ``manifest.json`` beside it is the same
manifest for people. ``load_program`` needs nothing but the ``.npz``. A program of the layer
types of version 1 is written as version 1 (unchanged); one with residual layers as version 2,
which a version-1 reader refuses by its version number.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..bitserial import bit_slices
from ..io import write_atomic, write_json_atomic
from .fixedpoint import OUTPUT_FRAC_BITS

__all__ = [
    "FORMAT",
    "AddLayer",
    "FlattenLayer",
    "IntegerProgram",
    "LoadLayer",
    "MaxPoolLayer",
    "OutputLayer",
    "ProgramError",
    "ProgramOutput",
    "ResidualSpikingLayer",
    "SpikingLayer",
    "StoreLayer",
    "SumPoolLayer",
    "TimeSumLayer",
    "load_program",
]

FORMAT = "qsnn-integer-program"
VERSION = 2  # written when a program holds residual layers; else 1 (the same as before)
_READABLE = (1, 2)
_F32_EXACT = 2**24
_F64_EXACT = 2**53


class ProgramError(ValueError):
    """A stored integer program cannot be read: missing, truncated, not a qsnn program, or
    inconsistent; the one-line message names the file."""


def _floor_div(x: Tensor, d: Tensor | int) -> Tensor:
    return torch.div(x, d, rounding_mode="floor")


@dataclass
class _Act:
    """Integer levels ``[T', B, ...]`` of ``bits`` bits; ``static``: ``T' = 1`` stands for
    ``steps`` identical steps."""

    levels: Tensor
    bits: int
    static: bool
    steps: int


# -- the layers --------------------------------------------------------------------------------
@dataclass
class _Layer:
    """Common serialization: ``np.ndarray`` fields are arrays, everything else is manifest."""

    kind: ClassVar[str] = ""
    name: str

    def record(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"type": self.kind}
        arrays: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
                meta.setdefault("arrays", {})[f.name] = f"{value.dtype} {list(value.shape)}"
            else:
                meta[f.name] = list(value) if isinstance(value, tuple) else value
        return meta, arrays

    @classmethod
    def from_record(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> _Layer:
        kwargs = {}
        for f in fields(cls):
            if f.name in arrays:
                kwargs[f.name] = arrays[f.name]
            elif f.name in meta:
                value = meta[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
            else:
                raise ValueError(f"layer {meta.get('name')!r} ({cls.kind}) lacks field {f.name!r}")
        return cls(**kwargs)

    def _t(self, key: str) -> Tensor:
        cache = self.__dict__.setdefault("_tensors", {})
        if key not in cache:
            cache[key] = torch.from_numpy(np.ascontiguousarray(getattr(self, key)))
        return cache[key]


@dataclass
class _LinearOp(_Layer):
    """A conv or linear layer with integer weight codes (shared by spiking and output layers)."""

    op: str = "conv"  # "conv" or "linear"
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # b_w-bit codes
    bits_w: int = 8
    bits_in: int = 1
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1

    def _apply(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.op == "conv":
            return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, weight)

    def _fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    def _qmax(self) -> int:
        return int(np.abs(self.weight).max()) if self.weight.size else 0

    def accumulate(self, act: _Act, bitserial: bool) -> Tensor:
        """``acc = sum_i q_i * k_i`` (int64) for levels ``[T', B, ...]`` -> ``[T', B, ...]``.

        Bit-serial: ``T' * b`` binary slices through the weights, recombined per step.
        """
        levels, bits = act.levels, act.bits
        steps, batch = levels.shape[:2]
        bound_slice = self._fan_in() * self._qmax()
        if bitserial:
            dtype = torch.float32 if bound_slice < _F32_EXACT else torch.float64
            if bound_slice >= _F64_EXACT:
                raise ValueError(f"{self.name}: binary-slice sums may reach {bound_slice:.3g}")
            slices = bit_slices(levels, bits)  # [T'*bits, B, ...] of 0/1
            x = slices.flatten(0, 1).to(dtype)  # [T'*bits*B, ...]
            y = self._apply(x, self._t("weight").to(dtype))
            y = torch.round(y).to(torch.int64).unflatten(0, (steps, bits, batch))
            weights = 1 << torch.arange(bits, dtype=torch.int64)  # 2**k per bit-plane
            shape = (1, bits) + (1,) * (y.dim() - 2)
            return (y * weights.view(shape)).sum(1)  # [T', bits, B, ...] -> [T', B, ...]
        bound = bound_slice * ((1 << bits) - 1)
        if bound >= _F64_EXACT:
            raise ValueError(f"{self.name}: integer sums may reach {bound:.3g} >= 2**53")
        y = self._apply(levels.flatten(0, 1).to(torch.float64), self._t("weight").double())
        return torch.round(y).to(torch.int64).unflatten(0, (steps, batch))  # [T', B, ...]

    def _channel_view(self, t: Tensor) -> Tensor:
        """Per-output-channel ``[M]`` -> broadcastable over ``[..., M, H, W]`` or ``[..., M]``."""
        return t.view(-1, 1, 1) if self.op == "conv" else t


@dataclass
class SpikingLayer(_LinearOp):
    """Conv/linear + batch norm (folded) + spike-pattern neuron, all integer.

    The first layer (``image_input``) reads the uint8 image: one accumulator per input channel,
    combined as ``sum_ci gain_ci * acc_ci - offset`` (the dataset normalization folded in, see
    ``qsnn.deploy.convert``). Neuron: ``qsnn.deploy.fixedpoint``.
    """

    kind: ClassVar[str] = "spiking"
    image_input: bool = False
    gain: np.ndarray | None = None  # int64 [C_in] (image input only)
    offset: np.ndarray | None = None  # int64 [M, H_out, W_out] (image input only)
    bits_s: int = 1
    steps: int = 1
    leak_shift: int = 1
    reset: str = "hard"
    direction: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    threshold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frac_bits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    v_reset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    const_levels: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.int64))
    theta: float = 1.0  # value of one output level in the trained model (for the manifest)
    membrane_bound: float = 0.0  # |u_int - u| near a firing decision, in thresholds

    def record(self):
        meta, arrays = super().record()
        for key in ("gain", "offset"):
            if meta.get(key, 0) is None:
                meta.pop(key)
        return meta, arrays

    @classmethod
    def from_record(cls, meta, arrays):
        meta = {"gain": None, "offset": None, **meta}
        return super().from_record(meta, arrays)

    def _image_acc(self, act: _Act, bitserial: bool) -> Tensor:
        # Per input channel ci: acc_ci = q[:, ci] * x[ci] exactly, then sum_ci G_ci acc_ci - O.
        weight = self.weight
        total = None
        for ci in range(weight.shape[1]):
            part = _LinearOp(name=self.name, op="conv", weight=weight[:, ci:ci + 1],
                             bits_w=self.bits_w, bits_in=8, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=1)
            one = _Act(act.levels[:, :, ci:ci + 1], act.bits, act.static, act.steps)
            term = part.accumulate(one, bitserial) * int(self.gain[ci])  # [1, B, M, H, W]
            total = term if total is None else total + term
        offset = self._t("offset")
        if tuple(offset.shape) != tuple(total.shape[2:]):
            raise ValueError(
                f"{self.name}: the program was built for outputs {tuple(offset.shape)} "
                f"(input size fixed at conversion); got {tuple(total.shape[2:])}"
            )
        return total - offset

    def _drive(self, act: _Act, bitserial: bool, slots: dict[str, _Act]) -> Tensor:
        """The membrane input per step in membrane LSBs: ``acc * 2**F_c`` (int64)."""
        acc = self._image_acc(act, bitserial) if self.image_input else self.accumulate(
            act, bitserial
        )  # [T' or 1, B, M, ...]
        scale = torch.ldexp(torch.ones(1, dtype=torch.float64),
                            self._t("frac_bits").double()).long()  # 2**F_c
        return acc * self._channel_view(scale)

    def run(self, act: _Act, bitserial: bool, trace: dict | None = None,
            slots: dict[str, _Act] | None = None) -> _Act:
        drive = self._drive(act, bitserial, slots if slots is not None else {})
        view = self._channel_view
        d, theta = view(self._t("direction").long()), view(self._t("threshold"))
        c, v_reset = view(self._t("bias")), view(self._t("v_reset"))
        frozen = self._t("direction") == 0
        levels_max = (1 << self.bits_s) - 1
        divisor = 1 << self.leak_shift
        v = torch.zeros_like(drive[0])
        out = []
        for t in range(self.steps):
            a = drive[t] if drive.shape[0] > 1 else drive[0]
            v = _floor_div(v, divisor) + a + c  # leak (shift), integrate
            k = torch.clamp(_floor_div(d * v, theta), 0, levels_max)  # threshold comparison
            if bool(frozen.any()):
                const = view(self._t("const_levels")[:, t])
                k = torch.where(view(frozen), const.expand_as(k), k)
            v = torch.where(k > 0, v_reset, v) if self.reset == "hard" else v - d * k * theta
            out.append(k)
        levels = torch.stack(out)  # T x [B, ...] -> [T, B, ...]
        if trace is not None:
            trace[self.name] = levels
        return _Act(levels, self.bits_s, False, self.steps)


@dataclass
class ResidualSpikingLayer(SpikingLayer):
    """A spiking layer whose membrane also integrates a shortcut (ResNet-19's block):
    ``V = floor(V / 2**m) + acc * M_0 + acc_s * M_1 + C``, ``acc_s`` the shortcut conv's
    accumulator on the levels stored in slot ``shortcut`` (``shortcut_op = "conv"``) or those
    levels themselves (``"identity"``); ``multipliers`` ``[2, M]`` per
    ``qsnn.deploy.fixedpoint``."""

    kind: ClassVar[str] = "residual"
    shortcut: str = ""
    shortcut_op: str = "identity"
    shortcut_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    shortcut_bits_w: int = 8
    shortcut_bits_in: int = 1
    shortcut_stride: tuple = (1, 1)
    shortcut_padding: tuple = (0, 0)
    multipliers: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), np.int64))

    def _drive(self, act: _Act, bitserial: bool, slots: dict[str, _Act]) -> Tensor:
        if self.shortcut not in slots:
            raise ValueError(f"{self.name}: no stored activation {self.shortcut!r}")
        stored = slots[self.shortcut]
        if self.shortcut_op == "conv":
            op = _LinearOp(name=f"{self.name}.shortcut", op="conv", weight=self.shortcut_weight,
                           bits_w=self.shortcut_bits_w, bits_in=self.shortcut_bits_in,
                           stride=self.shortcut_stride, padding=self.shortcut_padding)
            short = op.accumulate(stored, bitserial)  # [T', B, M, H, W]
        else:
            short = stored.levels
        view = self._channel_view
        m = self._t("multipliers")
        return self.accumulate(act, bitserial) * view(m[0]) + short * view(m[1])


@dataclass
class StoreLayer(_Layer):
    """Keep the current activation in slot ``slot`` (the input of a residual block)."""

    kind: ClassVar[str] = "store"
    slot: str = ""

    def run(self, act: _Act, slots: dict[str, _Act]) -> _Act:
        slots[self.slot] = act
        return act


@dataclass
class LoadLayer(_Layer):
    """Make the activation stored in ``slot`` the current one (start of a shortcut branch)."""

    kind: ClassVar[str] = "load"
    slot: str = ""

    def run(self, act: _Act, slots: dict[str, _Act]) -> _Act:
        if self.slot not in slots:
            raise ValueError(f"{self.name}: no stored activation {self.slot!r}")
        return slots[self.slot]


@dataclass
class AddLayer(_Layer):
    """SEW-ResNet's restricted ADD: ``clamp(k + k_slot, 0, 2**bits_s - 1)`` of the current
    levels and those stored in ``slot`` (both on one grid, checked at conversion)."""

    kind: ClassVar[str] = "add"
    slot: str = ""
    bits_s: int = 1

    def run(self, act: _Act, slots: dict[str, _Act], trace: dict | None = None) -> _Act:
        if self.slot not in slots:
            raise ValueError(f"{self.name}: no stored activation {self.slot!r}")
        other = slots[self.slot]
        levels = torch.clamp(act.levels + other.levels, 0, (1 << self.bits_s) - 1)
        if trace is not None:
            trace[self.name] = levels
        return _Act(levels, self.bits_s, act.static and other.static, act.steps)


@dataclass
class OutputLayer(_LinearOp):
    """The last conv/linear (+ batch norm): logits in fixed point with ``OUTPUT_FRAC_BITS``.

    ``ACC`` is the accumulator summed over the steps the readout averages (``time_mean``; the
    ``1/T`` is folded into ``multiplier``), then ``Y = floor((ACC * M + Bo) / 2**S)``.
    """

    kind: ClassVar[str] = "output"
    time_mean: bool = True
    multiplier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    frac_bits: int = OUTPUT_FRAC_BITS
    # float32 error analysis of the trained model's own layer (for verification)
    weight_scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    float_bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    input_scale: float = 1.0

    def run(self, act: _Act, bitserial: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(logits float64, fixed-point bound, float32-reference bound), ``[B, M, ...]`` or
        ``[T, B, M, ...]`` without a time mean."""
        acc = self.accumulate(act, bitserial)  # [T', B, M, ...]
        weight = act.steps if act.static else 1  # a static input stands for T identical steps
        view = self._channel_view
        if self.time_mean:
            acc = acc.sum(0) * weight  # sum over steps; 1/T is inside the multiplier
        mult, bias = view(self._t("multiplier")), view(self._t("bias"))
        denom = view(1 << self._t("shift"))
        y = _floor_div(acc * mult + bias, denom)
        logits = y.double() / 2.0**self.frac_bits
        lsb = 2.0**-self.frac_bits
        fx_bound = lsb + (acc.abs().double() / 2 + 0.5) * lsb / denom.double()
        # float32 bound of the trained layer given the same input levels (Higham: gamma_n).
        abs_op = _LinearOp(name=self.name, op=self.op, weight=np.abs(self.weight),
                           bits_w=self.bits_w, bits_in=self.bits_in, stride=self.stride,
                           padding=self.padding, dilation=self.dilation, groups=self.groups)
        mag = abs_op.accumulate(act, bitserial).double()  # sum |q| k
        mag = mag.mean(0) if self.time_mean else mag
        terms = mag * view(self._t("weight_scale")) * self.input_scale + view(
            self._t("float_bias")
        ).abs()
        n = self._fan_in() + act.steps + 4
        u = 2.0**-24
        f32_bound = terms * (n * u / (1 - n * u))
        return logits, fx_bound, f32_bound


@dataclass
class MaxPoolLayer(_Layer):
    """Max pooling on levels (commutes with the monotone map level -> spike ``k * theta``)."""

    kind: ClassVar[str] = "maxpool"
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False

    def run(self, act: _Act) -> _Act:
        x = act.levels.flatten(0, 1).double()  # [T', B, C, H, W] -> [T'*B, C, H, W]
        y = F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode)
        levels = y.to(torch.int64).unflatten(0, tuple(act.levels.shape[:2]))
        return _Act(levels, act.bits, act.static, act.steps)


@dataclass
class SumPoolLayer(_Layer):
    """Average pooling as a sum of levels; the ``1 / n`` is folded into the next layer's scale,
    and the width grows by ``ceil(log2 n)`` bits."""

    kind: ClassVar[str] = "sumpool"
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    bits_out: int = 1

    def run(self, act: _Act) -> _Act:
        x = act.levels.flatten(0, 1).double()  # [T'*B, C, H, W]
        n = self.kernel[0] * self.kernel[1]
        y = F.avg_pool2d(x, self.kernel, self.stride) * n
        levels = torch.round(y).to(torch.int64).unflatten(0, tuple(act.levels.shape[:2]))
        return _Act(levels, self.bits_out, act.static, act.steps)


@dataclass
class FlattenLayer(_Layer):
    """Flatten every dimension from ``start_dim`` of the time-major ``[T', B, ...]`` levels."""

    kind: ClassVar[str] = "flatten"
    start_dim: int = 2

    def run(self, act: _Act) -> _Act:
        return _Act(act.levels.flatten(self.start_dim), act.bits, act.static, act.steps)


@dataclass
class TimeSumLayer(_Layer):
    """A time mean of levels, kept as their integer sum (``1 / T`` folded downstream)."""

    kind: ClassVar[str] = "timesum"
    bits_out: int = 1

    def run(self, act: _Act) -> _Act:
        total = act.levels.sum(0, keepdim=True) * (act.steps if act.static else 1)
        return _Act(total, self.bits_out, True, 1)


_LAYERS = {cls.kind: cls for cls in (SpikingLayer, OutputLayer, MaxPoolLayer, SumPoolLayer,
                                     FlattenLayer, TimeSumLayer, ResidualSpikingLayer,
                                     StoreLayer, LoadLayer, AddLayer)}
_V2_KINDS = frozenset({"residual", "store", "load", "add"})


# -- the program -------------------------------------------------------------------------------
@dataclass
class ProgramOutput:
    """What ``IntegerProgram.run`` returns.

    Attributes:
        logits: float64 ``[B, K]``: the fixed-point logits ``Y / 2**16`` as numbers.
        bound_fixed: per-logit bound of the output rounding (given identical spikes).
        bound_float32: per-logit bound of float32 rounding in the trained model's last layer.
        levels: spike levels ``[T, B, ...]`` per spiking layer name (``trace=True`` only).
    """

    logits: Tensor
    bound_fixed: Tensor
    bound_float32: Tensor
    levels: dict[str, Tensor] = field(default_factory=dict)

    @property
    def tolerance(self) -> Tensor:
        """How far the logits may lie from the trained model's when every spike agrees."""
        return self.bound_fixed + self.bound_float32


@dataclass
class IntegerProgram:
    """A trained qsnn model as integer layers (see ``qsnn.deploy.convert``).

    Input: uint8 images ``[B, C, H, W]`` (0..255, not normalized: normalization is folded into
    the first layer). ``run`` returns ``ProgramOutput``; ``save``/``load_program`` write and read
    the ``.npz`` + manifest.
    """

    layers: list[_Layer]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    time_steps: int
    source: dict[str, Any] = field(default_factory=dict)

    def run(self, images: Tensor, *, bitserial: bool = True, trace: bool = False) -> ProgramOutput:
        """Run the program on uint8 images ``[B, C, H, W]``."""
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"expected uint8 images [B, {', '.join(map(str, self.input_shape))}]; "
                f"got {tuple(images.shape)}"
            )
        if images.is_floating_point() or images.dtype == torch.bool:
            raise ValueError(
                f"expected raw uint8 images (0..255), not normalized floats; got {images.dtype}"
            )
        x = images.to(torch.int64).unsqueeze(0)  # [B, C, H, W] -> [1, B, C, H, W]
        if int(x.min()) < 0 or int(x.max()) > 255:
            raise ValueError("image values must lie in 0..255")
        act = _Act(x, 8, True, self.time_steps)
        levels: dict[str, Tensor] = {}
        slots: dict[str, _Act] = {}
        out = None
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer, SpikingLayer):
                    act = layer.run(act, bitserial, levels if trace else None, slots)
                elif isinstance(layer, AddLayer):
                    act = layer.run(act, slots, levels if trace else None)
                elif isinstance(layer, (StoreLayer, LoadLayer)):
                    act = layer.run(act, slots)
                elif isinstance(layer, OutputLayer):
                    out = layer.run(act, bitserial)
                else:
                    act = layer.run(act)
        if out is None:
            raise ValueError("the program has no output layer")
        return ProgramOutput(*out, levels=levels)

    def __call__(self, images: Tensor) -> Tensor:
        return self.run(images).logits

    # -- description and files ---------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The JSON description: input, time steps, fixed-point formats, one entry per layer."""
        from .fixedpoint import GAIN_FRAC_BITS, THRESHOLD_BITS

        layers = []
        for i, layer in enumerate(self.layers):
            meta, _ = layer.record()
            layers.append({"index": i, **meta})
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION if any(layer.kind in _V2_KINDS for layer in self.layers) else 1,
            "input": {"dtype": "uint8", "shape": list(self.input_shape),
                      "normalization": "(x / 255 - mean) / std, folded into layer 0",
                      "mean": list(self.mean), "std": list(self.std)},
            "time_steps": self.time_steps,
            "fixed_point": {
                "membrane": "int64 per channel, accumulator units with frac_bits[c] fractional "
                            "bits: V = floor(V / 2**leak_shift) + acc * 2**frac_bits + bias",
                "threshold_min_lsb": 2**THRESHOLD_BITS,
                "fire": "k = clamp(floor(direction * V / threshold), 0, 2**bits_s - 1)",
                "input_gain_frac_bits": GAIN_FRAC_BITS,
                "output": f"logits = floor((ACC * multiplier + bias) / 2**shift) / "
                          f"2**{OUTPUT_FRAC_BITS}",
            },
            "source": self.source,
            "layers": layers,
        }
        if any(isinstance(layer, ResidualSpikingLayer) for layer in self.layers):
            manifest["fixed_point"]["residual"] = (
                "V = floor(V / 2**leak_shift) + acc * multipliers[0] + acc_shortcut * "
                "multipliers[1] + bias (acc_shortcut: the shortcut conv, or the stored levels)")
            manifest["fixed_point"]["add"] = "k = clamp(k + k_slot, 0, 2**bits_s - 1)"
        return manifest

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.npz``: arrays + manifest) and ``manifest.json`` beside it."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path / "program.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        arrays: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            for key, value in layer.record()[1].items():
                arrays[f"{i}.{key}"] = value
        text = json.dumps(manifest)
        arrays["manifest"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))
        write_json_atomic(path.with_name("manifest.json"), manifest)
        return path

    def summary(self) -> str:
        """One line per layer: type, shape, widths."""
        lines = [f"integer program: input uint8 {list(self.input_shape)}, T = {self.time_steps}"]
        for i, layer in enumerate(self.layers):
            if isinstance(layer, SpikingLayer):
                what = (f"{layer.op} {list(layer.weight.shape)} b_w={layer.bits_w} "
                        f"b_in={layer.bits_in} -> b_s={layer.bits_s}, {layer.reset} reset, "
                        f"leak >>{layer.leak_shift}, membrane bound {layer.membrane_bound:.1e}")
            elif isinstance(layer, OutputLayer):
                what = (f"{layer.op} {list(layer.weight.shape)} b_w={layer.bits_w} "
                        f"b_in={layer.bits_in} -> logits Q.{layer.frac_bits}"
                        f"{' (time mean)' if layer.time_mean else ''}")
            else:
                meta = {k: v for k, v in layer.record()[0].items() if k not in ("type", "name")}
                what = ", ".join(f"{k}={v}" for k, v in meta.items())
            lines.append(f"  {i:2d} {layer.kind:<8} {layer.name:<24} {what}")
        return "\n".join(lines)


# What reading a damaged or foreign file can raise, from zipfile, zlib, numpy and json.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError,
                zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, MemoryError,
                OverflowError)


def load_program(path: str | os.PathLike) -> IntegerProgram:
    """Read a program written by ``IntegerProgram.save`` (a ``.npz`` or its folder).

    A file that is missing, truncated, not a zip archive of arrays, or whose manifest does not
    match its arrays raises :class:`ProgramError` (a ``ValueError``) naming it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "program.npz"
    if not path.is_file():
        raise ProgramError(f"no integer program at {path}")
    try:
        return _read_program(path)
    except ProgramError:
        raise
    except _READ_ERRORS as err:
        why = f"no entry {err.args[0]!r}" if isinstance(err, KeyError) and err.args else (
            f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
        raise ProgramError(f"{path} is not a readable qsnn integer program ({why})") from err


def _read_program(path: Path) -> IntegerProgram:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ProgramError(f"{path} is a single numpy array, not a qsnn integer program")
    with data:
        arrays = {key: data[key] for key in data.files}
    if "manifest" not in arrays:
        raise ProgramError(f"{path} is not a qsnn integer program: it holds no manifest")
    manifest = json.loads(bytes(arrays.pop("manifest")).decode("utf-8"))
    if not isinstance(manifest, dict):
        raise ProgramError(f"{path}: the manifest is a JSON {type(manifest).__name__}, not an "
                           "object")
    if manifest.get("format") != FORMAT:
        raise ProgramError(f"{path}: expected format {FORMAT!r}; got {manifest.get('format')!r}")
    if manifest.get("version") not in _READABLE:
        raise ProgramError(f"{path}: expected version {' or '.join(map(str, _READABLE))}; got "
                           f"{manifest.get('version')!r}")
    entries = manifest["layers"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ProgramError(f"{path}: the manifest's 'layers' is not a list of objects")
    layers = []
    for entry in entries:
        cls = _LAYERS.get(entry["type"])
        if cls is None:
            raise ProgramError(f"{path}: unknown layer type {entry['type']!r}")
        i = entry["index"]
        own = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.split(".", 1)[0] == str(i)}
        for key, described in dict(entry.get("arrays", {})).items():
            found = own.get(key)
            actual = None if found is None else f"{found.dtype} {list(found.shape)}"
            if actual != described:
                raise ProgramError(f"{path}: layer {i} array {key!r} is {actual or 'missing'}; "
                                   f"the manifest says {described}")
        meta = {k: v for k, v in entry.items() if k not in ("index", "type", "arrays")}
        try:
            layers.append(cls.from_record(meta, own))
        except ValueError as err:
            raise ProgramError(f"{path}: {err}") from err
    inp = manifest["input"]
    return IntegerProgram(layers, tuple(inp["shape"]), tuple(inp["mean"]), tuple(inp["std"]),
                          int(manifest["time_steps"]), manifest.get("source", {}))

"""Weight quantization (paper Eq. 5) and drop-in quantized ``Conv2d`` / ``Linear`` layers.

``w_q = Delta * q`` with an integer code ``q`` of ``b_w`` bits. The level set is pinned so that
every part of qsnn (metrics, bit-serial runs, hardware, deployment) agrees on it:

- ``b_w >= 2``: ``q = clamp(round(w / Delta), -Q, Q)`` with ``Q = 2**(b_w-1) - 1`` (symmetric,
  ``2**b_w - 1`` levels; ``b_w = 2`` is ternary) and ``Delta = max|w| / Q``;
- ``b_w = 1``: ``q = sign(w)`` in ``{-1, +1}`` (``sign(0) = +1``) and ``Delta = mean|w|``;
- ``b_w >= 16``: the weight stays float.

Scales are per output channel by default (``per_channel=False``: one per tensor). With
``learn_scale=True`` ``Delta`` is a parameter trained LSQ-style (Esser et al., 2020: gradient
scale ``1 / sqrt(numel_group * Q)``) over the same level set. Gradients reach the float weight
through a straight-through estimator (identity inside the clamp range).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .allocation import FLOAT_WEIGHT_BITS, LayerBits, check_weight_bits
from .precision import exact_parts

__all__ = [
    "QuantConv2d",
    "QuantLinear",
    "fake_quantize_weight",
    "weight_codes",
    "weight_qmax",
    "weight_scale",
]


def weight_qmax(bits_w: int) -> int:
    """Largest integer code ``Q``: ``2**(b_w-1) - 1`` for ``b_w >= 2``, 1 for ``b_w = 1``."""
    check_weight_bits(bits_w, "bits_w")
    return 1 if bits_w == 1 else (1 << (bits_w - 1)) - 1


def _reduce_dims(w: Tensor, per_channel: bool) -> tuple[int, ...]:
    return tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))


def weight_scale(w: Tensor, bits_w: int, per_channel: bool = True) -> Tensor:
    """The max-abs scale ``Delta`` (mean-abs for ``b_w = 1``), shaped to broadcast over ``w``.

    An all-zero group gets ``Delta = 1`` for ``b_w >= 2`` so that its codes are 0, not NaN.
    """
    dims = _reduce_dims(w, per_channel)
    with torch.no_grad():
        if bits_w == 1:
            return w.abs().mean(dim=dims, keepdim=True)
        # max |w| as one reduction (no |w| temporary the size of the weight)
        peak = torch.linalg.vector_norm(w, ord=math.inf, dim=dims, keepdim=True)
        delta = peak / weight_qmax(bits_w)
        return torch.where(delta > 0, delta, torch.ones_like(delta))


def weight_codes(
    w: Tensor, bits_w: int, per_channel: bool = True, scale: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Integer codes ``q`` (int32) and scale ``Delta`` with ``w_q = Delta * q`` (Eq. 5)."""
    if bits_w >= FLOAT_WEIGHT_BITS:
        raise ValueError(f"bits_w={bits_w} means float weights: there are no integer codes")
    with torch.no_grad():
        delta = weight_scale(w, bits_w, per_channel) if scale is None else scale.detach()
        if bits_w == 1:
            q = torch.where(w >= 0, 1, -1)
        else:
            qmax = weight_qmax(bits_w)
            q = torch.clamp(torch.round(w / delta), -qmax, qmax)
        return q.to(torch.int32), delta


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class _MaxAbsQuantSTE(torch.autograd.Function):
    """``Delta * q`` with the max-abs (or mean-abs) scale in one pass of float ops, identity
    gradient. The values equal ``weight_codes``' ``Delta * q`` exactly (``q`` is a whole number
    in float; no integer round trip), at a fraction of the memory traffic."""

    @staticmethod
    def forward(ctx, w, bits_w, per_channel):  # type: ignore[override]
        delta = weight_scale(w, bits_w, per_channel)
        if bits_w == 1:
            return torch.where(w >= 0, delta, -delta)
        qmax = weight_qmax(bits_w)
        # One temporary, rounded, clamped and scaled in place: same values as the chain of
        # out-of-place ops, a quarter of its allocations (11 M weights in SEW-ResNet-18).
        return torch.div(w, delta).round_().clamp_(-qmax, qmax).mul_(delta)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None, None


def _scale_grad(x: Tensor, factor: float) -> Tensor:
    # Forward: x. Backward: gradient multiplied by `factor` (LSQ's step-size gradient scale).
    return (x - x * factor).detach() + x * factor


def fake_quantize_weight(
    w: Tensor, bits_w: int, per_channel: bool = True, scale: Tensor | None = None
) -> Tensor:
    """``w_q = Delta * q`` with a straight-through gradient to ``w``.

    With a fixed (max-abs) scale the gradient to ``w`` is the identity. With a learned ``scale``
    (LSQ) the gradient to ``w`` is the identity inside ``[-Q*Delta, Q*Delta]`` and zero outside,
    and ``scale`` gets LSQ's gradient.
    """
    if bits_w >= FLOAT_WEIGHT_BITS:
        return w
    qmax = weight_qmax(bits_w)
    if scale is None:
        return _MaxAbsQuantSTE.apply(w, bits_w, per_channel)
    group = w.numel() // scale.numel()
    s = _scale_grad(scale, 1.0 / math.sqrt(group * qmax))
    v = torch.clamp(w / s, -qmax, qmax)
    q = _SignSTE.apply(v) if bits_w == 1 else _RoundSTE.apply(v)
    return q * s


def _exact_call(layer, x: Tensor, bias: Tensor | None) -> Tensor:
    """``layer(x, bias)`` for a linear op; a float32 input under autocast (spike levels that
    the autocast precision cannot hold) is used exactly (``qsnn.precision.exact_parts``):
    ``layer(hi) + layer(mid) + layer(lo)`` in bf16, or one float32 call under float16."""
    parts = exact_parts(x)
    if parts is None:
        return layer(x, bias)
    if not parts:
        with torch.autocast(x.device.type, enabled=False):
            return layer(x, None if bias is None else bias.float())
    hi, mid, lo = parts
    return layer(lo, None) + layer(mid, None) + layer(hi, bias)  # small parts first


class _QuantWeight:
    """Mixin: quantize ``self.weight`` to ``bits_w`` on every forward."""

    weight: nn.Parameter

    def _init_quant(self, bits_w: int, per_channel: bool, learn_scale: bool) -> None:
        for name, flag in (("per_channel", per_channel), ("learn_scale", learn_scale)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False; got {flag!r}")
        self.per_channel = per_channel
        self.learn_scale = learn_scale
        self.register_parameter("scale", None)  # type: ignore[attr-defined]
        self.bits_w = bits_w

    @property
    def bits_w(self) -> int:
        """Weight bits ``b_w`` (1..8, or 16/32 for float)."""
        return self._bits_w

    @bits_w.setter
    def bits_w(self, value: int) -> None:
        value = check_weight_bits(value, "bits_w")
        unchanged = getattr(self, "_bits_w", None) == value and self.scale is not None
        self._bits_w = value
        if self.learn_scale and value < FLOAT_WEIGHT_BITS and not unchanged:
            # A new level set needs a new step size: re-initialise it from the max-abs rule;
            # the same width keeps the learned one (an allocation change of T or b_s only).
            init = weight_scale(self.weight.detach(), value, self.per_channel)
            if self.scale is None:
                self.scale = nn.Parameter(init)
            else:
                self.scale.data = init

    @property
    def weight_bits_eff(self) -> int:
        """Weight bits as metrics count them (float weights count as 16)."""
        return min(self.bits_w, FLOAT_WEIGHT_BITS)

    def set_layer_bits(self, bits: LayerBits) -> None:
        """Take ``b_w`` from a per-layer allocation (see ``qsnn.apply_bits``)."""
        self.bits_w = bits.w

    def quantized_weight(self) -> Tensor:
        """The weight this layer computes with: ``Delta * q`` (or the float weight)."""
        return fake_quantize_weight(
            self.weight, self.bits_w, self.per_channel, self._active_scale()
        )

    def weight_codes(self) -> tuple[Tensor, Tensor]:
        """Integer codes ``q`` (int32, shaped like the weight) and the scale ``Delta``."""
        return weight_codes(self.weight, self.bits_w, self.per_channel, self._active_scale())

    def _active_scale(self) -> Tensor | None:
        # A learned step size can be pushed through zero by the optimizer; its magnitude is the
        # scale, so codes and weights agree on the sign whatever the raw parameter holds.
        if not self.learn_scale or self.scale is None:
            return None
        return self.scale.abs().clamp_min(torch.finfo(self.scale.dtype).tiny)

    def _quant_repr(self) -> str:
        scale = "channel" if self.per_channel else "tensor"
        learn = ", learn_scale=True" if self.learn_scale else ""
        return f"bits_w={self.bits_w}, scale={scale}{learn}"


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """``nn.Conv2d`` whose weight is quantized to ``bits_w`` bits (paper Eq. 5).

    Takes every ``nn.Conv2d`` argument plus ``bits_w`` (default 8), ``per_channel`` (default
    True) and ``learn_scale`` (default False).
    """

    def __init__(
        self, *args, bits_w: int = 8, per_channel: bool = True, learn_scale: bool = False, **kwargs
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quant(bits_w, per_channel, learn_scale)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.quantized_weight()
        return _exact_call(lambda v, b: self._conv_forward(v, weight, b), x, self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Conv2d.extra_repr(self)}, {self._quant_repr()}"


class QuantLinear(_QuantWeight, nn.Linear):
    """``nn.Linear`` whose weight is quantized to ``bits_w`` bits (paper Eq. 5)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bits_w: int = 8,
        per_channel: bool = True,
        learn_scale: bool = False,
        **kwargs,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, **kwargs)
        self._init_quant(bits_w, per_channel, learn_scale)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.quantized_weight()
        return _exact_call(lambda v, b: F.linear(v, weight, b), x, self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._quant_repr()}"

"""The bit-serial identity (paper Eq. 3 and Appendix B).

A ``b``-bit unsigned level ``a = sum_k 2**k a_k`` splits into ``b`` binary bit-planes ``a_k``.
Any linear layer then satisfies, exactly in integers,

    W a = sum_{k=0}^{b-1} 2**k (W a_k).

QANN view: one ``b``-bit activation is ``b`` binary slices. SNN view: ``T`` steps of ``b_s``-bit
spikes are ``T * b_s`` binary slices (slice ``t * b_s + k`` is bit ``k`` of step ``t``), so the
binary work of a layer is proportional to its bit budget ``T * b_w * b_s`` (the ``b_w`` bits sit
in the weights each binary slice is multiplied with).

Integer results are computed in float64 (exact while every partial sum is below ``2**53``, which
is checked) and returned as int64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .quant import QuantConv2d, QuantLinear

__all__ = [
    "bit_slices",
    "bitserial_apply",
    "bitserial_layer",
    "bitserial_time_layer",
    "decompose",
    "integer_layer",
    "recompose",
]

_EXACT = 2**53


def _as_levels(levels: Tensor, bits: int) -> Tensor:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32; got {bits!r}")
    if levels.is_floating_point():
        if not torch.equal(levels, torch.round(levels)):
            raise ValueError(
                "levels must be whole numbers (integer spike levels k, not spikes k*theta)"
            )
    elif levels.dtype == torch.bool or levels.is_complex():
        raise ValueError(f"levels must be an integer or float tensor; got {levels.dtype}")
    out = levels.to(torch.int64)
    if out.numel() and (int(out.min()) < 0 or int(out.max()) > (1 << bits) - 1):
        raise ValueError(
            f"levels must lie in [0, {(1 << bits) - 1}] for bits={bits}; "
            f"got values in [{int(out.min())}, {int(out.max())}]"
        )
    return out


def decompose(levels: Tensor, bits: int) -> Tensor:
    """Bit-planes of unsigned levels: ``[*shape] -> [bits, *shape]`` (int64 0/1, LSB first)."""
    ints = _as_levels(levels, bits)
    shifts = torch.arange(bits, device=ints.device).view(-1, *([1] * ints.dim()))
    return (ints.unsqueeze(0) >> shifts) & 1


def recompose(planes: Tensor) -> Tensor:
    """Inverse of ``decompose``: ``sum_k 2**k planes[k]`` over dim 0 (int64)."""
    bits = planes.shape[0]
    weights = 1 << torch.arange(bits, device=planes.device, dtype=torch.int64)
    return (planes.to(torch.int64) * weights.view(-1, *([1] * (planes.dim() - 1)))).sum(0)


def bit_slices(levels: Tensor, bits: int) -> Tensor:
    """SNN view: ``T`` steps of ``bits``-bit levels ``[T, B, ...]`` -> ``[T*bits, B, ...]`` binary
    slices; slice ``t*bits + k`` is bit ``k`` of step ``t`` and carries weight ``2**k``."""
    if levels.dim() < 2:
        raise ValueError(f"expected levels [T, B, ...]; got shape {tuple(levels.shape)}")
    planes = decompose(levels, bits)  # [bits, T, B, ...]
    return planes.transpose(0, 1).flatten(0, 1)  # [T, bits, B, ...] -> [T*bits, B, ...]


def _exact_int(y: Tensor, bound: float) -> Tensor:
    if bound >= _EXACT:
        raise ValueError(
            f"integer result may reach {bound:.3g} >= 2**53: float64 would not be exact"
        )
    return torch.round(y).to(torch.int64)


def _integer_op(layer: nn.Module) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The layer's linear map with integer weight codes (float64, no bias) and |codes|."""
    if isinstance(layer, (QuantConv2d, QuantLinear)) and layer.bits_w < 16:
        weight = layer.weight_codes()[0].to(torch.float64)
    elif isinstance(layer, (nn.Conv2d, nn.Linear)):
        weight = layer.weight.detach().to(torch.float64)
        if not torch.equal(weight, torch.round(weight)):
            raise ValueError(
                f"{type(layer).__name__} has float weights: integer bit-serial identity needs "
                "integer weights (use a QuantConv2d/QuantLinear with bits_w <= 8)"
            )
    else:
        raise ValueError(
            f"bit-serial runs support Conv2d and Linear layers; got {type(layer).__name__}"
        )
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"padding_mode={layer.padding_mode!r} is not supported; use 'zeros'")

        def op(x: Tensor) -> Tensor:
            return F.conv2d(
                x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups
            )
    else:

        def op(x: Tensor) -> Tensor:
            return F.linear(x, weight)

    return op, weight


def _checked_op(layer: nn.Module, bits: int) -> Callable[[Tensor], Tensor]:
    """``_integer_op`` after checking that ``bits``-bit inputs keep float64 sums exact."""
    op, weight = _integer_op(layer)
    bound = weight[0].numel() * float(weight.abs().max()) * ((1 << bits) - 1)
    _exact_int(torch.zeros(()), bound)
    return op


def integer_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """Dense integer reference: the layer's integer weight codes applied to ``x`` (int64)."""
    op, weight = _integer_op(layer)
    fan_in = weight[0].numel()
    x64 = x.to(torch.float64)
    bound = fan_in * float(weight.abs().max()) * float(x64.abs().max() if x64.numel() else 0)
    return _exact_int(op(x64), bound)


def bitserial_apply(op: Callable[[Tensor], Tensor], levels: Tensor, bits: int) -> Tensor:
    """``sum_k 2**k op(a_k)`` for a linear ``op`` acting on ``[N, ...]`` (all planes in one call).

    Returns ``op``'s float64 output per plane, recombined in int64 (planes are exact integers).
    """
    planes = decompose(levels, bits).to(torch.float64)  # [bits, N, ...]
    batch = planes.shape[1]
    out = op(planes.flatten(0, 1))  # [bits*N, ...]
    out = torch.round(out).to(torch.int64).unflatten(0, (bits, batch))  # [bits, N, ...]
    return recompose(out)


def bitserial_layer(layer: nn.Module, levels: Tensor, bits: int) -> Tensor:
    """QANN view: run ``layer`` (integer codes, no bias) on ``bits`` binary planes of ``levels``
    ``[B, ...]`` and recombine; equals ``integer_layer(layer, levels)`` exactly."""
    op = _checked_op(layer, bits)
    return bitserial_apply(op, levels, bits)


def bitserial_time_layer(layer: nn.Module, levels: Tensor, bits: int) -> Tensor:
    """SNN view: ``[T, B, ...]`` levels of ``bits``-bit spikes run as ``T * bits`` binary slices
    through ``layer``, recombined per step into ``[T, B, ...]`` int64 (exact)."""
    steps = levels.shape[0]
    slices = bit_slices(levels, bits)  # [T*bits, B, ...]
    op = _checked_op(layer, bits)
    batch = slices.shape[1]
    out = op(slices.flatten(0, 1).to(torch.float64))  # [T*bits*B, ...]
    out = torch.round(out).to(torch.int64).unflatten(0, (steps, bits, batch))  # [T, bits, B, ...]
    weights = 1 << torch.arange(bits, dtype=torch.int64, device=out.device)
    return (out * weights.view(1, bits, *([1] * (out.dim() - 2)))).sum(1)  # [T, B, ...]

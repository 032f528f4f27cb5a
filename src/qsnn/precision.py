"""Where a lower precision can hold spike levels, and where it cannot.

bfloat16 keeps 8 significant bits (float16: 11), so it holds a spike ``s = k * theta`` exactly
only while ``k * theta`` fits them: every level of ``b_s <= 8`` on a power-of-two step, but not
a 16-bit level, nor ``k * 1.7`` for most ``k``. Under autocast qsnn keeps spikes exact at every
``b_s`` (SPEC §2), in training as in evaluation:

- a level module (``SpikeNeuron``, ``SEWAdd``, ``LevelQuantizer``) sends its spikes in the
  autocast dtype when that holds every ``k * theta`` (``exact_spike_dtype``), else in float32
  (``spike_dtype``);
- a quantized layer reads a float32 input under bf16 autocast as the sum of its three bf16
  parts (``exact_parts``): ``x = hi + mid + lo`` exactly, each part a bf16 conv, so the levels
  are used unrounded (the output is rounded to bf16 like any bf16 layer's); under float16
  autocast (narrow exponent range) it runs in float32 instead;
- the raw input is cast to the autocast dtype at the encoder (``qsnn.temporal``), as the first
  conv would do anyway, so that only spikes reach a quantized layer in float32.

Without autocast every module computes in its input's dtype (a model cast to bf16 computes in
bf16 throughout, and its levels are exact only where bf16 holds them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["exact_parts", "exact_spike_dtype", "low_precision_autocast", "spike_dtype"]

# Significant bits (implicit bit included) and smallest normal exponent of the low precisions.
_SIGNIFICAND = {torch.bfloat16: (8, -126), torch.float16: (11, -14)}


def low_precision_autocast(device_type: str) -> torch.dtype | None:
    """The dtype of an active bf16/fp16 autocast on ``device_type``, else ``None``."""
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype in _SIGNIFICAND else None


def exact_spike_dtype(dtype: torch.dtype, theta: float | None, levels: int) -> torch.dtype:
    """``dtype`` when every ``k * theta`` (``0 <= k <= L``) is exact in it, else float32.

    ``theta = None`` means a step of unknown significand (a stored or learned step that is not
    a power of two). Write ``theta = m * 2**e`` with ``m`` odd: ``L * m`` is odd, so every
    ``k * m`` fits ``p`` significant bits iff ``L * m < 2**p`` (``p = 8`` for bfloat16, 11 for
    float16; float16 also needs ``theta`` normal and ``L * theta`` below its maximum). Other
    dtypes are returned as they are.
    """
    if dtype not in _SIGNIFICAND:
        return dtype
    if theta is None:
        return torch.float32
    bits, min_exp = _SIGNIFICAND[dtype]
    mantissa, exp = math.frexp(theta)  # theta = mantissa * 2**exp, mantissa in [0.5, 1)
    m = int(mantissa * (1 << 53))
    m >>= (m & -m).bit_length() - 1  # the odd integer significand
    if levels * m >= (1 << bits) or exp - 1 < min_exp:
        return torch.float32
    if dtype == torch.float16 and levels * theta > torch.finfo(torch.float16).max:
        return torch.float32
    return dtype


def spike_dtype(x: Tensor, theta: float | None, levels: int, dtype: torch.dtype | None = None
                ) -> torch.dtype:
    """The dtype of spikes ``k * theta`` computed from ``x`` (module doc): under a bf16/fp16
    autocast the autocast dtype where it holds them, else float32; without autocast (or for a
    float64 input) the input dtype (``dtype``, default ``x.dtype``)."""
    dtype = x.dtype if dtype is None else dtype
    low = low_precision_autocast(x.device.type)
    if low is None or dtype == torch.float64:
        return dtype
    return exact_spike_dtype(low, theta, levels)


def exact_parts(x: Tensor) -> tuple[Tensor, ...] | None:
    """A float32 ``x`` under bf16 autocast as its three bf16 parts, ``x = hi + mid + lo``.

    ``hi = bf16(x)``, ``mid = bf16(x - hi)``, ``lo = bf16(x - hi - mid)``: each remainder is
    exact in float32 and has at most 16, then 8, significant bits, so the sum is ``x`` exactly
    (bf16 has float32's exponent range). Returns ``()`` under float16 autocast (compute in
    float32 instead: float16's range cannot hold the parts) and ``None`` when ``x`` is not a
    float32 input under a lower-precision autocast.
    """
    if x.dtype != torch.float32:
        return None
    low = low_precision_autocast(x.device.type)
    if low is None:
        return None
    if low != torch.bfloat16:
        return ()
    hi = x.to(low)
    rest = x - hi
    mid = rest.to(low)
    return hi, mid, (rest - mid).to(low)

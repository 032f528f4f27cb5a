"""Time-major helpers: encode a static input over ``T``, fold ``T`` into the batch, read out.

Shapes are time-major everywhere: ``[T, B, ...]``. Only the encoder adds ``T`` and only the
readout removes it. Stateless layers (conv, linear, batch norm, pooling) run on ``[T*B, ...]``:
one big call instead of ``T`` small ones, and batch-norm statistics over all steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from .allocation import check_time_steps
from .precision import low_precision_autocast

__all__ = [
    "FoldTime",
    "StaticEncoder",
    "TimeMean",
    "autocast_input",
    "fold_time",
    "time_major_empty_like",
]


def autocast_input(x: Tensor) -> Tensor:
    """A float32 raw input in the active bf16/fp16 autocast precision, else ``x`` itself.

    The first conv would cast it so anyway; doing it here lets ``QuantConv2d``/``QuantLinear``
    treat every float32 input under autocast as spike levels that must stay exact
    (``qsnn.precision.exact_parts``) without running the stem three times. (A ``StaticEncoder``
    without a stem passes the image on in that precision too.)
    """
    if x.dtype == torch.float32:
        low = low_precision_autocast(x.device.type)
        if low is not None:
            return x.to(low)
    return x


def _check_time_major(x: Tensor, who: str) -> None:
    if x.dim() < 2:
        raise ValueError(f"{who} expects time-major input [T, B, ...]; got shape {tuple(x.shape)}")


def time_major_empty_like(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised dense ``[T, B, ...]`` tensor whose steps share ``x[0]``'s memory layout.

    ``torch.empty_like`` keeps the layout of a dense tensor but falls back to a contiguous one
    for a broadcast view (``StaticEncoder`` output, stride 0 over ``T``), which would turn a
    channels-last net into a slow NCHW one downstream.
    """
    dtype = x.dtype if dtype is None else dtype
    if 0 not in x.stride() or x.numel() == 0:
        return torch.empty_like(x, dtype=dtype)
    step = x[0]
    fmt = torch.contiguous_format
    if (
        step.dim() == 4
        and not step.is_contiguous()
        and step.is_contiguous(memory_format=torch.channels_last)
    ):
        fmt = torch.channels_last
    flat = torch.empty(
        (x.shape[0] * x.shape[1], *x.shape[2:]), dtype=dtype, device=x.device, memory_format=fmt
    )  # [T*B, ...]
    return flat.unflatten(0, tuple(x.shape[:2]))  # [T*B, ...] -> [T, B, ...]


def _dense(x: Tensor) -> Tensor:
    """``x`` itself, or a dense copy of a broadcast view that keeps the per-step layout."""
    if 0 not in x.stride() or x.numel() == 0:
        return x
    return time_major_empty_like(x).copy_(x)


def fold_time(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply a stateless ``fn`` to ``x: [T, B, ...]`` as one call on ``[T*B, ...]``."""
    _check_time_major(x, "fold_time")
    steps, batch = x.shape[:2]
    y = fn(_dense(x).flatten(0, 1))  # [T, B, ...] -> [T*B, ...]
    return y.unflatten(0, (steps, batch))  # [T*B, ...] -> [T, B, ...]


class FoldTime(nn.Module):
    """Run a stateless module on ``[T, B, ...]`` by folding ``T`` into the batch.

    ``FoldTime(nn.Conv2d(...))`` maps ``[T, B, C, H, W] -> [T, B, C', H', W']``. The wrapped
    module is ``self.module``. (``qsnn.profile`` follows level widths through the folded ops
    itself: pooling keeps the input's width.)
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return fold_time(self.module, x)


class _RepeatTime(torch.autograd.Function):
    """``[B, ...] -> [T, B, ...]`` as a broadcast view; backward sums over ``T`` into a gradient
    with the input's memory layout (autograd's own ``expand`` backward returns a contiguous one,
    which pushes a channels-last batch norm before it off its fast path)."""

    @staticmethod
    def forward(ctx, x, steps):  # type: ignore[override]
        return x.unsqueeze(0).expand(steps, *x.shape)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        if grad.shape[0] == 1:
            return grad[0], None  # one step: nothing to sum
        out = torch.empty_like(grad[0])
        torch.sum(grad, dim=0, out=out)
        return out, None


class StaticEncoder(nn.Module):
    """Present a static input ``[B, ...]`` for ``T`` steps: ``[T, B, ...]`` (direct encoding).

    With a ``stem`` (a stateless first layer such as conv + batch norm) the stem runs once on
    ``[B, ...]`` and its output is repeated: the same result as running it ``T`` times, at
    ``1/T`` of the cost (``qsnn.profile`` counts it with ``T_op = 1``). The repeat is a
    broadcast view (``expand``), not a copy.
    """

    def __init__(self, time_steps: int, stem: nn.Module | None = None) -> None:
        super().__init__()
        self.time_steps = check_time_steps(time_steps, "time_steps")
        self.stem = stem

    def forward(self, x: Tensor) -> Tensor:
        x = autocast_input(x)
        if self.stem is not None:
            x = self.stem(x)
        return _RepeatTime.apply(x, self.time_steps)  # [B, ...] -> [T, B, ...]

    @property
    def output_time_steps(self) -> int:
        """Steps the output spans (read by ``qsnn.profile`` for ``T_op``)."""
        return self.time_steps

    def set_time_steps(self, steps: int) -> None:
        """Take the allocation's ``T`` (called by ``qsnn.apply_bits``)."""
        self.time_steps = check_time_steps(steps, "time_steps")

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}"


class TimeMean(nn.Module):
    """Readout: average over time, ``[T, B, ...] -> [B, ...]``."""

    #: The output spans one step (read by ``qsnn.profile``: a head after it runs once).
    output_time_steps = 1

    def forward(self, x: Tensor) -> Tensor:
        _check_time_major(x, "TimeMean")
        return x.mean(dim=0)

"""Declared stages: an ordered, typed description of a CNN model's forward pass.

Every CNN of the zoo declares ``stages()``, the sequence of what its ``forward`` computes, so
that a reader (``qsnn.deploy.convert``) builds from the declaration instead of a copy of the
forward pass:

- ``Stem``: a ``SpikingStem`` (conv + batch norm computed once on a static image, a neuron,
  an optional pool);
- ``ConvSpike``: a ``ConvBNNeuron`` (conv + batch norm folded over time, a neuron);
- ``Pool``: a pool applied to each step (a ``FoldTime`` of ``MaxPool2d`` / ``AvgPool2d`` /
  ``AdaptiveAvgPool2d``);
- ``Flatten``: ``[T, B, ...] -> [T, B, F]``;
- ``LinearSpike``: a linear layer, an optional batch norm and a neuron, per step;
- ``MembraneResidual``: ``sn(bn(conv(body(x))) + shortcut(x))``, the sum taken on a neuron's
  membrane input (ResNet-19); the shortcut is a ``ConvBN`` or the identity;
- ``SEWResidual``: ``add(body(x), shortcut(x))`` with the restricted ADD (``SEWAdd``) of
  SEW-ResNet; the shortcut is a list of stages (the downsample) or the identity;
- ``Head``: the per-step classifier and the mean over ``T``.

``run_stages`` executes a declaration with the model's own modules: the float reference that
``check_stages`` compares with ``model.forward``, so the declaration cannot drift from the
forward pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from ..neurons import SpikeNeuron
from ..quant import QuantLinear
from ..temporal import FoldTime, TimeMean, fold_time
from .layers import ConvBN, ConvBNNeuron, SEWAdd, SpikingStem

__all__ = [
    "ConvSpike",
    "Flatten",
    "Head",
    "LinearSpike",
    "MembraneResidual",
    "Pool",
    "SEWResidual",
    "Stage",
    "Stem",
    "check_stages",
    "run_stages",
    "sequence_stages",
]


@dataclass(frozen=True)
class Stem:
    """The model's ``SpikingStem``: ``[B, C, H, W]`` -> spikes ``[T, B, C', H', W']``."""

    module: SpikingStem


@dataclass(frozen=True)
class ConvSpike:
    """A ``ConvBNNeuron``: ``[T, B, C, H, W]`` spikes -> spikes."""

    module: ConvBNNeuron


@dataclass(frozen=True)
class Pool:
    """A pool applied to every step: a ``FoldTime`` of a 2-d max or average pool."""

    module: FoldTime


@dataclass(frozen=True)
class Flatten:
    """``[T, B, C, H, W] -> [T, B, C*H*W]``."""


@dataclass(frozen=True)
class LinearSpike:
    """``sn(bn(linear(x)))`` per step on ``[T, B, F]`` (``bn`` optional)."""

    linear: QuantLinear
    sn: SpikeNeuron
    bn: nn.BatchNorm1d | None = None


@dataclass(frozen=True)
class MembraneResidual:
    """``sn(bn(conv(body(x))) + shortcut(x))``: a residual sum on a neuron's membrane input.

    ``conv`` is a ``ConvBN`` folded over time; ``shortcut`` a ``ConvBN`` or ``None`` (identity).
    """

    body: tuple[Stage, ...]
    conv: ConvBN
    shortcut: ConvBN | None
    sn: SpikeNeuron


@dataclass(frozen=True)
class SEWResidual:
    """``add(body(x), shortcut(x))`` with the restricted ``b_s``-bit ADD; an empty
    ``shortcut`` is the identity."""

    body: tuple[Stage, ...]
    shortcut: tuple[Stage, ...]
    add: SEWAdd


@dataclass(frozen=True)
class Head:
    """The per-step classifier ``linear`` and the ``readout`` (mean over ``T``)."""

    linear: QuantLinear
    readout: TimeMean


Stage = Stem | ConvSpike | Pool | Flatten | LinearSpike | MembraneResidual | SEWResidual | Head


def sequence_stages(seq: nn.Sequential) -> tuple[Stage, ...]:
    """The stages of an ``nn.Sequential`` of ``ConvBNNeuron``, pools (``FoldTime``) and blocks
    that declare their own ``stage()``, in order."""
    out: list[Stage] = []
    for name, child in seq.named_children():
        if isinstance(child, ConvBNNeuron):
            out.append(ConvSpike(child))
        elif isinstance(child, FoldTime):
            out.append(Pool(child))
        elif callable(getattr(child, "stage", None)):
            out.append(child.stage())
        else:
            raise ValueError(f"'{name}' ({type(child).__name__}) has no declared stage")
    return tuple(out)


def _linear_spike(stage: LinearSpike, x: Tensor) -> Tensor:
    y = stage.linear(x)  # [T, B, F] -> [T, B, F']
    if stage.bn is not None:
        y = stage.bn(y.flatten(0, -2)).view_as(y)
    return stage.sn(y)


def run_stages(stages: Sequence[Stage], x: Tensor) -> Tensor:
    """Run a declaration on ``x`` with the stages' own modules (the float reference)."""
    for stage in stages:
        if isinstance(stage, (Stem, ConvSpike, Pool)):
            x = stage.module(x)
        elif isinstance(stage, Flatten):
            x = x.flatten(2)
        elif isinstance(stage, LinearSpike):
            x = _linear_spike(stage, x)
        elif isinstance(stage, MembraneResidual):
            out = fold_time(stage.conv, run_stages(stage.body, x))
            x = stage.sn(out + (x if stage.shortcut is None else fold_time(stage.shortcut, x)))
        elif isinstance(stage, SEWResidual):
            identity = run_stages(stage.shortcut, x) if stage.shortcut else x
            x = stage.add(run_stages(stage.body, x), identity)
        elif isinstance(stage, Head):
            x = stage.readout(stage.linear(x))
        else:
            raise TypeError(f"unknown stage {stage!r}")
    return x


def check_stages(model: nn.Module, x: Tensor | None = None, *, seed: int = 0) -> None:
    """Raise ``ValueError`` unless ``run_stages(model.stages(), x)`` equals ``model(x)``
    (within float32 rounding) in evaluation mode; ``x`` defaults to two random images of
    ``model.input_size``. The model's training mode is restored."""
    if x is None:
        gen = torch.Generator().manual_seed(seed)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x = torch.randn(2, *model.input_size, generator=gen).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(x)
            try:
                got = run_stages(model.stages(), x)
            except (RuntimeError, ValueError) as err:  # e.g. a shape the next stage rejects
                raise ValueError(
                    f"{type(model).__name__}.stages() does not describe its forward pass: "
                    f"running the declared stages fails ({err}); the declaration has drifted"
                ) from None
    finally:
        model.train(was_training)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
        diff = (got - want).abs().max() if got.shape == want.shape else float("nan")
        raise ValueError(
            f"{type(model).__name__}.stages() does not describe its forward pass: the declared "
            f"stages give {tuple(got.shape)} logits, forward gives {tuple(want.shape)} "
            f"(largest difference {float(diff):.3g}); the declaration has drifted"
        )

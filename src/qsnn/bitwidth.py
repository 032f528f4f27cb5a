"""The bit-width protocol: how an allocation reaches each layer, and what each layer declares.

One writer, several readers:

- **Writer.** ``apply_bits`` is the only code that changes a layer's widths. It resolves a
  ``BitsPolicy`` (paper Sec. 3: one ``b_w/b_s/T`` per model plus per-layer overrides), then
  hands every module that implements ``TakesLayerBits`` its ``LayerBits`` and every module that
  implements ``TakesTimeSteps`` the model's ``T``. It works in two phases, resolve and validate
  every layer, then assign, so a call that fails changes nothing.
- **Readers.** ``qsnn.profile``, ``qsnn.hardware`` and ``qsnn.deploy`` learn a layer's widths
  from what it declares (``DeclaresWeightBits``, ``DeclaresOutputLevels``,
  ``DeclaresTimeSteps``) through ``declared_weight_bits``, ``declared_output_levels`` and
  ``declared_time_steps``. A foreign module declares nothing: the readers return ``None`` and
  the caller infers as it always has (float weights, widths from the values it sees).

The protocols are structural (``typing.Protocol``): a foreign layer opts in by having the
methods or attributes, without inheriting from qsnn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch.nn as nn

from .allocation import Bits, BitsPolicy, LayerBits, resolve_policy

__all__ = [
    "DeclaresOutputLevels",
    "DeclaresTimeSteps",
    "DeclaresWeightBits",
    "TakesLayerBits",
    "TakesTimeSteps",
    "apply_bits",
    "declared_level_step",
    "declared_output_levels",
    "declared_time_steps",
    "declared_weight_bits",
]


@runtime_checkable
class TakesLayerBits(Protocol):
    """A layer whose widths come from the allocation: quantized conv/linear layers take
    ``bits.w``, neurons and restricted sums take ``bits.s``.

    ``check_layer_bits(bits)`` (optional) raises ``ValueError`` for widths the layer cannot
    take; ``apply_bits`` calls it for every layer before it assigns any, so ``set_layer_bits``
    itself must not fail on widths that passed."""

    def set_layer_bits(self, bits: LayerBits) -> None: ...


@runtime_checkable
class TakesTimeSteps(Protocol):
    """A module whose output spans the model's ``T`` steps (``StaticEncoder``)."""

    def set_time_steps(self, steps: int) -> None: ...


@runtime_checkable
class DeclaresWeightBits(Protocol):
    """A layer computing with ``b_w``-bit weights; float weights declare 16 (paper: BF16)."""

    @property
    def weight_bits_eff(self) -> int: ...


@runtime_checkable
class DeclaresOutputLevels(Protocol):
    """A layer whose output is integer levels ``0..2**output_bits - 1`` times a step ``theta``
    (neurons, restricted sums, quantized attention maps)."""

    @property
    def output_bits(self) -> int: ...


@runtime_checkable
class DeclaresTimeSteps(Protocol):
    """A module whose output spans ``output_time_steps`` steps (an encoder: ``T``; a readout
    that averages over time: 1)."""

    @property
    def output_time_steps(self) -> int: ...


_UNDECLARED = object()


def _declared_int(module: object, attr: str) -> int | None:
    # The protocol's one data member, read as ``isinstance(module, Declares...)`` tests it
    # (``hasattr``) but without that check: ``typing._get_protocol_attrs`` on every call cost
    # about 5 % of a profile, where these readers run once per op.
    value = getattr(module, attr, _UNDECLARED)
    if value is _UNDECLARED:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{type(module).__name__}.{attr} must be an int; got {value!r}")
    return value


def declared_weight_bits(module: object) -> int | None:
    """The weight bits ``module`` computes with (float weights: 16), or ``None`` when it does
    not declare them (a foreign layer: callers count its weights as float)."""
    return _declared_int(module, "weight_bits_eff")  # DeclaresWeightBits


def declared_output_levels(module: object) -> int | None:
    """Bits of the integer levels ``module`` emits, or ``None`` when it declares none."""
    return _declared_int(module, "output_bits")  # DeclaresOutputLevels


def declared_level_step(module: object) -> float | None:
    """The step ``theta`` of a module that declares output levels (its spikes are
    ``k * theta``), or ``None`` when it declares no levels or no step."""
    if declared_output_levels(module) is None:
        return None
    theta = getattr(module, "theta", None)
    return None if theta is None else float(theta)


def declared_time_steps(module: object) -> int | None:
    """Steps ``module``'s output spans, or ``None`` when it declares none."""
    return _declared_int(module, "output_time_steps")  # DeclaresTimeSteps


def apply_bits(
    model: nn.Module,
    bits: Bits | str | BitsPolicy,
    overrides: Mapping[str, object] | None = None,
    *,
    strict: bool = True,
) -> BitsPolicy:
    """Set every layer of ``model`` that takes bits to its widths under ``bits`` (plus
    ``overrides``), and every encoder to ``T``; returns the policy applied.

    Phase 1 resolves each ``TakesLayerBits`` module's ``LayerBits`` (first matching override,
    else the default), checks that with ``strict`` every override pattern matches one of them
    (a typo would otherwise leave a layer at the default silently), and runs each layer's
    ``check_layer_bits``. Phase 2 assigns. Any error is raised in phase 1, before a layer
    changes.
    """
    policy = resolve_policy(bits, overrides)
    plan: list[tuple[TakesLayerBits, LayerBits]] = []
    names: list[str] = []
    encoders: list[TakesTimeSteps] = []
    for name, module in model.named_modules():
        if isinstance(module, TakesLayerBits):
            plan.append((module, policy.for_layer(name)))
            names.append(name)
        if isinstance(module, TakesTimeSteps):
            encoders.append(module)
    if strict:
        unused = [p for p, hit in policy.matched(names).items() if not hit]
        if unused:
            raise ValueError(
                f"override patterns {unused} match no quantized layer or neuron; "
                f"layers are: {names[:12]}{' ...' if len(names) > 12 else ''}"
            )
    for module, layer_bits in plan:
        check = getattr(module, "check_layer_bits", None)
        if callable(check):
            check(layer_bits)
    for module, layer_bits in plan:
        module.set_layer_bits(layer_bits)
    for encoder in encoders:
        encoder.set_time_steps(policy.t)
    return policy

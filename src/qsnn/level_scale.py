"""The level step ``theta`` of a ``b_s``-bit neuron: how each allocation earns its spike levels.

A ``b_s``-bit neuron (paper Eq. 7) fires ``k = clamp(floor(v / theta), 0, L)`` and sends
``s = k * theta``, ``L = 2**b_s - 1``: ``theta`` is both its threshold and its level step. Its
input after batch norm is roughly unit-scale, so a step that suits ``b_s = 1`` (``theta = 1``)
leaves most of a 4-bit neuron's 15 levels unused. ``LevelScale`` owns the step and the rule that
sets it, the same rule for every allocation of a sweep:

- ``rule="fixed"``: ``theta`` as given, whatever ``b_s``.
- ``rule="scaled"``: ``theta * 2**(1 - b_s)``: the levels span the same range ``(L + 1) * step
  = 2 * theta`` at every ``b_s``, ever finer as ``b_s`` grows (at ``b_s = 1`` the step is
  ``theta``, rounded to a power of two with ``pow2``).
- ``rule="data"``: set on the first training batch from the current ``I`` the neuron receives,
  with LSQ's initialisation (Esser et al., ICLR 2020): ``theta_0 = 2 * mean|I| / sqrt(L)``.

and ``learn=True`` trains the step from that start, TQT-style in the log domain (Jain et al.,
MLSys 2020: ``theta = 2**l`` with ``l`` the parameter) with LSQ's gradient scale
``g = 1 / sqrt(N * L)``, ``N`` the neuron's features per sample and step:
``dL/dl = g * ln 2 * theta * dL/dtheta``.

``pow2=True`` (the default) rounds every step this module computes (``scaled``, ``data``,
learned) to the nearest power of two, ``theta = 2**round(log2 theta_0)``, with a straight-through
gradient. Why: ``k * theta`` is then exact in bfloat16 for ``b_s <= 8`` (bf16 keeps 8
significant bits), so bf16 training sends the levels it claims at no extra cost, and the
threshold is a shift in hardware. Nothing is lost to the rounding: the batch norm before every
neuron scales its input by a learned ``gamma`` (and the next batch norm undoes the spike scale),
so only the ratio of the two matters. A ``fixed`` step is used exactly as given.

A step computed from data or trained is state (``initialized``, ``log2_theta`` in
``state_dict``): changing ``b_s`` keeps it (as Brevitas keeps a learned scale); ``reset()``
forgets it, and the next training batch sets it again. Several neurons may share one
``LevelScale`` (the two inputs of SEW-ResNet's restricted ADD must lie on one grid); the first
to run initialises it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from .quant import _RoundSTE, _scale_grad

__all__ = [
    "LEVEL_RULES",
    "LevelScale",
    "lsq_init",
    "pow2_round",
]

LevelRule = Literal["fixed", "scaled", "data"]
LEVEL_RULES = ("fixed", "scaled", "data")

def pow2_round(theta: float) -> float:
    """The power of two nearest to ``theta`` in the log domain: ``2**round(log2 theta)``."""
    return 2.0 ** round(math.log2(theta))


def lsq_init(mean_abs: float, levels: int) -> float:
    """LSQ's step-size initialisation (Esser et al. 2020): ``2 * mean|I| / sqrt(L)``."""
    return 2.0 * mean_abs / math.sqrt(levels)


class LevelScale(nn.Module):
    """The level step ``theta`` of ``b_s``-bit spikes and the rule that sets it (module doc).

    Args:
        theta: the step of ``fixed``; ``theta`` at ``b_s = 1`` for ``scaled``; the step used
            before the first training batch for ``data``; the start of a learned ``fixed`` step.
        rule: ``"fixed"``, ``"scaled"`` or ``"data"``.
        learn: train the step (log domain, LSQ gradient scale) from the rule's value.
        pow2: round computed and learned steps to powers of two (a ``fixed`` step that is not
            learned, and the ``data`` rule's step before its first batch, are used as given).
    """

    def __init__(
        self,
        theta: float = 1.0,
        *,
        rule: LevelRule = "fixed",
        learn: bool = False,
        pow2: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"theta (threshold) must be a number > 0; got {theta!r}")
        if not math.isfinite(theta):
            raise ValueError(f"theta (threshold) must be finite; got {theta!r}")
        if rule not in LEVEL_RULES:
            raise ValueError(f"level_scale must be one of {LEVEL_RULES}; got {rule!r}")
        for name, flag in (("learn_theta", learn), ("pow2_theta", pow2)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False; got {flag!r}")
        self.theta0 = float(theta)
        self.rule = rule
        self.learn = learn
        self.pow2 = pow2
        self._ready = not self.stateful  # mirrors `initialized` (no host sync per forward)
        if self.stateful:
            # Set by the rule on the first training batch (a learned fixed step: at once).
            self.register_buffer("initialized", torch.tensor(False))
            start = torch.tensor(math.log2(self.theta0))
            if learn:
                self.log2_theta = nn.Parameter(start)
            else:
                self.register_buffer("log2_theta", start)

    @property
    def stateful(self) -> bool:
        """True when the step is state (computed from data or trained), not a formula."""
        return self.learn or self.rule == "data"

    @property
    def ready(self) -> bool:
        """True when the step no longer waits for a first training batch."""
        return self._ready

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.stateful:
            self._ready = bool(self.initialized)

    def rule_step(self, bits_s: int) -> float:
        """The step the rule gives without data: ``theta`` (``fixed``, and ``data`` before its
        first batch) or ``theta * 2**(1 - b_s)`` (``scaled``); a ``scaled`` or learned step is
        rounded to a power of two with ``pow2``."""
        if self.rule == "scaled":
            step = self.theta0 * 2.0 ** (1 - bits_s)
            return pow2_round(step) if self.pow2 else step
        if self.learn and self.pow2 and self.rule == "fixed":
            return pow2_round(self.theta0)
        return self.theta0

    def exact_theta(self, bits_s: int) -> float | None:
        """The step as a float when its significand is known (for ``exact_spike_dtype``): its
        value, ``1.0`` standing for any power of two, or ``None`` (a stored step that is not
        rounded)."""
        if not self._ready:
            return self.rule_step(bits_s)
        if not self.stateful:
            return self.rule_step(bits_s)
        return 1.0 if self.pow2 else None

    @torch.no_grad()
    def initialize(self, current: Tensor, bits_s: int) -> None:
        """Set the step from the first training batch's input current ``I`` (rule ``data``:
        ``2 * mean|I| / sqrt(L)``; else the rule's own value). Under DDP ``mean|I|`` is
        averaged over ranks so every replica starts alike."""
        levels = (1 << bits_s) - 1
        if self.rule == "data":
            mean_abs = current.detach().float().abs().mean()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(mean_abs)
                mean_abs /= torch.distributed.get_world_size()
            m = float(mean_abs)
            step = lsq_init(m, levels) if m > 0 and math.isfinite(m) else self.theta0
        else:
            step = self.rule_step(bits_s)
        if self.pow2:
            step = pow2_round(step)
        self.log2_theta.copy_(torch.tensor(math.log2(step)))
        self.initialized.fill_(True)
        self._ready = True

    def reset(self) -> None:
        """Forget a computed or trained step; the next training batch sets it again."""
        if self.stateful:
            with torch.no_grad():
                self.initialized.fill_(False)
                self.log2_theta.fill_(math.log2(self.theta0))
            self._ready = False

    def step(self, bits_s: int, features: int = 1) -> float | Tensor:
        """The step for ``b_s``-bit spikes: a float (a formula, or a stateful step before its
        first batch) or a 0-dim float32 tensor (a stored step; a learned one carries the
        gradient to ``log2_theta``).

        ``features`` is ``N`` of LSQ's gradient scale ``1 / sqrt(N * L)``. (Under Adam a
        constant gradient scale cancels out; it matters for SGD, and for how much each neuron
        that shares one grid pulls on it.)
        """
        if not self._ready:
            return self.rule_step(bits_s)
        if not self.stateful:
            return self.rule_step(bits_s)
        log2_theta = self.log2_theta
        if self.learn:
            levels = (1 << bits_s) - 1
            log2_theta = _scale_grad(log2_theta, 1.0 / math.sqrt(max(1, features) * levels))
        if self.pow2:
            log2_theta = _RoundSTE.apply(log2_theta)
        return torch.exp2(log2_theta)  # a tensor: no host sync on an accelerator

    def value(self, bits_s: int) -> float:
        """The current step as a float (what deployment, profiles and ``to_levels`` use)."""
        step = self.step(bits_s)
        return float(step.detach()) if isinstance(step, Tensor) else float(step)

    def extra_repr(self) -> str:
        parts = [f"rule={self.rule!r}", f"theta={self.theta0:g}"]
        if self.learn:
            parts.append("learn=True")
        if self.stateful or self.rule == "scaled":
            parts.append(f"pow2={self.pow2}")
        return ", ".join(parts)

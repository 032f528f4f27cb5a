"""Surrogate gradients for the spike-pattern staircase ``k = clamp(floor(u), 0, L)``.

The staircase has a unit jump at every integer ``u = 1..L`` (paper Eq. 6 with ``u = v/theta``).
Its surrogate derivative is a sum of unit-area bumps, one per jump:

    g(u) = sum_{j=1}^{L} bump(u - j)

so integrating ``g`` recovers a smooth staircase of the right height, for every ``b_s``. With
``L = 1`` (binary spikes, Eq. 1) this is the usual single bump at the threshold. Every shape has
peak ``1/width`` and unit area:

- ``triangle``:  bump(x) = max(0, 1 - |x|/w) / w. The default, ``w = 1``, sums to a trapezoid:
  ``g(u) = clamp(min(u, L + 1 - u), 0, 1)``: a straight-through estimator of ``clamp(u, 0, L)``
  with soft edges, which trains at every ``b_s``.
- ``rectangle``: bump(x) = [|x| < w/2] / w.
- ``sigmoid``:   bump(x) = a * sig(a x) * (1 - sig(a x)) with ``a = 4/w``.
- ``atan``:      bump(x) = (a/2) / (1 + (pi a x / 2)**2) with ``a = 2/w`` (SpikingJelly's ATan).

The sum runs over every level when ``L <= 16`` (``b_s <= 4``). For wider spikes it runs over the
16 levels nearest to ``u``: exact for ``triangle`` (``w <= 2``) and ``rectangle`` (``w <= 4``),
while the heavy tails of ``atan`` (and the light ones of ``sigmoid``) beyond 8 levels are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SURROGATE_SHAPES", "Surrogate"]

SURROGATE_SHAPES = ("triangle", "rectangle", "sigmoid", "atan")
_ALL_LEVELS = 16  # sum every bump up to this many levels
_WINDOW = 8  # beyond it, the bumps of the 2 * _WINDOW nearest levels


def _bump(shape: str, x: Tensor, w: float) -> Tensor:
    if shape == "triangle":
        return (1.0 - x.abs() / w).clamp_(min=0.0) / w
    if shape == "rectangle":
        return (x.abs() < w / 2).to(x.dtype) / w
    if shape == "sigmoid":
        a = 4.0 / w
        sig = torch.sigmoid(a * x)
        return a * sig * (1.0 - sig)
    a = 2.0 / w  # atan
    return (a / 2) / (1.0 + (math.pi / 2 * a * x) ** 2)


@dataclass(frozen=True)
class Surrogate:
    """Shape and width of the surrogate derivative of the spike staircase.

    Args:
        shape: one of ``triangle`` (default), ``rectangle``, ``sigmoid``, ``atan``.
        width: bump width ``w`` in units of the threshold; peak height is ``1/w``.
    """

    shape: str = "triangle"
    width: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SURROGATE_SHAPES:
            raise ValueError(
                f"surrogate shape must be one of {SURROGATE_SHAPES}; got {self.shape!r}"
            )
        limit = 4.0 if self.shape == "rectangle" else 2.0
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= limit:
            raise ValueError(
                f"surrogate width for {self.shape!r} must be in (0, {limit:g}]; got {self.width!r}"
            )

    @classmethod
    def parse(cls, spec: Surrogate | str | None) -> Surrogate:
        """``None`` -> default; ``"sigmoid"`` or ``"sigmoid:0.5"`` -> shape (and width)."""
        if spec is None:
            return cls()
        if isinstance(spec, Surrogate):
            return spec
        if isinstance(spec, str):
            shape, _, width = spec.partition(":")
            try:
                return cls(shape.strip(), float(width) if width else 1.0)
            except ValueError as err:
                raise ValueError(f"bad surrogate {spec!r}: {err}") from None
        raise ValueError(
            f"surrogate must be a Surrogate, a 'shape[:width]' string or None; got {spec!r}"
        )

    def grad(self, u: Tensor, levels: int) -> Tensor:
        """``g(u) = sum_{j=1}^{levels} bump(u - j)``, same dtype as ``u``."""
        if self.shape == "triangle" and self.width == 1.0:
            # Closed form of the sum of unit triangles: a trapezoid on [0, L + 1].
            return torch.minimum(u, (levels + 1.0) - u).clamp_(0.0, 1.0)
        total = torch.zeros_like(u)
        if levels <= _ALL_LEVELS:
            for j in range(1, levels + 1):
                total += _bump(self.shape, u - j, self.width)
            return total
        base = torch.floor(u)
        for offset in range(1 - _WINDOW, _WINDOW + 1):
            j = base + offset
            inside = (j >= 1) & (j <= levels)
            total += torch.where(inside, _bump(self.shape, u - j, self.width), 0.0)
        return total

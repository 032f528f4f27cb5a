"""Bit allocations: ``Bits(w, s, t)`` and the budget ``T * b_w * b_s``.

The paper (Shen et al., CVPR 2024, Sec. 3) writes an allocation as ``b_w/b_s/T`` and defines the
bit budget of one synapse as ``BB = T * b_w * b_s``. Unquantized float weights (``w = 16`` or
``w = 32``) count as 16 bits everywhere, as the paper does for BF16.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "FLOAT_WEIGHT_BITS",
    "Bits",
    "BitsPolicy",
    "LayerBits",
    "allocations",
    "check_spike_bits",
    "check_weight_bits",
    "resolve_policy",
]

#: Bit width that float (unquantized) weights count as in every metric.
FLOAT_WEIGHT_BITS = 16
_WEIGHT_BITS_TEXT = "an integer in 1..8, or 16 or 32 for unquantized float weights"
_SPIKE_BITS_TEXT = "an integer in 1..16"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_weight_bits(value: object, name: str = "w") -> int:
    """Validate a weight bit-width ``b_w``; raise ``ValueError`` naming ``name`` otherwise."""
    if not _is_int(value) or not (1 <= value <= 8 or value in (16, 32)):
        raise ValueError(f"{name} (weight bits b_w) must be {_WEIGHT_BITS_TEXT}; got {value!r}")
    return value


def check_spike_bits(value: object, name: str = "s") -> int:
    """Validate a spike bit-width ``b_s``; raise ``ValueError`` naming ``name`` otherwise."""
    if not _is_int(value) or not 1 <= value <= 16:
        raise ValueError(f"{name} (spike bits b_s) must be {_SPIKE_BITS_TEXT}; got {value!r}")
    return value


def check_time_steps(value: object, name: str = "t") -> int:
    """Validate a number of time steps ``T >= 1``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} (time steps T) must be an integer >= 1; got {value!r}")
    return value


@dataclass(frozen=True, order=True)
class Bits:
    """A bit allocation ``b_w/b_s/T``.

    Args:
        w: weight bits ``b_w``: 1..8, or 16/32 for unquantized float weights (counted as 16).
        s: spike bits ``b_s`` in 1..16; ``L = 2**s - 1`` non-zero spike levels.
        t: time steps ``T >= 1``; ``T = 1`` is a quantized ANN.

    ``budget = w_eff * s * t`` with ``w_eff = min(w, 16)``: ``Bits(32, 1, 4).budget == 64``.
    """

    w: int
    s: int
    t: int

    def __post_init__(self) -> None:
        check_weight_bits(self.w, "Bits.w")
        check_spike_bits(self.s, "Bits.s")
        check_time_steps(self.t, "Bits.t")

    @property
    def float_weights(self) -> bool:
        """True when weights stay unquantized float (``w`` is 16 or 32)."""
        return self.w >= FLOAT_WEIGHT_BITS

    @property
    def w_eff(self) -> int:
        """Weight bits as counted by every metric: float weights count as 16."""
        return min(self.w, FLOAT_WEIGHT_BITS)

    @property
    def budget(self) -> int:
        """The bit budget ``BB = T * b_w * b_s`` (paper Sec. 3)."""
        return self.w_eff * self.s * self.t

    @property
    def levels(self) -> int:
        """Number of non-zero spike levels ``L = 2**b_s - 1``."""
        return (1 << self.s) - 1

    @classmethod
    def parse(cls, text: str | Bits) -> Bits:
        """Parse ``"b_w/b_s/T"`` (e.g. ``"4/2/2"``); a ``Bits`` is returned unchanged."""
        if isinstance(text, Bits):
            return text
        if not isinstance(text, str):
            raise ValueError(f"expected a 'b_w/b_s/T' string such as '4/2/2'; got {text!r}")
        parts = text.strip().split("/")
        if len(parts) != 3:
            raise ValueError(
                f"expected a 'b_w/b_s/T' string with three fields such as '4/2/2'; got {text!r}"
            )
        values = []
        for name, part in zip(("w", "s", "t"), parts, strict=True):
            try:
                values.append(int(part.strip()))
            except ValueError:
                raise ValueError(
                    f"Bits.{name} in {text!r} is not an integer: {part.strip()!r}"
                ) from None
        return cls(*values)

    def replace(self, *, w: int | None = None, s: int | None = None, t: int | None = None) -> Bits:
        """A copy with some fields changed."""
        return Bits(
            self.w if w is None else w, self.s if s is None else s, self.t if t is None else t
        )

    def __str__(self) -> str:
        return f"{self.w}/{self.s}/{self.t}"


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def allocations(
    budget: int,
    w: int | None = None,
    s: int | None = None,
    t: int | None = None,
    powers_of_two: bool = True,
) -> list[Bits]:
    """Every ``Bits`` whose budget is exactly ``budget``, sorted by ``(w, s, t)``.

    Fields given as arguments are fixed. Float weights appear once, as ``w = 16``. With
    ``powers_of_two`` every free field is a power of two (the paper's grid). An empty result raises
    ``ValueError`` saying why.
    """
    if not _is_int(budget) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1; got {budget!r}")
    if w is not None:
        check_weight_bits(w, "w")
        w = min(w, FLOAT_WEIGHT_BITS)
    if s is not None:
        check_spike_bits(s, "s")
    if t is not None:
        check_time_steps(t, "t")

    def pow2(v: int) -> bool:
        return v & (v - 1) == 0

    def ok(v: int, fixed: int | None) -> bool:
        return v == fixed if fixed is not None else (not powers_of_two or pow2(v))

    found = []
    for bw in (1, 2, 3, 4, 5, 6, 7, 8, FLOAT_WEIGHT_BITS):
        if budget % bw or not ok(bw, w):
            continue
        for bs in _divisors(budget // bw):
            bt = budget // bw // bs
            if bs <= 16 and ok(bs, s) and ok(bt, t):
                found.append(Bits(bw, bs, bt))
    if not found:
        fixed = ", ".join(f"{k}={v}" for k, v in (("w", w), ("s", s), ("t", t)) if v is not None)
        grid = "powers of two" if powers_of_two else "integers"
        raise ValueError(
            f"no allocation b_w/b_s/T has budget {budget}"
            + (f" with {fixed}" if fixed else "")
            + f" (free fields searched over {grid}; b_w in 1..8 or 16, b_s in 1..16, T >= 1)"
        )
    return sorted(found)


@dataclass(frozen=True)
class LayerBits:
    """The widths one layer uses: weight bits ``w`` and, for a neuron, spike bits ``s``."""

    w: int
    s: int

    @property
    def w_eff(self) -> int:
        return min(self.w, FLOAT_WEIGHT_BITS)


def _parse_override(pattern: str, value: object, default: Bits) -> tuple[int | None, int | None]:
    """An override value: ``int`` (b_w), ``"w/s"`` string, ``Bits`` (same T), or a mapping."""
    where = f"override {pattern!r}"
    if _is_int(value):
        return check_weight_bits(value, f"{where} (b_w)"), None
    if isinstance(value, Bits):
        if value.t != default.t:
            raise ValueError(f"{where}: T is one per model ({default.t}); got {value}")
        return value.w, value.s
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) == 3:
            return _parse_override(pattern, Bits.parse(value), default)
        if len(parts) == 2:
            try:
                ws, ss = (int(p) for p in parts)
            except ValueError:
                raise ValueError(f"{where}: expected 'b_w/b_s' integers; got {value!r}") from None
            return check_weight_bits(ws, f"{where} (b_w)"), check_spike_bits(ss, f"{where} (b_s)")
    if isinstance(value, Mapping):
        unknown = set(value) - {"w", "s"}
        if unknown:
            raise ValueError(f"{where}: only 'w' and 's' may be overridden; got {sorted(unknown)}")
        ws, ss = value.get("w"), value.get("s")
        return (
            None if ws is None else check_weight_bits(ws, f"{where} (b_w)"),
            None if ss is None else check_spike_bits(ss, f"{where} (b_s)"),
        )
    raise ValueError(
        f"{where}: expected an int (b_w), a 'b_w/b_s' string, a Bits or a mapping with 'w'/'s'; "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class BitsPolicy:
    """One default ``Bits`` per model plus per-layer overrides by module-name pattern.

    ``overrides`` maps an ``fnmatch`` pattern over qualified module names (``"stem.*"``,
    ``"head"``) to the layer's widths: an ``int`` sets ``b_w``; ``"8/8"`` sets ``b_w`` and ``b_s``;
    a mapping ``{"w": 8, "s": 4}`` sets either. The first matching pattern wins. ``T`` is one per
    model and cannot be overridden.
    """

    default: Bits
    overrides: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", Bits.parse(self.default))
        parsed = {p: _parse_override(p, v, self.default) for p, v in dict(self.overrides).items()}
        object.__setattr__(self, "overrides", dict(self.overrides))
        object.__setattr__(self, "_parsed", parsed)

    @property
    def t(self) -> int:
        return self.default.t

    def for_layer(self, name: str) -> LayerBits:
        """The widths for the module named ``name`` (first matching override, else default)."""
        for pattern, (w, s) in self._parsed.items():  # type: ignore[attr-defined]
            if fnmatch.fnmatchcase(name, pattern):
                return LayerBits(
                    self.default.w if w is None else w, self.default.s if s is None else s
                )
        return LayerBits(self.default.w, self.default.s)

    def matched(self, names: Iterable[str]) -> dict[str, list[str]]:
        """For each pattern, the names it matches (first match wins)."""
        out: dict[str, list[str]] = {p: [] for p in self._parsed}  # type: ignore[attr-defined]
        for name in names:
            for pattern in self._parsed:  # type: ignore[attr-defined]
                if fnmatch.fnmatchcase(name, pattern):
                    out[pattern].append(name)
                    break
        return out


def resolve_policy(
    bits: Bits | str | BitsPolicy, overrides: Mapping[str, object] | None = None
) -> BitsPolicy:
    """The ``BitsPolicy`` of ``bits`` plus ``overrides`` (a policy carries its own overrides)."""
    if isinstance(bits, BitsPolicy):
        if overrides:
            raise ValueError("pass overrides inside the BitsPolicy or as `overrides`, not both")
        return bits
    return BitsPolicy(Bits.parse(bits), overrides or {})


def __getattr__(name: str) -> object:
    # ``apply_bits`` lives with the protocol it writes through (qsnn.bitwidth); importing it from
    # here still works without an import cycle.
    if name == "apply_bits":
        from .bitwidth import apply_bits

        return apply_bits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

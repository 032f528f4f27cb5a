"""Fixed-point formats of the integer program and the folding that produces them.

Every spiking layer computes an integer accumulator ``acc`` (a ``b_w``-bit weight code times
``b_in``-bit input levels, summed exactly). In the trained model the neuron's input current is
an affine function of it per output channel ``c`` (conv scale, batch norm and bias folded):

    I_t = A_c * acc_t + B_c,      u_t = h_t / theta = beta * u_{t-1}' + a_c * acc_t + b_c

with ``a_c = A_c / theta`` and ``b_c = B_c / theta`` (paper Eq. 6-7 divided by the threshold,
``beta = 1/tau``, ``u'`` the potential after reset). Dividing by ``a_c`` puts the membrane in
**accumulator units**, ``w = u / a_c``:

    w_t = beta * w_{t-1}' + acc_t + b_c / a_c,      k_t = clamp(floor(a_c * w_t), 0, L).

The integer membrane ``V = w * 2**F_c`` (int64, ``F_c`` fractional bits per channel) then needs
no multiplier at all:

    V_t  = floor(V_{t-1}' / 2**m) + acc_t * 2**F_c + C_c         (leak beta = 2**-m is a shift)
    k_t  = clamp(floor(d_c * V_t / Theta_c), 0, L)                (threshold comparison)
    V_t' = V_reset_c where k_t > 0, else V_t                      (hard reset)
    V_t' = V_t - d_c * k_t * Theta_c                              (soft reset)

with ``d_c = sign(a_c)`` (a **negative** batch-norm scale flips the comparison: the neuron fires
when ``V`` falls below ``-Theta``), ``Theta_c = round(2**F_c / |a_c|)`` the folded threshold,
``C_c = round(2**F_c * b_c / a_c)`` the folded bias and ``V_reset_c = round(2**F_c * v_reset /
(theta * a_c))``. ``F_c = max(0, ceil(THRESHOLD_BITS + log2 |a_c|))`` makes every threshold at
least ``2**THRESHOLD_BITS`` membrane LSBs wide, so one LSB is at most ``2**-24`` of a threshold.
A channel with ``a_c = 0`` (a zero batch-norm scale) ignores its input: its spike train is a
constant, precomputed.

Error bound, in units of the threshold (``u``): per step the bias rounding adds at most 1/2 LSB
and the floor of the leak shift at most 1 LSB; summed over the leak's memory that is
``e = (1/2 + [m > 0]) * sum_{i<T} beta**i (+ 1/2 for a rounded V_reset)`` LSB. The rounded
threshold changes ``u`` by ``|u| / (2 Theta)``. Near a firing decision (``|u| <= L + 1``):

    |u_int - u| <= (e + (L + 1) / 2) / Theta_min.

A spike can differ from the float model only where the float ``u`` lies that close to an integer
level; float32 evaluation of the trained model itself is off by about ``2**-24 * |u|``.

A residual neuron (``u_t = beta u' + a_c acc_t + a'_c acc'_t + b_c``: a second accumulator, a
shortcut conv or the identity levels, summed into the same membrane) takes as reference the
term of larger ``|a|`` per channel (``a_ref``, so ``d_c = sign(a_ref)``, ``F_c`` and ``Theta_c``
as above) and adds each term with an integer multiplier ``M_i,c = round(2**F_c a_i,c /
a_ref,c)`` (``2**F_c`` for the reference term, at most ``2**F_c`` in magnitude); each rounded
multiplier adds at most ``|acc_i| / 2`` LSB per step to the bound.

The output layer (logits) is ``y_c = A_c * ACC + B_c`` with ``ACC`` the accumulator summed over
the steps the readout averages. It is computed as ``Y = floor((ACC * M_c + Bo_c) / 2**S_c)``,
``logit = Y / 2**OUTPUT_FRAC_BITS``, with ``M_c = round(A_c * 2**(16 + S_c))`` chosen to have at
least 25 significant bits. Error: ``|logit - y| <= 2**-16 + (|ACC| / 2 + 1/2) * 2**-(16 + S_c)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GAIN_FRAC_BITS",
    "OUTPUT_FRAC_BITS",
    "THRESHOLD_BITS",
    "NeuronFixedPoint",
    "OutputFixedPoint",
    "fold_batch_norm",
    "leak_shift",
    "neuron_fixed_point",
    "output_fixed_point",
]

#: Every folded threshold spans at least ``2**THRESHOLD_BITS`` membrane LSBs.
THRESHOLD_BITS = 24
#: Fractional bits of the logits the program outputs.
OUTPUT_FRAC_BITS = 16
#: Fractional bits of the per-input-channel gains of the first layer (input normalization).
GAIN_FRAC_BITS = 24
#: Largest magnitude any int64 intermediate may reach (headroom below 2**63).
INT64_LIMIT = 2**62


def leak_shift(tau: float, where: str) -> int:
    """``m`` with ``tau = 2**m`` (leak ``beta = 2**-m`` is a right shift); else ``ValueError``."""
    m = round(math.log2(tau)) if tau >= 1 else -1
    if m < 0 or 2.0**m != float(tau):
        raise ValueError(
            f"{where}: integer deployment needs tau = 2**m (leak by shift: 1, 2, 4, ...); "
            f"got tau={tau:g}"
        )
    return m


def fold_batch_norm(
    scale: np.ndarray, shift: np.ndarray, bn_weight: np.ndarray | None, bn_bias: np.ndarray | None,
    mean: np.ndarray, var: np.ndarray, eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode batch norm into ``z = scale * acc + shift`` (float64, per channel).

    ``bn(z) = gamma * (z - mu) / sqrt(var + eps) + beta = (gamma / sigma) * scale * acc
    + (gamma / sigma) * (shift - mu) + beta``.
    """
    gamma = np.ones_like(mean) if bn_weight is None else bn_weight
    beta = np.zeros_like(mean) if bn_bias is None else bn_bias
    g = gamma / np.sqrt(var + eps)
    return g * scale, g * (shift - mean) + beta


@dataclass
class NeuronFixedPoint:
    """Per-channel integer neuron parameters (see the module docstring)."""

    direction: np.ndarray  # int8 [M]: sign(a_c); 0 for a channel that ignores its input
    threshold: np.ndarray  # int64 [M]: Theta_c
    frac_bits: np.ndarray  # int64 [M]: F_c
    bias: np.ndarray  # int64 [M]: C_c
    v_reset: np.ndarray  # int64 [M]: V_reset_c
    const_levels: np.ndarray  # int64 [M, T]: spike levels of the a_c = 0 channels
    bound: float  # |u_int - u| near a firing decision, in units of theta
    max_membrane: float  # bound on |V| (checked below INT64_LIMIT)
    multipliers: np.ndarray | None = None  # int64 [terms, M] (residual neurons only)


def _const_train(b: float, beta: float, levels: int, steps: int, hard: bool, u_reset: float):
    u, out = 0.0, []
    for _ in range(steps):
        u = beta * u + b
        k = min(max(math.floor(u), 0), levels)
        out.append(k)
        u = (u_reset if k > 0 else u) if hard else u - k
    return out


def neuron_fixed_point(
    a: np.ndarray,
    b: np.ndarray,
    *,
    levels: int,
    steps: int,
    shift: int,
    hard: bool,
    u_reset: float,
    max_acc: float,
    acc_error: float = 0.0,
    where: str = "layer",
    extra: tuple[tuple[np.ndarray, float], ...] = (),
) -> NeuronFixedPoint:
    """Fold ``u_t = beta u_{t-1} + a acc_t + b`` (threshold units) into integer parameters.

    Args:
        a, b: float64 ``[M]`` scale and offset of the current in units of the threshold.
        levels: ``L = 2**b_s - 1``; steps: ``T``; shift: ``m`` with ``beta = 2**-m``.
        hard: hard reset (else soft); u_reset: ``v_reset / theta``.
        max_acc: largest ``|acc|`` the layer can produce (for the int64 range check).
        acc_error: largest error of ``acc`` itself in accumulator units (first layer: rounded
            input-normalization gains), added to the bound.
        extra: further terms ``(a_i, max_acc_i)`` summed into the same membrane (a residual
            neuron, module doc); then ``multipliers`` holds one integer row per term, ``a``'s
            first.
    """
    beta = 2.0**-shift
    terms = [(a, max_acc), *extra]
    if extra:  # the reference term per channel: the largest |a_i|
        stack = np.stack([t[0] for t in terms])  # [terms, M]
        a = np.take_along_axis(stack, np.abs(stack).argmax(0)[None], 0)[0]
    mag = np.abs(a)
    live = mag > 0
    frac = np.zeros(a.shape, dtype=np.int64)
    frac[live] = np.maximum(0, np.ceil(THRESHOLD_BITS + np.log2(mag[live]))).astype(np.int64)
    pow2 = np.ldexp(1.0, frac)  # 2**F_c
    threshold = np.ones(a.shape, dtype=np.int64)
    bias = np.zeros(a.shape, dtype=np.int64)
    reset = np.zeros(a.shape, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold[live] = np.round(pow2[live] / mag[live]).astype(np.int64)
        bias[live] = np.round(pow2[live] * b[live] / a[live]).astype(np.int64)
        reset[live] = np.round(pow2[live] * u_reset / a[live]).astype(np.int64)
    direction = np.sign(a).astype(np.int8)
    const = np.zeros((a.shape[0], steps), dtype=np.int64)
    for c in np.flatnonzero(~live):
        const[c] = _const_train(float(b[c]), beta, levels, steps, hard, u_reset)
    memory = float(steps) if shift == 0 else sum(beta**i for i in range(steps))
    lsb_error = (0.5 + (1.0 if shift > 0 else 0.0)) * memory + (0.5 if u_reset else 0.0)
    multipliers = None
    per_step_acc = max_acc * pow2
    if extra:
        multipliers = np.zeros((len(terms), a.shape[0]), dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, (a_i, _) in enumerate(terms):
                multipliers[i, live] = np.round(pow2[live] * a_i[live] / a[live]).astype(np.int64)
        lsb_error += 0.5 * sum(m for _, m in terms) * memory  # rounded multipliers
        per_step_acc = sum(m * np.abs(multipliers[i]).astype(np.float64)
                           for i, (_, m) in enumerate(terms))
    bound = 0.0
    max_membrane = 0.0
    if live.any():
        theta_min = float(threshold[live].min())
        acc_lsb = acc_error * float(pow2[live].max()) * memory
        bound = (lsb_error + acc_lsb + 0.5 * (levels + 1)) / theta_min
        per_step = per_step_acc[live] + np.abs(bias[live]).astype(np.float64)
        max_membrane = float((per_step * memory + np.abs(reset[live]) + threshold[live]).max())
    if max_membrane >= INT64_LIMIT:
        raise ValueError(
            f"{where}: the integer membrane may reach {max_membrane:.3g} >= 2**62; "
            "the layer's scales are too far apart for int64"
        )
    return NeuronFixedPoint(direction, threshold, frac, bias, reset, const, bound, max_membrane,
                            multipliers)


@dataclass
class OutputFixedPoint:
    """Per-class integer output parameters: ``Y = floor((ACC * M + Bo) / 2**S)``."""

    multiplier: np.ndarray  # int64 [M]
    bias: np.ndarray  # int64 [M]
    shift: np.ndarray  # int64 [M]


def output_fixed_point(a: np.ndarray, b: np.ndarray, max_acc: float, where: str = "output"):
    """``y = a * ACC + b`` (float64 ``[M]``) as integer multipliers with ``OUTPUT_FRAC_BITS``."""
    mag = np.abs(a)
    shift = np.zeros(a.shape, dtype=np.int64)
    live = mag > 0
    shift[live] = np.maximum(
        0, 24 - OUTPUT_FRAC_BITS - np.floor(np.log2(mag[live]))
    ).astype(np.int64)
    scale = np.ldexp(1.0, OUTPUT_FRAC_BITS + shift)
    multiplier = np.round(a * scale).astype(np.int64)
    bias = np.round(b * scale).astype(np.int64)
    peak = float((max_acc * np.abs(multiplier) + np.abs(bias)).max()) if a.size else 0.0
    if peak >= INT64_LIMIT:
        raise ValueError(f"{where}: the output may reach {peak:.3g} >= 2**62 in int64")
    return OutputFixedPoint(multiplier, bias, shift)

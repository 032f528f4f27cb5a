"""The spike-pattern neuron: one module for multi-bit SNNs, binary LIF and quantized ANNs.

Paper Eq. 6-7 (Shen et al., CVPR 2024), with ``L = 2**b_s - 1`` non-zero levels:

    h_t = beta * v_{t-1} + I_t                     (charge; beta = 1/tau, v_0 = 0)
    k_t = clamp(floor(h_t / theta), 0, L)          (fire: a b_s-bit integer level)
    s_t = k_t * theta                              (the spike pattern sent downstream)
    v_t = v_reset        where k_t > 0, else h_t   (hard reset)
    v_t = h_t - k_t * theta                        (soft reset)

``b_s = 1`` is the binary LIF neuron of Eq. 1; ``T = 1`` is the quantized ANN activation of Eq. 2,
``a = clamp(floor(x / Delta), 0, L) * Delta`` with ``Delta = theta``. There is one implementation.

Gradients use a surrogate ``g(u)`` for the staircase (``qsnn.surrogate``) and treat the reset as
constant (the usual ``detach_reset``), so backpropagation through time is

    dL/dh_t = dL/ds_t * g(u_t) + dL/dv_t * m_t,   dL/dv_{t-1} = beta * dL/dh_t,   dL/dI_t = dL/dh_t

with ``u_t = h_t / theta`` and ``m_t = [k_t == 0]`` (hard) or ``1`` (soft). The ``T`` loop runs
inside one ``torch.autograd.Function`` whose outputs and input gradients are allocated with
``empty_like`` so they keep the input's memory layout (channels-last stays channels-last), and
``T = 1`` has a loop-free path.

State is explicit: every forward call starts from ``v = 0`` and nothing outlives it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from . import _neuron_kernels as _kernels
from .allocation import LayerBits, check_spike_bits
from .level_scale import LevelRule, LevelScale
from .precision import spike_dtype
from .surrogate import Surrogate

__all__ = [
    "LIFNeuron",
    "QuantActivation",
    "SpikeLevels",
    "SpikeNeuron",
    "spike_pattern_neuron",
    "spike_pattern_step",
]

ResetMode = Literal["hard", "soft"]
Kernel = Literal["auto", "eager", "fused"]
KERNELS = ("auto", "eager", "fused")


def spike_pattern_step(
    current: Tensor,
    v: Tensor | None,
    *,
    bits_s: int,
    theta: float | Tensor = 1.0,
    beta: float = 0.5,
    reset: ResetMode = "hard",
    v_reset: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One step of the neuron as a pure function: ``(k_t, v_t) = step(I_t, v_{t-1})``.

    ``v = None`` means the zero initial state. Returns the integer level ``k_t`` (as a float
    tensor of whole numbers) and the membrane potential after reset. Forward semantics only; the
    module adds the surrogate gradient. Spikes are ``s_t = k_t * theta``.
    """
    levels = (1 << bits_s) - 1
    _, k, v_next = _kernels.membrane_step(current, v, theta, beta, v_reset, levels, reset == "hard")
    return k, v_next


class _SpikePatternFn(torch.autograd.Function):
    """Multi-step neuron over ``x: [T, B, ...]``; returns spikes ``s = k * theta`` in
    ``out_dtype``."""

    @staticmethod
    def forward(ctx, x, theta, beta, levels, hard, v_reset, surrogate, kernel, out_dtype):  # type: ignore[override]
        learn_theta = isinstance(theta, Tensor)
        acc = _kernels.membrane_dtype(x.dtype)
        theta_t = (
            theta.detach().to(x.device, acc)
            if learn_theta
            else torch.tensor(float(theta), dtype=acc, device=x.device)
        )
        rows, strides = _kernels.as_time_rows(x)  # [T, B, ...] -> [T, N]
        steps = x.shape[0]
        training = any(ctx.needs_input_grad)
        numel = steps * rows.shape[1]
        spikes = _kernels.run(
            "forward", kernel, training, numel, rows, steps, theta_t, beta, v_reset, levels, hard,
            out_dtype,
        )
        ctx.args = (beta, v_reset, levels, hard, surrogate, kernel, learn_theta)
        ctx.shape, ctx.strides = x.shape, strides
        ctx.save_for_backward(rows, theta_t)
        return _kernels.from_time_rows(spikes, x.shape, strides)  # [T, N] -> [T, B, ...]

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        rows, theta_t = ctx.saved_tensors
        beta, v_reset, levels, hard, surrogate, kernel, learn_theta = ctx.args
        if grad_out.stride() != ctx.strides:
            grad_out = torch.empty_strided(
                ctx.shape, ctx.strides, dtype=grad_out.dtype, device=grad_out.device
            ).copy_(grad_out)
        steps, step_numel = ctx.shape[0], rows.shape[1]
        grad_rows = grad_out.as_strided(
            (steps, step_numel), (step_numel, 1), grad_out.storage_offset()
        )  # [T, B, ...] -> [T, N]
        grad_x, grad_theta = _kernels.run(
            "backward",
            kernel,
            True,
            steps * step_numel,
            rows,
            steps,
            grad_rows,
            theta_t,
            beta,
            v_reset,
            levels,
            hard,
            surrogate,
            learn_theta and ctx.needs_input_grad[1],
        )
        grad_x = _kernels.from_time_rows(grad_x, ctx.shape, ctx.strides)
        if grad_theta is not None:
            grad_theta = grad_theta.to(rows.dtype if rows.dtype == torch.float64 else torch.float32)
        return grad_x, grad_theta, None, None, None, None, None, None, None


def spike_pattern_neuron(
    x: Tensor,
    *,
    bits_s: int,
    theta: float | Tensor = 1.0,
    tau: float = 2.0,
    reset: ResetMode = "hard",
    v_reset: float = 0.0,
    surrogate: Surrogate | str | None = None,
    kernel: Kernel = "auto",
) -> Tensor:
    """Functional multi-step neuron: ``x: [T, B, ...] -> spikes s: [T, B, ...]`` (Eq. 6-7).

    Under a bf16/fp16 autocast spikes come in that dtype when it holds every ``k * theta``
    exactly, else in float32 (``qsnn.precision``; a tensor ``theta`` counts as unknown);
    without autocast in ``x``'s dtype.
    """
    _check_args(bits_s, tau, reset, theta, kernel)
    if x.dim() < 2:
        raise ValueError(
            f"expected input [T, B, ...] with at least 2 dims; got shape {tuple(x.shape)}"
        )
    levels = (1 << bits_s) - 1
    known = None if isinstance(theta, Tensor) else float(theta)
    return _SpikePatternFn.apply(
        x,
        theta,
        1.0 / tau,
        levels,
        reset == "hard",
        float(v_reset),
        Surrogate.parse(surrogate),
        kernel,
        spike_dtype(x, known, levels),
    )


def _check_args(bits_s: object, tau: object, reset: object, theta: object, kernel: object) -> None:
    check_spike_bits(bits_s, "bits_s")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if (not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau >= 1.0
            or not math.isfinite(tau)):
        raise ValueError(
            f"tau must be a finite number >= 1 (beta = 1/tau in (0, 1]); got {tau!r}"
        )
    if reset not in ("hard", "soft"):
        raise ValueError(f"reset must be 'hard' or 'soft'; got {reset!r}")
    if isinstance(theta, Tensor):
        if theta.numel() != 1:
            raise ValueError(f"theta must be a scalar; got shape {tuple(theta.shape)}")
    elif not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
        raise ValueError(f"theta (threshold) must be a number > 0; got {theta!r}")


class SpikeLevels:
    """What every module that emits ``b_s``-bit spike levels shares: its width ``bits_s``, read
    by ``qsnn.profile`` (``output_bits``) and set by ``qsnn.apply_bits`` (``set_layer_bits``)."""

    bits_s: int

    @property
    def levels(self) -> int:
        """Non-zero spike levels ``L = 2**b_s - 1``."""
        return (1 << self.bits_s) - 1

    @property
    def output_bits(self) -> int:
        """Width of this module's output in bits of integer levels (read by ``qsnn.profile``)."""
        return self.bits_s

    def set_layer_bits(self, bits: LayerBits) -> None:
        """Take ``b_s`` from a per-layer allocation (see ``qsnn.apply_bits``)."""
        self.bits_s = check_spike_bits(bits.s, "bits_s")


class SpikeNeuron(SpikeLevels, nn.Module):
    """Multi-step spike-pattern neuron (paper Eq. 6-7) on ``[T, B, ...]`` input.

    Args:
        bits_s: spike bits ``b_s`` in 1..16; outputs take ``2**b_s`` values ``k * theta``.
        tau: membrane time constant ``tau >= 1``, leak ``beta = 1/tau``; ``tau = 1`` keeps the
            whole potential (integrate-and-fire), the default 2 halves it every step.
        theta: firing threshold and level step ``theta > 0`` (its meaning per ``level_scale``).
        level_scale: how the step is set (``qsnn.level_scale``): ``"fixed"`` (``theta`` at
            every ``b_s``), ``"scaled"`` (``theta * 2**(1 - b_s)``) or ``"data"`` (LSQ's
            ``2 * mean|I| / sqrt(L)`` on the first training batch).
        learn_theta: train the step (log domain, LSQ gradient scale) from its rule's value.
        pow2_theta: round computed and learned steps to powers of two (exact bf16 spikes up
            to ``b_s = 8``; a fixed, untrained ``theta`` is used as given).
        reset: ``"hard"`` (to ``v_reset`` where a spike fired, the paper's choice) or ``"soft"``
            (subtract ``k * theta``).
        v_reset: hard-reset potential.
        surrogate: ``Surrogate``, ``"shape[:width]"`` or ``None`` for the default triangle.
        kernel: ``"eager"`` (plain torch ops), ``"fused"`` (one ``torch.compile`` kernel per
            direction; needs a C++ toolchain) or ``"auto"`` (fused for calls of at least
            ``2**20`` elements in training, falling back to eager if compiling fails). Same
            equations; results agree up to float rounding of the membrane update.
        level: a ``LevelScale`` to use (and share with other modules) instead of building one
            from ``theta``, ``level_scale``, ``learn_theta`` and ``pow2_theta``.

    Under bf16 autocast spikes are exact at every ``b_s``: they come in bf16 when it holds every
    ``k * theta`` (``b_s <= 8`` on a power-of-two step), else in float32, which
    ``QuantConv2d``/``QuantLinear`` read exactly (``qsnn.precision``).

    Every call starts from ``v = 0``; nothing is kept between calls. (A step set from data or
    trained is a parameter of the layer, like a weight, not membrane state.)
    """

    def __init__(
        self,
        bits_s: int = 1,
        *,
        tau: float = 2.0,
        theta: float = 1.0,
        level_scale: LevelRule = "fixed",
        learn_theta: bool = False,
        pow2_theta: bool = True,
        reset: ResetMode = "hard",
        v_reset: float = 0.0,
        surrogate: Surrogate | str | None = None,
        kernel: Kernel = "auto",
        level: LevelScale | None = None,
    ) -> None:
        super().__init__()
        _check_args(bits_s, tau, reset, theta, kernel)
        if (isinstance(v_reset, bool) or not isinstance(v_reset, (int, float))
                or not math.isfinite(v_reset)):
            raise ValueError(f"v_reset must be a finite number; got {v_reset!r}")
        self.bits_s = bits_s
        self.tau = float(tau)
        self.reset = reset
        self.v_reset = float(v_reset)
        self.surrogate = Surrogate.parse(surrogate)
        self.kernel = kernel
        if level is None:
            level = LevelScale(theta, rule=level_scale, learn=learn_theta, pow2=pow2_theta)
        elif not isinstance(level, LevelScale):
            raise ValueError(f"level must be a LevelScale; got {type(level).__name__}")
        self.level = level

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # Checkpoints from before level scales stored a learned threshold as `theta`.
        old = state_dict.pop(prefix + "theta", None)
        if old is not None and self.level.learn:
            state_dict.setdefault(prefix + "level.log2_theta", old.detach().abs().log2())
            state_dict.setdefault(prefix + "level.initialized", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def theta(self) -> float:
        """The current level step (threshold) as a float: what ``to_levels``, ``qsnn.profile``
        and deployment use."""
        return self.level.value(self.bits_s)

    def step(self) -> float | Tensor:
        """The level step this neuron fires with (a tensor when stored or learned)."""
        return self.level.step(self.bits_s)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects [T, B, ...] input; got shape {tuple(x.shape)}"
            )
        if self.training and not self.level.ready:
            self.level.initialize(x, self.bits_s)
        features = x[0, 0].numel()
        theta = self.level.step(self.bits_s, features)
        out_dtype = spike_dtype(x, self.level.exact_theta(self.bits_s), self.levels)
        return _SpikePatternFn.apply(
            x,
            theta,
            1.0 / self.tau,
            self.levels,
            self.reset == "hard",
            self.v_reset,
            self.surrogate,
            self.kernel,
            out_dtype,
        )

    def to_levels(self, spikes: Tensor) -> Tensor:
        """Integer levels ``k_t`` (int32) of spikes this neuron produced: ``round(s / theta)``."""
        with torch.no_grad():
            return torch.round(spikes.float() / self.theta).to(torch.int32)

    def forward_levels(self, x: Tensor) -> Tensor:
        """The integer levels ``k_t`` (int32) the neuron fires for ``x`` (what hardware sends)."""
        with torch.no_grad():
            return self.to_levels(self.forward(x))

    def extra_repr(self) -> str:
        return (
            f"bits_s={self.bits_s}, tau={self.tau:g}, theta={self.theta:g}, "
            f"reset={self.reset!r}, surrogate={self.surrogate.shape}:{self.surrogate.width:g}"
        )


class LIFNeuron(SpikeNeuron):
    """Binary leaky integrate-and-fire neuron (paper Eq. 1): ``SpikeNeuron`` with ``b_s = 1``."""

    def __init__(self, *, tau: float = 2.0, theta: float = 1.0, **kwargs) -> None:
        super().__init__(1, tau=tau, theta=theta, **kwargs)


class QuantActivation(SpikeNeuron):
    """Quantized ANN activation (paper Eq. 2): ``clamp(floor(x / Delta), 0, 2**b - 1) * Delta``.

    The same neuron at ``T = 1``; takes input without a time dimension (``[B, ...]``).
    """

    def __init__(self, bits: int = 4, *, delta: float = 1.0, **kwargs) -> None:
        super().__init__(bits, theta=delta, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.unsqueeze(0)).squeeze(0)

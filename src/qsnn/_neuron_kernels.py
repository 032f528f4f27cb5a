"""Kernels of qsnn's level ops: the multi-step spike-pattern neuron (see ``qsnn.neurons`` for
the equations) and the restricted add of two spike tensors (``qsnn.models.SEWAdd``).

The neuron is elementwise, so it runs on the memory of ``x: [T, B, ...]`` seen as ``[T, N]``:
each step's block of ``N`` elements keeps whatever layout it has (contiguous, channels-last, or
one block broadcast over ``T``), and outputs and gradients get the same layout.

``forward_kernel`` and ``backward_kernel`` are plain torch functions. They run eagerly, or as one
fused ``torch.compile`` kernel each when the tensor is large enough to matter: a naive loop of
autograd ops reads and writes every element a dozen times per step, the fused kernel once.
Backward recomputes the membrane from ``x`` instead of storing it (one read instead of a write
and a read). Charge, fire and reset are written once, in ``membrane_step``, and used by both
kernels and by ``qsnn.neurons.spike_pattern_step``.

The fused path needs a working C++ toolchain. A variant (kernel, ``T``, dtypes, ``b_s``,
reset) that fails to compile is logged once and runs eagerly from then on; other variants still
try. Dynamo's recompile limit is raised only around the first call of each new variant, not
for the process.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .surrogate import Surrogate

log = logging.getLogger(__name__)

#: Smallest per-call element count (``T * N``) for which ``kernel="auto"`` uses the fused
#: kernel: below it the one-off compile (seconds per shape family) is not worth it.
FUSED_MIN_NUMEL = 1 << 20


def _dense_step_layout(step: Tensor) -> bool:
    """True when one step's block is dense and non-overlapping (any dimension order)."""
    if step.numel() <= 1:
        return True
    dims = sorted((s, n) for s, n in zip(step.stride(), step.shape, strict=True) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def as_time_rows(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``x: [T, B, ...]`` -> (rows, strides of a dense ``[T, B, ...]`` output).

    ``rows`` is a contiguous ``[T, N]`` view of ``x``'s memory, or ``[1, N]`` when ``x`` is one
    step broadcast over ``T`` (``StaticEncoder``), so the fused kernel sees one stride pattern.
    Copies ``x`` only when a step is not a dense block (then it becomes contiguous).
    """
    steps = x.shape[0]
    step_numel = math.prod(x.shape[1:])
    if not _dense_step_layout(x[0]) or x.stride(0) not in (0, step_numel):
        x = x.contiguous()
    out_strides = (step_numel, *x.stride()[1:])
    kept = 1 if x.stride(0) == 0 and steps > 1 else steps
    rows = x.as_strided((kept, step_numel), (step_numel, 1), x.storage_offset())  # -> [T|1, N]
    return rows, out_strides


def from_time_rows(rows: Tensor, shape: torch.Size, strides: tuple[int, ...]) -> Tensor:
    """Inverse of ``as_time_rows`` for a dense ``[T, N]`` result: ``[T, N] -> [T, B, ...]``."""
    return rows.as_strided(shape, strides)


def membrane_dtype(dtype: torch.dtype) -> torch.dtype:
    """The membrane is float32 for half inputs (bf16 would drift), else the input's dtype."""
    return torch.promote_types(dtype, torch.float32)


def _step(x: Tensor, t: int) -> Tensor:
    return x[t] if x.shape[0] > 1 else x[0]  # [1, N]: one step broadcast over T


def membrane_step(
    current: Tensor,
    v: Tensor | None,
    theta: Tensor | float,
    beta: float,
    v_reset: float,
    levels: int,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of paper Eq. 6-7, the only place it is written: ``(u_t, k_t, v_t)`` from the
    input current ``I_t`` and ``v_{t-1}`` (``None``: the zero initial state).

        h_t = beta * v_{t-1} + I_t,   u_t = h_t / theta,   k_t = clamp(floor(u_t), 0, L)
        v_t = v_reset where k_t > 0 else h_t (hard),   v_t = h_t - k_t * theta (soft)

    ``k_t > 0`` is ``u_t >= 1`` (``floor(u) >= 1``), written as the latter so the reset does
    not wait for the clamp.
    """
    h = current if v is None else v * beta + current
    u = h / theta
    k = torch.clamp(torch.floor(u), 0, levels)
    if hard:
        v_next = torch.where(u >= 1, v_reset, h)  # a scalar: no [N] buffer of v_reset
    else:
        v_next = h - k * theta
    return u, k, v_next


def forward_kernel(
    x: Tensor,
    steps: int,
    theta: Tensor,
    beta: float,
    v_reset: float,
    levels: int,
    hard: bool,
    out_dtype: torch.dtype,
) -> Tensor:
    """Spikes ``s = k * theta`` (in ``out_dtype``) for ``x: [T, N]``; ``theta`` has the membrane
    dtype."""
    v = None
    spikes = []
    for t in range(steps):
        _, k, v = membrane_step(_step(x, t).to(theta.dtype), v, theta, beta, v_reset, levels, hard)
        spikes.append((k * theta).to(out_dtype))  # cast per step: no float32 [T, N] buffer
    return torch.stack(spikes)  # T x [N] -> [T, N]


def backward_kernel(
    x: Tensor,
    steps: int,
    grad_s: Tensor,
    theta: Tensor,
    beta: float,
    v_reset: float,
    levels: int,
    hard: bool,
    surrogate: Surrogate,
    need_theta: bool,
) -> tuple[Tensor, Tensor | None]:
    """BPTT with the reset detached, recomputing ``u_t = h_t / theta`` from ``x: [T, N]``."""
    us, ks = [], []
    v = None
    for t in range(steps):
        u, k, v = membrane_step(_step(x, t).to(theta.dtype), v, theta, beta, v_reset, levels, hard)
        us.append(u)
        if need_theta:  # only d/dtheta reads the levels; eagerly, keeping them costs memory
            ks.append(k)
    grads: list[Tensor] = [x[0]] * steps
    grad_theta = None
    grad_v = None
    for t in reversed(range(steps)):
        u = us[t]
        g = surrogate.grad(u, levels)
        gs = grad_s[t].to(theta.dtype)
        grad_h = gs * g  # dL/ds * ds/dh = dL/ds * theta * g(u) / theta
        if grad_v is not None:
            # The detached reset passes dL/dv_t to h_t where it did not fire (hard) or always.
            grad_h = grad_h + (torch.where(u < 1, grad_v, 0.0) if hard else grad_v)
        grads[t] = grad_h.to(x.dtype)
        if need_theta:
            term = (gs * (ks[t] - g * u)).sum()  # ds/dtheta = k + theta * dk/dtheta = k - g(u) u
            grad_theta = term if grad_theta is None else grad_theta + term
        grad_v = grad_h * beta
    return torch.stack(grads), grad_theta  # T x [N] -> [T, N]


def restricted_add_kernel(
    a: Tensor, b: Tensor, theta: Tensor, levels: int, out_dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """``clamp(round(a/theta) + round(b/theta), 0, L) * theta`` (in ``out_dtype``) and the mask
    where the clamp is open (the straight-through gradient's support); levels are summed in the
    dtype of ``theta`` (at least float32: exact for whole levels)."""
    acc = theta.dtype
    k = torch.round(a.to(acc) / theta) + torch.round(b.to(acc) / theta)
    inside = (k >= 0) & (k <= levels)
    return (torch.clamp(k, 0, levels) * theta).to(out_dtype), inside


_KERNELS = {
    "forward": forward_kernel,
    "backward": backward_kernel,
    "restricted_add": restricted_add_kernel,
}
#: Graphs each kernel may keep: every (T, b_s, reset, dtype) is its own graph, and a sweep or a
#: zoo test meets more than dynamo's default of 8 per function. A variant here may hold more
#: than one graph: dynamo specializes sizes of 1 (a ``[1, N]`` input broadcast over ``T``), so
#: a known variant can still recompile, and every call runs under this limit (at dynamo's 8
#: such a call fell back to eager: a learned-step ``1/1/4`` model stepped 2.5x slower after
#: eleven other models in one process).
_FUSED_VARIANTS = 64


def _variant(name: str, args: tuple) -> tuple:
    """What makes a new graph: the kernel, the dtypes and Python constants of its arguments
    (shapes are dynamic)."""
    return (name, *(a.dtype if isinstance(a, Tensor) else a for a in args))


class FusedKernels:
    """The compiled kernels and what is known about their variants: compiled ones run fused,
    ones that failed to compile run eagerly (each failure is logged once)."""

    def __init__(self) -> None:
        self.compiled: dict[str, object] = {}
        self.ready: set[tuple] = set()
        self.failed: dict[tuple, str] = {}

    def __call__(self, name: str, args: tuple, required: bool):
        key = _variant(name, args)
        if key in self.failed:
            return _KERNELS[name](*args)
        if name not in self.compiled:
            self.compiled[name] = torch.compile(_KERNELS[name], dynamic=True)
        if key in self.ready:
            with torch._dynamo.config.patch(recompile_limit=_FUSED_VARIANTS):
                return self.compiled[name](*args)
        # A new variant compiles now: the first training steps take seconds, not milliseconds.
        log.info("compiling the fused %s neuron kernel for %s (once per process and variant; "
                 "the first steps are slow meanwhile)", name, _describe(key[1:]))  # fmt: skip
        started = time.perf_counter()
        try:
            with torch._dynamo.config.patch(recompile_limit=_FUSED_VARIANTS):
                out = self.compiled[name](*args)
        except Exception as err:  # a missing compiler surfaces as many exception types
            if required:
                raise
            self.failed[key] = f"{type(err).__name__}: {err}"
            log.warning("fused %s kernel unavailable for %s (%s); this variant runs eagerly",
                        name, key[1:], self.failed[key])
            return _KERNELS[name](*args)
        self.ready.add(key)
        log.info("compiled the fused %s neuron kernel in %.1f s", name,
                 time.perf_counter() - started)  # fmt: skip
        return out


def _describe(variant: tuple) -> str:
    """The dtypes and constants of a kernel variant, short (``float32, 4, hard, ...``)."""
    return ", ".join(str(v).removeprefix("torch.") for v in variant)


#: The process's compiled-kernel cache (compiling is per process; the cache holds no setting).
FUSED = FusedKernels()


def run(name: str, kernel: str, training: bool, numel: int, *args):
    """Run kernel ``name`` (``forward``, ``backward``, ``restricted_add``) on ``args``, eagerly
    or fused, per ``kernel`` policy; ``numel`` is the number of elements it computes.

    ``auto`` fuses large calls of a training step only: the one-off compile (tens of seconds
    of CPU per process) pays off over thousands of steps, not over an evaluation pass.
    ``fused`` raises if the kernel cannot compile.
    """
    # Under a dispatch mode (qsnn.profile watching every op) the kernel must stay eager.
    watched = _get_current_dispatch_mode() is not None
    fused = not watched and (
        kernel == "fused" or (kernel == "auto" and training and numel >= FUSED_MIN_NUMEL)
    )
    if fused:
        return FUSED(name, args, required=kernel == "fused")
    return _KERNELS[name](*args)

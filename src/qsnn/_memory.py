"""Will it fit? Estimate the activation memory of a forward pass before running it.

A spiking model's activations grow with ``T`` and the batch: ``qsnn profile`` or ``qsnn hw`` at
``T = 100000`` would allocate ``[T*B, C, H, W]`` tensors until the machine gives out. The
estimate here runs the model twice on **one sample**, at ``T = 1`` and ``T = 2`` (every
``StaticEncoder``'s steps set for the run and restored; time-major input sliced to its first
steps), and follows, under a dispatch mode, every tensor storage an op creates until it is
freed. The figure is the high point of the bytes alive at once:

- ``autograd=False``: a forward pass under ``torch.no_grad`` (``profile``, ``hw``, evaluation);
- ``autograd=True``: a forward pass that records the graph (the model in eval mode, so batch
  norm statistics do not move), at its end, when every tensor saved for backward is alive,
  plus twice the largest activation for the gradients the backward pass adds.

Each is fitted per sample as ``fixed + per_step * T`` (``per_step``: the difference of the two
runs; a stem computed once is in ``fixed``) and scaled by the batch:
``bytes(T, B) = B * (fixed + per_step * T)``. Not included: parameters, gradients of
parameters, optimizer state, the input itself, and scratch memory inside one op (convolution
workspaces). It is an estimate, good to a small factor, to refuse what cannot possibly fit, not
a guarantee that what passes fits.

``check_fits(what, need_bytes, device)`` compares a need with what the device has available
(CPU: ``MemAvailable`` of ``/proc/meminfo``, else ``sysconf``, lowered to a cgroup-v2 limit;
CUDA: free device memory) and raises :class:`MemoryLimitError` (a ``ValueError``: the CLI
prints it as one line)::

    from qsnn._memory import activation_bytes, check_fits
    est = activation_bytes(model, x, autograd=True)     # one sample, at T = 1 and 2
    if est is not None:
        check_fits(f"training at T={T}, batch {B}", est.bytes(T, B), device)
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "ActivationEstimate",
    "MemoryLimitError",
    "ModelMemoryCheck",
    "activation_bytes",
    "at_time_steps",
    "available_bytes",
    "check_fits",
    "format_bytes",
    "time_step_modules",
]

#: Share of the available memory a call may plan to use (the rest: the allocator, the input,
#: the interpreter, other processes' growth).
HEADROOM = 0.9


class MemoryLimitError(ValueError):
    """A call would need more memory than the device has available; the one-line message says
    how much it needs and how much there is."""


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"1.50 GiB"`` (B, KiB, MiB, GiB, TiB)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """What a cgroup-v2 memory limit leaves (containers), when there is one."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            current = int(f.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError):
        return None


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory a new allocation on ``device`` can use now, or ``None`` when unknown.

    CPU: ``MemAvailable`` of ``/proc/meminfo`` (else ``SC_AVPHYS_PAGES * SC_PAGE_SIZE``),
    lowered to what a cgroup-v2 limit leaves; CUDA: ``torch.cuda.mem_get_info`` free bytes.
    Other devices: ``None`` (no check).
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_available()
    return avail if limit is None else min(avail, limit)


def check_fits(
    what: str,
    need_bytes: float,
    device: torch.device | str | None = None,
    *,
    available: int | None = None,
) -> None:
    """Raise :class:`MemoryLimitError` when ``need_bytes`` exceeds ``HEADROOM`` (90 %) of the
    memory available on ``device`` (``available`` overrides the measurement).

    ``what`` starts the message: ``"profile at T=100000, batch 2"`` gives ``profile at
    T=100000, batch 2 needs about 61.04 GiB of activations; this machine has 19.53 GiB
    available``. Unknown availability (``None``) passes.
    """
    avail = available_bytes(device) if available is None else available
    if avail is None or need_bytes <= HEADROOM * avail:
        return
    dev = torch.device("cpu" if device is None else device)
    where = "this machine has" if dev.type == "cpu" else f"{dev} has"
    raise MemoryLimitError(
        f"{what} needs about {format_bytes(need_bytes)} of activations; {where} "
        f"{format_bytes(avail)} available (lower T or the batch size)"
    )


@dataclass(frozen=True)
class ActivationEstimate:
    """Activation bytes per sample as ``fixed + per_step * T`` (see the module docstring)."""

    fixed: int
    """Bytes per sample that do not grow with ``T`` (a stem computed once)."""
    per_step: int
    """Bytes per sample and time step."""
    autograd: bool
    """Measured with the autograd graph recorded (a training step) or without (inference)."""

    def bytes(self, steps: int, batch: int) -> int:
        """Activation bytes at ``T = steps`` for ``batch`` samples."""
        return batch * (self.fixed + self.per_step * steps)


class _Live(TorchDispatchMode):
    """Follows the tensor storages ops create (not parameters, buffers or the input) until they
    are freed: ``live`` bytes now, ``peak`` the most at once, ``largest`` one storage."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        super().__init__()
        # Storages that exist before the run: views of them are not new memory.
        self._weights = {_ptr(t) for t in (*model.parameters(), *model.buffers(), x)}
        self._tracked: set[int] = set()
        self.live = 0
        self.peak = 0
        self.largest = 0

    def _free(self, ptr: int, size: int) -> None:
        self._tracked.discard(ptr)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if not size or ptr in self._tracked or ptr in self._weights:
                continue
            self._tracked.add(ptr)
            self.live += size
            self.largest = max(self.largest, size)
            weakref.finalize(storage, self._free, ptr, size)
        self.peak = max(self.peak, self.live)
        return out


def _ptr(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def time_step_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose output spans ``T`` steps and that take a new ``T``
    (``set_time_steps`` and ``output_time_steps``: every ``StaticEncoder``)."""
    return [m for m in model.modules()
            if callable(getattr(m, "set_time_steps", None)) and
            isinstance(getattr(m, "output_time_steps", None), int)]


@contextmanager
def at_time_steps(model: nn.Module, steps: int) -> Iterator[bool]:
    """Run ``model`` at ``T = steps`` inside the block: every module of
    :func:`time_step_modules` takes ``steps`` and gets its own ``T`` back afterwards. Yields
    whether there was any such module (else the model's ``T`` cannot be changed)."""
    modules = time_step_modules(model)
    saved = [m.output_time_steps for m in modules]
    try:
        for m in modules:
            m.set_time_steps(steps)
        yield bool(modules)
    finally:
        for m, t in zip(modules, saved, strict=True):
            m.set_time_steps(t)


def _measure(model: nn.Module, x: Tensor, run: Callable[[nn.Module, Tensor], object],
             autograd: bool) -> int:
    """Peak live activation bytes of ``run(model, x)`` (see the module docstring)."""
    live = _Live(model, x)
    with torch.set_grad_enabled(autograd), live:
        out = run(model, x)
        kept = live.live  # with autograd: what the graph saved for backward, and the output
    del out
    return kept + 2 * live.largest if autograd else live.peak


def activation_bytes(
    model: nn.Module,
    example_input: Tensor,
    *,
    autograd: bool = False,
    time_major: bool | None = None,
    call: Callable[[nn.Module, Tensor], object] | None = None,
) -> ActivationEstimate | None:
    """Estimate ``model``'s activation bytes per sample and time step (module docstring).

    ``example_input`` is a batch ``[B, ...]`` or, time-major, ``[T, B, ...]`` (default: 5-D
    is time-major); only its first sample (and first two steps) is used. The model runs in
    eval mode on its own device (training flags are restored after). ``call(model, x)``
    replaces ``model(x)``. Returns ``None`` when there is nothing to scale (a static input and
    no module that takes ``T``: then nothing here grows with ``T``) or when the small runs fail
    (the real run will say why).
    """
    time_major = example_input.dim() == 5 if time_major is None else time_major
    run = call or (lambda m, inp: m(inp))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    measured = []
    try:
        for steps in (1, 2):
            with at_time_steps(model, steps) as settable:
                if time_major:
                    x = example_input[:steps, :1]
                    if x.shape[0] < steps:
                        return None
                elif not settable:
                    return None
                else:
                    x = example_input[:1]
                measured.append(_measure(model, x, run, autograd))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return None
    finally:
        for module, mode in modes:
            module.training = mode
    one, two = measured
    per_step = max(0, two - one)
    return ActivationEstimate(fixed=max(0, one - per_step), per_step=per_step, autograd=autograd)


#: Below this many step-samples (``T * B``) a call is not estimated by default: the estimate's
#: own two runs (three step-samples) would cost a large share of it.
CHECK_ABOVE = 16


class ModelMemoryCheck:
    """``check(what, steps, batch)`` refuses a call of ``model`` at ``T = steps`` on ``batch``
    samples whose activations cannot fit (:func:`check_fits` of :func:`activation_bytes`,
    estimated once, on the first call that needs it, from ``example``). Calls of at most
    ``check_above`` step-samples are not checked. What ``profile``, ``hw`` and training share.
    """

    def __init__(
        self,
        model: nn.Module,
        example: Tensor,
        *,
        autograd: bool = False,
        time_major: bool | None = None,
        check_above: int = CHECK_ABOVE,
    ) -> None:
        self.model, self.example = model, example
        self.autograd, self.time_major, self.check_above = autograd, time_major, check_above
        self.device = next((p.device for p in model.parameters()), example.device)
        self._estimate: list[ActivationEstimate | None] = []  # empty: not estimated yet

    def __call__(self, what: str, steps: int, batch: int) -> None:
        if steps * batch <= self.check_above:
            return
        if not self._estimate:
            self._estimate.append(activation_bytes(
                self.model, self.example, autograd=self.autograd, time_major=self.time_major
            ))
        estimate = self._estimate[0]
        if estimate is not None:  # None: nothing in the model grows with T
            check_fits(f"{what} at T={steps}, batch {batch}", estimate.bytes(steps, batch),
                       self.device)

"""Where a run trains: device, autocast precision, threads, DDP ranks; and the process-wide
settings ``fit`` changes, restored when it ends.

``process_settings()`` is the one place ``fit`` changes state beyond its own objects:
torch's thread count, deterministic mode, the current CUDA device and the RNGs (seeded for the
run, restored on resume). Entering it records them; leaving it, normally or by an exception,
puts them back. A DDP process group ``fit`` starts under ``torchrun`` is not undone: it belongs
to the ``torchrun`` worker process (a sweep trains several runs on it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .checkpoint import capture_rng, restore_rng
from .config import TrainConfig

__all__ = [
    "TrainEnv",
    "auto_precision",
    "cpu_bf16",
    "launch_rank",
    "process_settings",
    "setup_env",
]

log = logging.getLogger(__name__)


@dataclass
class TrainEnv:
    """The device, autocast dtype and DDP position of this process."""

    device: torch.device
    """Where the model and batches live."""
    amp_dtype: torch.dtype | None
    """Autocast dtype (bf16/fp16), or ``None`` for float32."""
    rank: int
    """Global rank under ``torchrun`` (0 otherwise)."""
    world: int
    """Number of processes (1 without ``torchrun``)."""
    local_rank: int
    """Rank on this node (selects the CUDA device)."""

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0


def cpu_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


@contextlib.contextmanager
def process_settings() -> Iterator[None]:
    """Restore, on exit, every process-wide setting ``fit`` may change: torch's thread count,
    deterministic mode (and its warn-only flag), the current CUDA device (when CUDA was in use
    already: a process that had not initialized CUDA is not made to now) and the Python, NumPy,
    torch and CUDA RNG states."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None
    rng = capture_rng()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        if cuda_device is not None:
            torch.cuda.set_device(cuda_device)
        restore_rng(rng)


@functools.cache
def qsnn_version() -> str:
    """``qsnn <version>`` plus the git commit of the checkout it runs from, when it is one
    (recorded with every run, so a report can say which code trained its rows)."""
    import subprocess
    from pathlib import Path

    from .. import __version__

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"qsnn {__version__}" + (f" (commit {commit})" if commit else "")


def launch_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process as ``torchrun`` launched it (``RANK``,
    ``WORLD_SIZE``); ``(0, 1)`` for a plain process. Rank 0 alone writes shared files."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup_env(config: TrainConfig) -> TrainEnv:
    """Choose the device and precision for ``config``, set threads and deterministic mode (call
    inside :func:`process_settings`), and join the DDP group under ``torchrun``."""
    rank, world = launch_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if config.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but CUDA is not available")
        if device.type == "cuda" and world > 1:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        threads = config.threads or max(1, (os.cpu_count() or 1) // max(1, local_world))
        torch.set_num_threads(threads)
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return TrainEnv(device, amp, rank, world, local_rank)


def auto_precision(model: nn.Module, amp_dtype: torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype ``--precision auto`` trains ``model`` in: ``amp_dtype``, unless a
    neuron has ``b_s > 8``. Its input current (a conv + batch-norm output) would then be a bf16
    value of 8 significant bits, which cannot reach every one of its levels (at ``T = 1`` a
    16-bit neuron would see about 2,000 of its 65,536), so such a model trains in float32.
    At ``b_s <= 8`` a bf16 current reaches every level (its step is at most ``theta`` below
    ``256 * theta``)."""
    if amp_dtype not in (torch.bfloat16, torch.float16):
        return amp_dtype
    from ..neurons import SpikeLevels

    widest = max((m.bits_s for m in model.modules() if isinstance(m, SpikeLevels)), default=0)
    significand = 8 if amp_dtype == torch.bfloat16 else 11
    if widest > significand:
        log.info(
            "b_s = %d: a %s input current cannot reach every spike level; training in float32",
            widest,
            str(amp_dtype).removeprefix("torch."),
        )
        return None
    return amp_dtype

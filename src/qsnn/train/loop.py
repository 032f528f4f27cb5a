"""One training epoch: the steps, Ctrl-C (and SIGTERM, what schedulers such as Slurm send)
held until a step is complete, mid-epoch resume, and the precise batch-norm statistics computed
after it."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .._progress import bar as progress
from ..data import TensorData
from ..data.base import derive_seed
from .checkpoint import NonFiniteLossError
from .config import TrainConfig
from .environment import TrainEnv
from .evaluation import channels_last
from .optim import Optim, mix
from .precise_bn import recompute_bn_stats
from .run import CHECKPOINT, save_state
from .state import EpochProgress, RunState

__all__ = [
    "INTERRUPT_SIGNALS",
    "DeferInterrupt",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "precise_bn",
    "progress",
    "terminate_as_interrupt",
    "train_epoch",
]

log = logging.getLogger(__name__)

#: Models wrapped by ``torch.compile`` (``--compile``) whose compile note was logged.
_COMPILE_NOTED: weakref.WeakSet[nn.Module] = weakref.WeakSet()

#: The signals that stop a run the way Ctrl-C does: SIGINT, and SIGTERM (``kill``, Slurm).
INTERRUPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the state was saved and the run can be resumed."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt``, as Ctrl-C does, while the block runs (``fit``
    installs it for its whole duration; a training step defers either signal to its end with
    :class:`DeferInterrupt`). The previous handler is put back when the block ends. Only in
    the main thread (signals are delivered there; elsewhere nothing is installed)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class DeferInterrupt:
    """Hold Ctrl-C or SIGTERM until the training step in progress is complete (a step
    interrupted half way has updated batch-norm statistics, or some of the weights, but not
    the step count). A second signal stops at once, without saving."""

    def __init__(self) -> None:
        """Not yet installed (see ``__enter__``)."""
        self.requested = False
        self.forced = False
        self.signal_name = ""
        """The name of the first signal received (``"SIGINT"``, ``"SIGTERM"``)."""
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferInterrupt:
        """Install the handler (main thread only: signals go there)."""
        if _in_main_thread():
            for sig in INTERRUPT_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        """Put the previous handlers back."""
        for sig, previous in self._previous.items():
            # None: a handler not installed from Python; the default is the closest to it.
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def train_epoch(
    net: nn.Module,
    model: nn.Module,
    train_data: TensorData,
    config: TrainConfig,
    env: TrainEnv,
    optim: Optim,
    epoch: int,
    state: RunState,
    out: Path | None,
    model_args: dict[str, Any],
    facts: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One epoch of training steps; ``state.step``/``state.partial`` make it resumable
    mid-epoch (``net`` is ``model`` wrapped by DDP/compile when asked). Ctrl-C or SIGTERM
    saves the state (with ``model_args`` and the run's ``facts``) into ``out`` and raises
    :class:`TrainingInterrupted`."""
    net.train()
    batches = train_data.batches(
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        epoch=epoch,
        drop_last=True,
        augment=config.augment,
        device=env.device,
        rank=env.rank,
        world_size=env.world,
    )
    skip = state.step
    partial = state.partial or EpochProgress()
    sums = torch.tensor([partial.loss, partial.correct, partial.count], dtype=torch.float64)
    elapsed = partial.time
    if getattr(net, "_orig_mod", None) is not None and net not in _COMPILE_NOTED and env.main:
        # torch.compile compiles on the first steps: say why they take seconds each.
        _COMPILE_NOTED.add(net)
        log.info("compiling the model (--compile) on the first steps: they are slow meanwhile "
                 "(once per process and input shape)")  # fmt: skip
    bar = progress(
        batches,
        len(batches),
        config.progress and env.main and sys.stderr.isatty(),
        f"epoch {epoch + 1}/{config.epochs}",
    )
    step = 0
    interrupt = DeferInterrupt()
    try:
        interrupt.__enter__()
        tick = last_save = time.perf_counter()
        every = config.checkpoint_every
        for step, (x, y) in enumerate(bar):
            if step < skip:  # resuming inside an epoch: these batches were trained on
                continue
            if config.channels_last:
                x = channels_last(x)
            mix_seed = derive_seed(config.seed, epoch, step, env.rank, "mix")
            x, target = mix(x, y, train_data.num_classes, config, mix_seed)
            with torch.autocast(
                env.device.type,
                dtype=env.amp_dtype or torch.float32,
                enabled=env.amp_dtype is not None,
            ):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), target)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last "
                    "good checkpoint is kept (try a lower --lr or --precision fp32)"
                )
            optim.step(loss)
            n = y.numel()
            sums += torch.tensor(
                [float(loss.detach()) * n, float((logits.argmax(1) == y).sum()), n],
                dtype=torch.float64,
            )
            state.step = step + 1
            if interrupt.requested:  # Ctrl-C during this step: stop at its end
                raise KeyboardInterrupt
            now = time.perf_counter()
            if every and now - last_save >= every and out is not None and env.main:
                # A periodic save, so that a process killed without a signal it can catch
                # (SIGKILL, a lost machine) resumes from here rather than the epoch's start.
                state.partial = EpochProgress(*(float(v) for v in sums), elapsed + now - tick)
                save_state(out, model, optim.state_dict(), state, config, model_args, facts)
                last_save = time.perf_counter()
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                now = time.perf_counter()
                bar.set_postfix(
                    loss=f"{sums[0] / sums[2]:.3f}",
                    acc=f"{sums[1] / sums[2]:.3f}",
                    img_s=f"{sums[2] / max(1e-9, elapsed + now - tick):.0f}",
                )
        if interrupt.requested:  # Ctrl-C after the last step: still honoured
            raise KeyboardInterrupt
        elapsed += time.perf_counter() - tick
    except KeyboardInterrupt:
        if interrupt.forced:  # second Ctrl-C mid-step: keep the last consistent checkpoint
            raise
        elapsed += time.perf_counter() - tick
        state.partial = EpochProgress(float(sums[0]), float(sums[1]), float(sums[2]), elapsed)
        if out is not None and env.main:
            save_state(out, model, optim.state_dict(), state, config, model_args, facts)
        by = f" by {interrupt.signal_name}" if interrupt.signal_name == "SIGTERM" else ""
        raise TrainingInterrupted(
            f"interrupted{by} at epoch {epoch + 1}, step {state.step}; state saved to "
            f"{out / CHECKPOINT if out else '(no --out)'}; continue with --resume"
        ) from None
    finally:
        interrupt.__exit__()
        if hasattr(bar, "close"):
            bar.close()
    if env.world > 1:
        dist.all_reduce(sums)
    count = max(1.0, float(sums[2]))
    state.train_time += elapsed
    return {
        "train_loss": float(sums[0]) / count,
        "train_acc": float(sums[1]) / count,
        "lr": optim.optimizer.param_groups[0]["lr"],
        "epoch_time_s": elapsed,
        "images_per_s": float(sums[2]) / max(1e-9, elapsed),
    }


def precise_bn(
    model: nn.Module, train_data: TensorData, config: TrainConfig, env: TrainEnv, epoch: int
) -> None:
    """Batch-norm statistics of the weights just trained, before they are evaluated or saved
    (``qsnn.train.precise_bn``); nothing when ``config.precise_bn`` is 0."""
    if not config.precise_bn:
        return
    recompute_bn_stats(
        model,
        train_data,
        samples=config.precise_bn,
        batch_size=config.batch_size,
        seed=derive_seed(config.seed, epoch, "precise-bn"),
        device=env.device,
        amp_dtype=env.amp_dtype,
        augment=config.augment,
        prepare=channels_last if config.channels_last else None,
        rank=env.rank,
        world_size=env.world,
    )

"""What a finished run reports: the epoch log line and ``result.json`` (accuracies at the
selected and the last epoch, timings, environment, the final profile with measured firing
rates and the accelerator estimate)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..data import DataSplits, raw_input_bits
from ..io import write_json_atomic
from .config import TrainConfig
from .environment import TrainEnv, qsnn_version
from .run import RESULT
from .state import RunState

__all__ = ["epoch_line", "finish", "hardware_summary"]

log = logging.getLogger(__name__)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The log line of one epoch's metrics ``row``."""
    val = f" val {100 * row['val_acc']:.2f}%" if "val_acc" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} train "
        f"{100 * row['train_acc']:.2f}%{val} test {100 * row['test_acc']:.2f}% "
        f"({row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.1f} s)"
    )


def finish(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    env: TrainEnv,
    state: RunState,
    out: Path | None,
    wall: float,
) -> dict[str, Any]:
    """The result dict of a finished run (written to ``out/result.json`` on rank 0)."""
    from ..metrics import profile

    history = state.history
    last = history[-1]
    best = state.best
    result: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "bits": config.bits,
        "budget": config.allocation.budget,
        "epochs": config.epochs,
        "best_epoch": best.epoch if best else None,
        "val_acc_best": best.val_acc if best and data.val is not None else None,
        "test_acc_best": best.test_acc if best else None,
        "test_acc_last": last["test_acc"],
        "train_acc_last": last["train_acc"],
        "selection": "best validation epoch" if data.val is not None else "last epoch",
        "wall_time_s": wall,
        "train_time_s": state.train_time,
        "train_images_per_s": sum(r["images_per_s"] for r in history) / len(history),
        "samples": {
            "train": len(data.train),
            "val": len(data.val) if data.val else 0,
            "test": len(data.test),
        },
        "environment": {
            "qsnn": qsnn_version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(env.device),
            "precision": str(env.amp_dtype or "fp32"),
            "threads": torch.get_num_threads(),
            "world_size": env.world,
        },
        "config": config.to_dict(),
    }
    if config.profile_batches and env.main:
        example, _ = next(iter(data.test.batches(2, device=env.device)))
        batches = data.test.batches(256, device=env.device)
        kind_bits = raw_input_bits(data.test.kind)
        prof = profile(
            model,
            example,
            data=batches,
            max_batches=config.profile_batches,
            input_bits=kind_bits,
            input_normalization=data.test.normalization,
        )
        result["profile"] = prof.to_dict()
        result["hardware"] = hardware_summary(
            model, example[:1] if data.test.kind == "static" else example[:, :1], kind_bits
        )
    if out is not None and env.main:
        write_json_atomic(out / RESULT, result)
    return result


def hardware_summary(
    model: nn.Module, example: Tensor, input_bits: int | None
) -> dict[str, Any] | None:
    """fps, cycles and latency on the default bit-serial accelerator (``qsnn.hardware``); None
    for models the accelerator model does not map."""
    from ..hardware import estimate

    try:
        report = estimate(model, example, input_bits=input_bits)
    except ValueError as err:
        log.info("no hardware estimate: %s", err)
        return None
    return {
        "fps": report.fps,
        "cycles": report.cycles,
        "latency_s": report.latency_s,
        "accelerator": report.accel.to_dict(),
    }

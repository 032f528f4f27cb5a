"""Training: ``fit(model, data, config)``, ``train(config, out_dir)``, runs on disk.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` (the latest state,
for ``--resume``), ``best.pt`` (the weights of the best validation epoch), ``metrics.jsonl``
(one line per epoch) and ``result.json`` (accuracies, timings, the final profile).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .engine import (
    NonFiniteLossError,
    TrainingInterrupted,
    build_model,
    evaluate,
    fit,
    load_data,
    train,
)
from .run import load_run

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_data",
    "load_run",
    "save_checkpoint",
    "train",
]

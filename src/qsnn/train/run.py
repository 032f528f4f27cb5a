"""Reading a finished (or interrupted) run directory back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch.nn as nn

from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig

__all__ = ["load_run"]


def load_run(run_dir: str | os.PathLike, which: Literal["best", "last"] = "best"):
    """Rebuild a run's model with its trained weights: ``(model, config, data)``.

    ``data`` is the run's ``DataSplits`` (the same validation hold-out), loaded because the
    model is sized from it. ``which="best"`` takes ``best.pt`` (the best validation epoch) when
    present, else the last checkpoint.
    """
    from .engine import build_model, load_data

    run = Path(run_dir)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run} is not a qsnn run directory (no config.json)")
    try:
        config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{config_path} is unreadable: {err}") from None
    best = run / "best.pt"
    state = load_checkpoint(best if which == "best" and best.exists() else run / "checkpoint.pt")
    data = load_data(config)
    model: nn.Module = build_model(config, data.train)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, data

"""A run directory: its files, how training writes them, and reading a run back.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` (the latest state,
for ``--resume``), ``best.pt`` (the weights of the best validation epoch), ``metrics.jsonl``
(one line per epoch) and ``result.json``. Both checkpoints carry ``model_args``, the keyword
arguments of :func:`qsnn.models.create_model` that built the model, so :func:`load_run`
rebuilds it without loading the dataset; checkpoints written before ``model_args`` existed
are rebuilt as before, from the configuration and the training split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch.nn as nn

from ..data import DataSplits
from ..io import write_text_atomic
from .checkpoint import CheckpointError, capture_rng, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .state import RunState

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "RESULT",
    "RunData",
    "append_metrics",
    "load_run",
    "rewrite_metrics",
    "save_best",
    "save_state",
]

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"


# -- writing -----------------------------------------------------------------------------------
def save_state(
    out: Path,
    model: nn.Module,
    optim_state: dict[str, Any],
    state: RunState,
    config: TrainConfig,
    model_args: dict[str, Any],
) -> None:
    """``checkpoint.pt``: weights, optimizer entries, RNG states, config, model arguments and
    the run state (atomically: a crash leaves the previous checkpoint)."""
    save_checkpoint(
        out / CHECKPOINT,
        {
            "model": model.state_dict(),
            **optim_state,
            "rng": capture_rng(),
            "config": config.to_dict(),
            "model_args": model_args,
            **state.to_checkpoint(),
        },
    )


def save_best(
    out: Path, model: nn.Module, epoch: int, config: TrainConfig, model_args: dict[str, Any]
) -> None:
    """``best.pt``: the weights of the best epoch so far, with the config and model arguments."""
    save_checkpoint(
        out / BEST,
        {
            "model": model.state_dict(),
            "epoch": epoch,
            "config": config.to_dict(),
            "model_args": model_args,
        },
    )


def append_metrics(out: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row to ``metrics.jsonl``."""
    with open(out / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def rewrite_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Make ``metrics.jsonl`` match the checkpoint's history (on resume, a killed run may have
    written a line for an epoch whose checkpoint never landed)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_text_atomic(out / METRICS, text)


# -- reading -----------------------------------------------------------------------------------
class RunData(DataSplits):
    """A run's :class:`~qsnn.data.DataSplits` (the same validation hold-out), loaded from the
    run's configuration the first time a split is read."""

    def __init__(self, config: TrainConfig) -> None:
        """Remember ``config``; nothing is loaded yet."""
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_splits", None)

    def _load(self) -> DataSplits:
        if self._splits is None:
            from .engine import load_data

            object.__setattr__(self, "_splits", load_data(self._config))
        return self._splits

    @property
    def loaded(self) -> bool:
        """True once the splits have been read from disk."""
        return self._splits is not None

    @property  # type: ignore[override]
    def train(self) -> Any:
        """The training split (without the validation hold-out)."""
        return self._load().train

    @property  # type: ignore[override]
    def val(self) -> Any | None:
        """The validation hold-out, or None."""
        return self._load().val

    @property  # type: ignore[override]
    def test(self) -> Any:
        """The test split."""
        return self._load().test

    def __repr__(self) -> str:
        """Says whether the splits are loaded, without loading them."""
        state = "loaded" if self.loaded else "not loaded yet"
        return f"RunData(dataset={self._config.dataset!r}, {state})"


def load_run(
    run_dir: str | os.PathLike, which: Literal["best", "last"] = "best"
) -> tuple[nn.Module, TrainConfig, RunData]:
    """Rebuild a run's model with its trained weights: ``(model, config, data)``.

    ``which="best"`` takes ``best.pt`` (the best validation epoch) when present, else the last
    checkpoint. The model is built from the checkpoint's ``model_args``; ``data`` is the run's
    ``DataSplits`` (the same validation hold-out), loaded when a split is first read. A
    checkpoint without ``model_args`` (written by an older qsnn) sizes the model from the
    training split, which is then loaded at once.
    """
    from .engine import build_model

    run = Path(run_dir)
    config_path = run / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{run} is not a qsnn run directory (no config.json)")
    try:
        config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{config_path} is unreadable: {err}") from None
    best = run / BEST
    path = best if which == "best" and best.exists() else run / CHECKPOINT
    state = load_checkpoint(path)
    data = RunData(config)
    if isinstance(state.get("model_args"), dict):
        from ..models import create_model

        model: nn.Module = create_model(**state["model_args"])
    else:
        model = build_model(config, data.train)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, data

"""A run directory: its files, how training writes them, and reading a run back.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` (the latest state,
for ``--resume``), ``best.pt`` (the weights of the best validation epoch), ``metrics.jsonl``
(one line per epoch) and ``result.json``. Both checkpoints carry ``model_args``, the keyword
arguments of :func:`qsnn.models.create_model` that built the model, so :func:`load_run`
rebuilds it without loading the dataset; checkpoints written before ``model_args`` existed
are rebuilt as before, from the configuration and the training split. Both also carry the
run's configuration (``config``, as in ``config.json``): a resume is checked against it even
when ``config.json`` is gone. A checkpoint is written only when every tensor in it is finite
(:func:`non_finite_tensor`).

While a process trains into a run directory it holds the directory's lock
(:func:`qsnn.io.lock_directory`, the file ``.lock``); opening the directory for training
removes the temporary files that a process killed in the middle of a write left there.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from ..data import DataSplits
from ..io import CorruptFileError, read_json_object, write_text_atomic
from .checkpoint import (
    CheckpointError,
    capture_rng,
    first_non_finite,
    load_checkpoint,
    save_checkpoint,
)
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
    "non_finite_tensor",
    "read_config",
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
def non_finite_tensor(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> str | None:
    """What in ``model``'s state (weights and buffers, batch-norm statistics included) or in
    ``optimizer``'s state is NaN or infinite, as ``"features.0.bn.running_var holds inf"`` or
    ``"the optimizer's exp_avg_sq of features.0.conv.weight holds nan"``; ``None`` when every
    tensor is finite (what a checkpoint must be)."""
    bad = first_non_finite(model.state_dict())
    if bad is not None:
        return f"{bad[0]} holds {bad[1]}"
    if optimizer is None:
        return None
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            bad = first_non_finite(optimizer.state.get(param, {}))
            if bad is not None:
                owner = names.get(id(param), "a parameter")
                return f"the optimizer's {bad[0]} of {owner} holds {bad[1]}"
    return None


def save_state(
    out: Path,
    model: nn.Module,
    optim_state: dict[str, Any],
    state: RunState,
    config: TrainConfig,
    model_args: dict[str, Any],
    facts: dict[str, Any] | None = None,
) -> None:
    """``checkpoint.pt``: weights, optimizer entries, RNG states, config, model arguments, the
    run state and ``facts`` (``run_facts``: what the settings resolved to, e.g. the number of
    training samples and processes) (atomically: a crash leaves the previous checkpoint)."""
    save_checkpoint(
        out / CHECKPOINT,
        {
            "model": model.state_dict(),
            **optim_state,
            "rng": capture_rng(),
            "config": config.to_dict(),
            "model_args": model_args,
            **({"run_facts": facts} if facts is not None else {}),
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


def read_config(path: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``path`` (a run's ``config.json``). A file that is not
    JSON, not a JSON object, or holds wrong values is a :class:`CheckpointError` that names the
    file (and the setting at fault); a missing file is the ``OSError`` of ``open``."""
    path = Path(path)
    try:
        return TrainConfig.from_dict(read_json_object(path, "a training config"))
    except CorruptFileError as err:
        raise CheckpointError(str(err)) from None
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None


def load_run(
    run_dir: str | os.PathLike,
    which: Literal["best", "last"] = "best",
    *,
    data_root: str | os.PathLike | None = None,
) -> tuple[nn.Module, TrainConfig, RunData]:
    """Rebuild a run's model with its trained weights: ``(model, config, data)``.

    ``which="best"`` takes ``best.pt`` (the best validation epoch) when present, else the last
    checkpoint. The model is built from the checkpoint's ``model_args``; ``data`` is the run's
    ``DataSplits`` (the same validation hold-out), loaded when a split is first read. A
    checkpoint without ``model_args`` (written by an older qsnn) sizes the model from the
    training split, which is then loaded at once. ``data_root`` reads the data from another
    place than the run's saved root (the data moved, or another machine); the returned config
    says where it was read.
    """
    from .engine import build_model

    run = Path(run_dir)
    config_path = run / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{run} is not a qsnn run directory (no config.json)")
    config = read_config(config_path)
    if data_root is not None:
        config = replace(config, data_root=os.path.abspath(data_root))
    best = run / BEST
    path = best if which == "best" and best.exists() else run / CHECKPOINT
    state = load_checkpoint(path)
    data = RunData(config)
    if isinstance(state.get("model_args"), dict):
        from ..models import create_model

        model: nn.Module = create_model(**config.with_neuron_defaults(state["model_args"]))
    else:
        model = build_model(config, data.train)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as err:  # sizes or names that are not this model's
        first = str(err).strip().splitlines()[:2]
        raise CheckpointError(
            f"{path} does not fit the model {config.model} at {config.bits} that {config_path} "
            f"describes: {' '.join(line.strip() for line in first)}"
        ) from None
    model.eval()
    return model, config, data

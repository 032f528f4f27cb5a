"""Shared pieces of the exporters: optional imports, the run's description, file names."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

#: The one install line every missing optional package of the exporters names.
INSTALL_LINE = "pip install 'qsnn[export]'"


def require(module: str, purpose: str) -> Any:
    """Import an optional package or raise ``ImportError`` naming the exact install line."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the optional package {module.partition('.')[0]!r}, which is not "
            f"installed: "
            f"{INSTALL_LINE}"
        ) from err


def run_description(
    run_dir: str | os.PathLike, which: str = "best", data_root: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a run (``qsnn.train.load_run``) and describe it: ``(model, info)`` where ``info``
    holds ``model_args`` (the ``create_model`` keywords the checkpoint saved), ``config`` (the
    run's ``TrainConfig`` as a dict), ``input`` (the model input: normalization mean/std of the
    test split, sample shape, dataset kind) and ``which`` (the weights taken)."""
    from ..train import load_run
    from ..train.checkpoint import load_checkpoint
    from ..train.run import BEST, CHECKPOINT

    model, config, data = load_run(run_dir, which=which, data_root=data_root)  # type: ignore[arg-type]
    run = Path(run_dir)
    path = run / BEST if which == "best" and (run / BEST).exists() else run / CHECKPOINT
    args = load_checkpoint(path).get("model_args")
    if not isinstance(args, dict):  # an older checkpoint: size the model from the train split
        from ..train.engine import model_args

        args = model_args(config, data.train)
    args = config.with_neuron_defaults(args)  # explicit: the export rebuilds the same neurons
    test = data.test
    info = {
        "model_args": json_ready(args),
        "config": json_ready(config.to_dict()),
        "input": {
            "kind": test.kind,
            "sample_shape": list(test.sample_shape),
            "mean": None if test.mean is None else list(test.mean),
            "std": None if test.std is None else list(test.std),
            "layout": "[B, C, H, W] float, (x / 255 - mean) / std per channel"
            if test.kind == "static"
            else "[T, B, C, H, W] float event counts",
        },
        "which": path.name,
        "run_dir": str(run),
    }
    return model, info


def json_ready(value: Any) -> Any:
    """``value`` with tuples as lists, checked to survive a JSON round trip."""
    return json.loads(json.dumps(value))


def default_out(run_dir: str | os.PathLike, suffix: str) -> Path:
    """``RUN_DIR/export/model<suffix>``."""
    return Path(run_dir) / "export" / f"model{suffix}"

"""safetensors export: a run's trained weights and everything needed to rebuild the model.

The file holds the model's ``state_dict`` (every parameter and buffer, under its own name) and,
in the safetensors header's string metadata, JSON documents:

- ``qsnn.model_args``: the keyword arguments of :func:`qsnn.create_model` the run's checkpoint
  saved (model name, allocation, per-layer overrides, classes, input channels and size, model
  options);
- ``qsnn.config``: the run's whole ``TrainConfig``;
- ``qsnn.input``: what the model takes (normalization mean/std, sample shape, dataset kind);
- ``qsnn.format`` / ``qsnn.version`` / ``qsnn.weights``: the layout version, the qsnn version
  that wrote it and which checkpoint the weights came from.

No pickle is involved either way: :func:`load_safetensors` rebuilds the model with
``create_model`` and loads the tensors strictly. Rebuilding needs qsnn (the architecture is
qsnn's code, named by ``model_args``); the weights are the float (latent) weights that training
keeps, fake-quantized at ``b_w`` bits in the forward pass exactly as in qsnn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ._common import require

#: Version of the metadata layout below.
FORMAT = "qsnn-safetensors-1"


def save_safetensors(model: nn.Module, info: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``model``'s ``state_dict`` and ``info`` (``model_args``, ``config``, ``input``,
    ``which``: see :func:`qsnn.export.export_run`) to ``path``; returns the path."""
    st = require("safetensors.torch", "safetensors export")
    from .. import __version__

    tensors = {
        name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()
    }
    metadata = {
        "qsnn.format": FORMAT,
        "qsnn.version": __version__,
        "qsnn.model_args": json.dumps(info["model_args"]),
        "qsnn.config": json.dumps(info.get("config")),
        "qsnn.input": json.dumps(info.get("input")),
        "qsnn.weights": str(info.get("which", "")),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    st.save_file(tensors, str(path), metadata=metadata)
    return path


def safetensors_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The qsnn metadata of a file :func:`save_safetensors` wrote, JSON entries decoded:
    ``{"format", "version", "model_args", "config", "input", "weights"}``. A file without it
    (not written by qsnn) is a ``ValueError``."""
    safe_open = require("safetensors", "reading a safetensors export").safe_open
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("qsnn.format") != FORMAT or "qsnn.model_args" not in raw:
        raise ValueError(
            f"{path} is not a qsnn safetensors export (no {FORMAT!r} metadata); "
            "write one with `qsnn export RUN --format safetensors`"
        )
    out: dict[str, Any] = {"format": raw["qsnn.format"], "version": raw.get("qsnn.version")}
    for key in ("model_args", "config", "input"):
        out[key] = json.loads(raw.get(f"qsnn.{key}", "null"))
    out["weights"] = raw.get("qsnn.weights")
    return out


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a safetensors export holds: ``create_model(**model_args)`` with the
    stored tensors loaded strictly (every name and shape must match), in eval mode.

    No pickle is read. The result computes what the run's model computed (same weights, same
    allocation and per-layer bits, same neuron steps).
    """
    st = require("safetensors.torch", "reading a safetensors export")
    from ..models import create_model
    from ..train.config import TrainConfig

    meta = safetensors_metadata(path)
    args = dict(meta["model_args"])
    if isinstance(meta.get("config"), dict):  # a file written before explicit neuron settings
        args = TrainConfig.from_dict(meta["config"]).with_neuron_defaults(args)
    if isinstance(args.get("img_size"), list):
        args["img_size"] = tuple(args["img_size"])
    model = create_model(**args)
    tensors = st.load_file(str(path), device=str(device))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = " ".join(line.strip() for line in str(err).strip().splitlines()[:2])
        raise ValueError(f"{path} does not fit the model its metadata names: {first}") from None
    return model.to(device).eval()

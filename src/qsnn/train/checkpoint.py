"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_atomic

__all__ = ["CheckpointError", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not a qsnn checkpoint."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` through ``qsnn.io.write_atomic``: a crash leaves the previous checkpoint
    intact, never a half-written one."""
    return write_atomic(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a bad file raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle ...
        # torch's messages run over several lines and advise weights_only=False: keep the
        # first line only, and say something when there is nothing to say.
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        if path.stat().st_size == 0:
            reason = "the file is empty"
        elif reason.startswith("Weights only load failed") or "legacy .tar format" in reason:
            reason = "not a PyTorch zip checkpoint"
        reason = reason or type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {reason}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is not a qsnn training checkpoint")
    return state


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step may draw from, in a ``weights_only``-safe form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

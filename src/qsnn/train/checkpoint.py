"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``, written only when
every tensor in them is finite."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_atomic

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "capture_rng",
    "first_non_finite",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not a qsnn checkpoint."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class NonFiniteStateError(NonFiniteLossError):
    """A tensor to be saved (a weight, a batch-norm statistic, an optimizer moment) holds NaN or
    infinity: it is not written, the last good checkpoint is kept."""


def _tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside ``value`` (nested dicts, lists, tuples) with its dotted path."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{name}.{index}" if name else str(index))


def first_non_finite(state: Any, prefix: str = "") -> tuple[str, str] | None:
    """``(path, what)`` of the first floating-point tensor in ``state`` that holds NaN or
    infinity (``what``: ``"nan"``, ``"inf"`` or ``"nan and inf"``), or ``None`` when every
    tensor is finite. ``path`` is the dotted key path, after ``prefix``."""
    for name, tensor in _tensors(state, prefix):
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
            continue
        if bool(torch.isfinite(tensor).all()):
            continue
        kinds = [kind for kind, hit in (("nan", tensor.isnan()), ("inf", tensor.isinf()))
                 if bool(hit.any())]  # fmt: skip
        return name, " and ".join(kinds)
    return None


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` through ``qsnn.io.write_atomic``: a crash leaves the previous checkpoint
    intact, never a half-written one. A state with a non-finite tensor is not written
    (:class:`NonFiniteStateError`, naming the tensor): the previous file stays."""
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteStateError(
            f"{bad[0]} holds {bad[1]}: {path} is not written (the previous one, if any, is kept)"
        )
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

"""Disk cache of event frames, keyed by every parameter that changes them.

The key is a SHA-256 of a JSON description: dataset, split, ``T``, binning, frame size,
sensor, the reader's format version, and the relative path, size and modification time of
every source file. A cache file is written to a temporary name and renamed into place only
when complete (``os.replace`` is atomic), and on reading its stored description must equal
the expected one: a partial, stale or unreadable cache file is never used (it is rebuilt).

Location: ``cache_dir`` if given, else ``$QSNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/qsnn``,
else ``~/.cache/qsnn``; frames go into its ``frames/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..io import write_atomic

__all__ = ["cache_root", "file_fingerprint", "load_frames", "params_key", "save_frames"]

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds qsnn's caches (see the module docstring)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("QSNN_CACHE_DIR"):
        return Path(os.environ["QSNN_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "qsnn"


def file_fingerprint(files: Iterable[Path], base: Path) -> list[list[Any]]:
    """``[relative path, size, mtime_ns]`` of each file, in the order given."""
    out = []
    for f in files:
        st = f.stat()
        try:
            rel = str(f.relative_to(base))
        except ValueError:
            rel = str(f)
        out.append([rel, st.st_size, st.st_mtime_ns])
    return out


def params_key(params: Mapping[str, Any]) -> str:
    """Stable hex digest of a JSON-serializable description."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_frames(path: Path, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached payload at ``path`` if it is complete and was made with ``params``."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        ok = (
            isinstance(payload, dict)
            and payload.get("params") == json.dumps(params, sort_keys=True)
            and isinstance(payload.get("frames"), torch.Tensor)
            and isinstance(payload.get("labels"), torch.Tensor)
            and payload["frames"].shape[0] == payload["labels"].shape[0] == payload.get("n")
        )
    except Exception as err:  # any unreadable file is simply rebuilt
        log.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, err)
        return None
    if not ok:
        log.warning("ignoring cache file %s: it does not match its key; rebuilding it", path)
        return None
    return payload


def save_frames(path: Path, params: Mapping[str, Any], frames: torch.Tensor,
                labels: torch.Tensor) -> bool:
    """Write the cache file atomically; returns False (and logs) if it cannot be written."""
    payload = {
        "params": json.dumps(params, sort_keys=True),
        "frames": frames,
        "labels": labels,
        "n": int(frames.shape[0]),
    }
    try:
        write_atomic(path, lambda handle: torch.save(payload, handle))
    except OSError as err:
        log.warning("could not write the frame cache %s (%s); continuing without it", path, err)
        return False
    log.info("cached frames in %s", path)
    return True

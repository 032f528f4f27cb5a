"""Atomic file writes: a result is either complete on disk or absent, never half-written.

Files get the mode a plain ``open(path, "w")`` would give a new file: ``0o666 & ~umask``
(``0o644`` under the usual umask ``0o022``), not the ``0o600`` of the temporary file that
``tempfile.mkstemp`` creates.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic", "write_json_atomic", "write_text_atomic"]

_PROC_STATUS = "/proc/self/status"


def _current_umask() -> int:
    """The process's file-mode creation mask, read without changing it.

    Linux (4.7+) reports it as the ``Umask:`` line of ``/proc/self/status``, which is a read
    with no side effect. Elsewhere the only portable way is ``os.umask(0)`` followed by
    restoring the old value: that sets the process-wide mask for an instant, so a file
    created by another thread in that instant would get mode ``0o666``; it is the fallback
    only.
    """
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, rename it over
    ``path``: a crash leaves the previous file (or none), never a half-written one.

    The file gets mode ``0o666 & ~umask`` (:func:`_current_umask`), as a file created by
    ``open`` would, whatever mode a previous file at ``path`` had.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX: mkstemp created the file 0o600
                os.fchmod(handle.fileno(), 0o666 & ~_current_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``write_atomic`` of ``text`` in UTF-8."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    """``write_text_atomic`` of ``json.dumps(obj, indent=2)``."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")

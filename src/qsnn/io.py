"""Atomic file writes, and the lock of a directory that one process writes.

Atomic writes: a result is either complete on disk or absent, never half-written. Files get
the mode a plain ``open(path, "w")`` would give a new file: ``0o666 & ~umask`` (``0o644``
under the usual umask ``0o022``), not the ``0o600`` of the temporary file that
``tempfile.mkstemp`` creates. A process killed (SIGKILL) in the middle of a write leaves its
hidden temporary file ``.NAME.XXXXXXXX.tmp`` beside ``NAME``; :func:`remove_stale_temp_files`
removes those of a directory.

Locks: :func:`lock_directory` holds an exclusive ``flock`` on ``DIR/.lock`` while a block runs;
a second process gets :class:`DirectoryInUseError` at once. The kernel releases a ``flock``
when its process dies, so the file a killed process leaves behind never blocks a later one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # not POSIX: no locks (lock_directory does nothing)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "CorruptFileError",
    "DirectoryInUseError",
    "is_temp_file",
    "lock_directory",
    "read_json_object",
    "remove_stale_temp_files",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

_PROC_STATUS = "/proc/self/status"
#: The name of :func:`lock_directory`'s lock file inside the directory.
LOCK_FILE = ".lock"
#: ``write_atomic``'s temporary files: ``.`` + target name + ``.`` + mkstemp's 8 random
#: characters (lower-case letters, digits, ``_``) + ``.tmp``.
_TEMP_PREFIX = ".{}."
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


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
    prefix = _TEMP_PREFIX.format(path.name)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    watched: _WatchedWrites | None = None
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX: mkstemp created the file 0o600
                os.fchmod(handle.fileno(), 0o666 & ~_current_umask())
            watched = _WatchedWrites(handle)
            write(watched)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failed = watched.error if watched is not None and watched.error is not None else err
        if isinstance(failed, OSError) and failed.filename is None:
            # A full disk or a file-size limit seen inside a writer (torch.save turns it into
            # an unrelated RuntimeError): say so, with the file it was for.
            raise OSError(failed.errno, failed.strerror or str(failed), str(path)) from err
        raise
    return path


class _WatchedWrites:
    """A file handle that remembers the first ``OSError`` its ``write`` raised (the rest of
    the handle's interface passes through)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``write_atomic`` of ``text`` in UTF-8."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    """``write_text_atomic`` of ``json.dumps(obj, indent=2)``."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


class CorruptFileError(ValueError):
    """A file that is not what it should be (not UTF-8 text, not JSON, not a JSON object); the
    message names the file."""


def read_json_object(path: str | os.PathLike, what: str = "") -> dict:
    """The JSON object (a ``dict``) in the file at ``path``. A file that is not UTF-8 text, not
    JSON or not an object is a :class:`CorruptFileError` naming the file (and ``what`` it
    should hold, e.g. ``"a run's result"``); a missing or unreadable file is the ``OSError``
    of ``open``, which carries the file name."""
    path = Path(path)
    should = f" ({what})" if what else ""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path}{should} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        reason = "the file is empty" if not raw.strip() else str(err)
        raise CorruptFileError(f"{path}{should} is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise CorruptFileError(
            f"{path}{should} must hold a JSON object {{...}}; it holds {_json_kind(value)}"
        )
    return value


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words: ``"an array"``, ``"a string"`` ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


# -- stale temporary files ---------------------------------------------------------------------
def is_temp_file(name: str) -> bool:
    """True when ``name`` is a temporary file name of :func:`write_atomic`
    (``.NAME.XXXXXXXX.tmp``)."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`write_atomic` left in ``directory`` (only there, not
    in its sub-folders; only regular files whose names match ``.NAME.XXXXXXXX.tmp``): what a
    process killed in the middle of a write leaves behind. Call it while holding the
    directory's lock (:func:`lock_directory`), so that no write in progress loses its file.
    Returns the removed paths; a missing directory has none."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if is_temp_file(entry.name) and entry.is_file(follow_symlinks=False):
            path = directory / entry.name
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d stale temporary file(s) in %s", len(removed), directory)
    return removed


# -- directory locks ---------------------------------------------------------------------------
class DirectoryInUseError(ValueError):
    """Another process holds the lock of a directory (:func:`lock_directory`)."""


#: errno values of file systems that do not support ``flock`` (some network file systems).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _holder(fd: int) -> str:
    """The pid written in a lock file, or ``"unknown"``."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def lock_directory(directory: str | os.PathLike, what: str = "directory") -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (created if missing) while the block runs.

    The lock is a non-blocking ``flock`` on ``directory/.lock``, which holds the owner's pid:
    when another process holds it, :class:`DirectoryInUseError` says so at once ("run
    directory X is in use by another process (pid N)", with ``what="run directory"``). Leaving
    the block, normally or by an exception, removes the file and releases the lock. A process
    that dies holding it (SIGKILL) leaves the file, but the kernel releases a ``flock`` with
    its process: the file does not block anyone. On a file system without ``flock`` (some
    network file systems) a warning is logged and the block runs unlocked. Yields the path of
    the lock file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = _acquire(path, f"{what} {directory}")
    if fd is None:
        yield path
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        try:
            # Removed while still locked: whoever opened it meanwhile sees it is gone (_acquire).
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _acquire(path: Path, what: str) -> int | None:
    """An open descriptor of ``path`` with an exclusive ``flock`` on it; ``None`` where locks
    are not supported. Raises :class:`DirectoryInUseError` when another process holds it."""
    if fcntl is None:
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirectoryInUseError(
                f"{what} is in use by another process (pid {holder}); wait for it to end or "
                "choose another directory"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _NO_LOCKS:
                raise
            log.warning("%s: the file system does not support locks (%s); not locked", path, err)
            return None
        # The previous owner may have removed the file between our open and our flock: then
        # this is a lock on a file nobody else sees. Lock the file that is at the path.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)

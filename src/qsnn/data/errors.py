"""Errors of the data layer and the point-of-use import of optional dependencies.

Every problem with a dataset (unknown name, missing files, corrupt or truncated files, a
missing optional package, bad options) raises :class:`DataError` or a subclass, with a
one-line message that says what was expected and what was found, so that the CLI can catch
one class and print one line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["CorruptDataError", "DataError", "MissingDataError", "require"]


class DataError(ValueError):
    """A dataset cannot be loaded; the message is one line that says why and what to do."""


class MissingDataError(DataError):
    """The dataset's files are not where they must be; the message names the expected path,
    the layout and how to obtain the files."""


class CorruptDataError(DataError):
    """A file exists but is truncated or not in the expected format; the message names it."""


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import an optional dependency at the point of use.

    Raises :class:`DataError` with the exact ``pip install`` command when it is absent, e.g.
    ``require("PIL", "vision", "Pillow")``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pkg = package or module
        raise DataError(
            f"this needs the optional package {pkg!r}, which is not installed: "
            f'pip install "qsnn[{extra}]" (or: pip install {pkg})'
        ) from err

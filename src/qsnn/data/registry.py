"""The dataset registry: one decorator, one dict, close-match suggestions for unknown names.

A loader is ``fn(root: Path, split: str, *, download: bool, **options)``; it returns a
:class:`~qsnn.data.base.TensorData` (or :class:`~qsnn.data.imagenet.ImageFolderData`).
:func:`get_dataset` resolves the name (aliases, ``-``/``_``, case), drops options that are
``None`` (so CLI defaults never break a dataset without that option) and checks the rest
against the loader's signature.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import split_holdout
from .errors import DataError

__all__ = [
    "DataSplits",
    "DatasetSpec",
    "dataset_spec",
    "default_root",
    "get_dataset",
    "list_datasets",
    "load_splits",
    "register_dataset",
]

Loader = Callable[..., Any]


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about a dataset (also used in error messages and docs)."""

    name: str
    """Registry name."""
    loader: Loader
    """``fn(root, split, *, download, **options)``."""
    kind: str
    """``"static"`` or ``"events"``."""
    title: str
    """Human name, e.g. ``"CIFAR-10"``."""
    layout: str
    """The expected files under ``root``."""
    obtain: str
    """How to get the files."""
    num_classes: int
    """Number of classes."""
    splits: tuple[str, ...] = ("train", "test")
    """Accepted ``split`` values."""
    aliases: tuple[str, ...] = ()
    """Other accepted names."""
    description: str = ""
    """One line on size and nature."""

    @property
    def options(self) -> list[str]:
        """Keyword options the loader accepts besides ``root``, ``split`` and ``download``."""
        params = inspect.signature(self.loader).parameters
        return [p for p in params if p not in ("root", "split", "download")]


_REGISTRY: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_dataset(
    name: str,
    *,
    kind: str,
    title: str,
    layout: str,
    obtain: str,
    num_classes: int,
    splits: tuple[str, ...] = ("train", "test"),
    aliases: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[Loader], Loader]:
    """Decorator that registers a loader under ``name`` (and ``aliases``)."""

    def deco(fn: Loader) -> Loader:
        spec = DatasetSpec(
            name, fn, kind, title, layout, obtain, num_classes, splits, aliases, description
        )
        for key in (name, *aliases):
            k = _norm(key)
            if k in _ALIASES and _ALIASES[k] != name:
                raise ValueError(f"dataset name {key!r} is already registered")
            _ALIASES[k] = name
        _REGISTRY[name] = spec
        return fn

    return deco


def list_datasets(kind: str | None = None) -> list[str]:
    """Registered dataset names (not aliases), sorted; ``kind`` filters static/events."""
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def _close_names(key: str, n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` registered names closest to ``key``, closest first, each once.

    A name's closeness is the best :func:`difflib.get_close_matches` ratio of the name or any
    of its aliases (so ``cifar`` suggests ``cifar10`` once, not once per spelling).
    """
    out: list[str] = []
    for match in difflib.get_close_matches(key, list(_ALIASES), n=len(_ALIASES), cutoff=cutoff):
        name = _ALIASES[match]
        if name not in out:
            out.append(name)
    return out[:n]


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; unknown names suggest close matches, and a name
    that is not a string (``None``, a number) names the valid datasets."""
    if not isinstance(name, str):
        raise DataError(
            f"a dataset name must be a string; got {name!r} ({type(name).__name__}); "
            f"known: {', '.join(list_datasets())}"
        )
    key = _norm(name)
    if key in _ALIASES:
        return _REGISTRY[_ALIASES[key]]
    if key.startswith("tonic:"):  # any tonic dataset class (qsnn.data.from_tonic)
        from .from_tonic import tonic_spec

        return tonic_spec(name.strip())
    close = _close_names(key)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise DataError(
        f"unknown dataset {name!r}{hint} (known: {', '.join(list_datasets())}, or any tonic "
        "dataset as tonic:NAME)"
    )


def default_root() -> Path:
    """Where datasets are looked for when no root is given: ``$QSNN_DATA`` or ``./data``."""
    return Path(os.environ.get("QSNN_DATA", "data")).expanduser()


def get_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    time_steps: int | None = None,
    download: bool = False,
    **options: Any,
) -> Any:
    """Load one split of a registered dataset.

    Args:
        name: registry name or alias (:func:`list_datasets`).
        root: folder that holds the dataset's standard layout (or the dataset folder itself);
            default :func:`default_root`. Ignored by the embedded ``digits``.
        split: ``"train"`` or ``"test"`` (ImageNet: ``"train"`` or ``"val"``).
        time_steps: ``T`` of event frames; required for event datasets, ignored for static
            ones (the model's encoder presents a static image for ``T`` steps).
        download: the only thing that touches the network; datasets without an automatic
            download say where to get the files.
        **options: dataset options (``None`` values are dropped); see each loader.

    Returns:
        A :class:`~qsnn.data.base.TensorData` (in memory) or, for ImageNet, an
        :class:`~qsnn.data.imagenet.ImageFolderData` (decoded per batch).
    """
    spec = dataset_spec(name)
    opts = {k: v for k, v in options.items() if v is not None}
    if not isinstance(split, str) or split not in spec.splits:
        raise DataError(f"{spec.title} has splits {', '.join(spec.splits)}; got split={split!r}")
    if spec.kind == "events":
        if time_steps is None:
            raise DataError(f"{spec.title} is an event dataset: give time_steps (T >= 1)")
        opts["time_steps"] = time_steps
    unknown = sorted(set(opts) - set(spec.options))
    if unknown:
        raise DataError(
            f"{spec.title} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(spec.options) or 'none'}"
        )
    path = Path(root).expanduser() if root is not None else default_root()
    return spec.loader(path, split, download=download, **opts)


@dataclass(frozen=True)
class DataSplits:
    """Train, optional validation (held out of train) and test splits of one dataset."""

    train: Any
    val: Any | None
    test: Any


def load_splits(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    time_steps: int | None = None,
    holdout: int = 0,
    holdout_seed: int = 0,
    download: bool = False,
    **options: Any,
) -> DataSplits:
    """Train and test splits, with ``holdout`` train samples set aside as ``val``.

    The holdout is stratified and fixed by ``holdout_seed`` (:func:`split_holdout`). The test
    split is ImageNet's ``val`` folder for ImageNet.
    """
    spec = dataset_spec(name)
    test_split = "test" if "test" in spec.splits else spec.splits[-1]
    kw = dict(time_steps=time_steps, download=download, **options)
    train = get_dataset(name, root, "train", **kw)
    test = get_dataset(name, root, test_split, **kw)
    val = None
    if holdout:
        train, val = split_holdout(train, holdout, holdout_seed)
    return DataSplits(train, val, test)

"""Any tonic event dataset as a qsnn event dataset: ``get_dataset("tonic:NMNIST", ...)``.

tonic (``pip install 'qsnn[events]'``) reads some twenty event-camera datasets into numpy
structured arrays with fields ``x``, ``y``, ``t`` (microseconds) and ``p``. :func:`from_tonic`
turns any such dataset, a tonic class or anything that behaves like one (``len``,
``ds[i] -> (events, target)``, ``sensor_size = (W, H, polarities)``), into a
:class:`~qsnn.data.base.TensorData` of frames ``[N, T, 2, H', W']`` binned by qsnn's own frame
code (:func:`qsnn.data.frames.events_to_frames`), so a tonic dataset trains, profiles and
deploys like N-MNIST read from its own files.

``tonic:NAME`` names the class ``tonic.datasets.NAME``; ``root`` is its ``save_to``. tonic
downloads missing files itself; qsnn lets it only with ``download=True`` (``--download``):
otherwise a missing dataset is a :class:`~qsnn.data.errors.MissingDataError` that says so.
Frames are computed on each load (tonic keeps its own files; qsnn's frame cache is for the
datasets it reads itself).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import Augment
from .base import TensorData
from .errors import CorruptDataError, DataError, MissingDataError, require
from .events import Events
from .frames import SPLIT_BY, events_to_frames, parse_size

__all__ = ["PREFIX", "events_of", "from_tonic", "tonic_spec"]

log = logging.getLogger(__name__)

#: Dataset names that start with this are tonic classes.
PREFIX = "tonic:"


def events_of(array: Any, where: str = "a tonic sample") -> Events:
    """qsnn :class:`~qsnn.data.events.Events` of a structured array with fields ``x``, ``y``,
    ``t``, ``p`` (any order, any integer or float types; polarity ``> 0`` is ON)."""
    names = getattr(getattr(array, "dtype", None), "names", None) or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise CorruptDataError(
            f"{where}: events need fields x, y, t, p (a camera's events); got fields "
            f"{list(names) or 'none'}"
        )
    return Events(
        np.asarray(array["x"]).astype(np.int64),
        np.asarray(array["y"]).astype(np.int64),
        np.asarray(array["t"]).astype(np.int64),
        (np.asarray(array["p"]) > 0).astype(np.int64),
    )


def from_tonic(
    dataset: Any,
    *,
    time_steps: int,
    split_by: str = "time",
    size: int | str | Sequence[int] | None = "native",
    name: str | None = None,
    split: str = "train",
    classes: Sequence[str] | None = None,
    augment: Augment | None = None,
) -> TensorData:
    """Frames ``[N, T, 2, H', W']`` of every sample of a tonic dataset (module docstring).

    Args:
        dataset: a tonic dataset or a look-alike (``len``, ``[i] -> (events, target)`` with an
            integer target, ``sensor_size = (W, H, P)``).
        time_steps, split_by, size: as for qsnn's own event datasets (``size="native"`` keeps
            the sensor's resolution).
        name, split: the name and split recorded in the result (default: the class name).
        classes: class names (default: ``dataset.classes`` when it has them, else the labels).
    """
    if not isinstance(time_steps, int) or time_steps < 1:
        raise DataError(f"time_steps must be an integer >= 1; got {time_steps!r}")
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be one of {', '.join(SPLIT_BY)}; got {split_by!r}")
    title = name or type(dataset).__name__
    sensor_size = getattr(dataset, "sensor_size", None)
    if not isinstance(sensor_size, (tuple, list)) or len(sensor_size) < 2:
        raise DataError(
            f"{title}: a tonic dataset has sensor_size = (W, H, P); got {sensor_size!r}"
        )
    sensor = (int(sensor_size[1]), int(sensor_size[0]))  # tonic: (W, H, P); qsnn: (H, W)
    out_hw = parse_size(size, sensor)
    n = len(dataset)
    if n == 0:
        raise MissingDataError(f"{title} {split}: the dataset holds no samples")
    t0 = time.perf_counter()
    frames = np.zeros((n, time_steps, 2, *out_hw), dtype=np.int32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        sample = dataset[i]
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise CorruptDataError(
                f"{title} sample {i}: expected (events, target); got {type(sample).__name__}"
            )
        array, target = sample
        events = events_of(array, f"{title} sample {i}")
        events.check_sensor(sensor[0], sensor[1], Path(f"{title}[{i}]"))
        frames[i] = events_to_frames(
            events, time_steps=time_steps, sensor=sensor, size=out_hw, split_by=split_by
        )
        try:
            labels[i] = int(target)
        except (TypeError, ValueError):
            raise CorruptDataError(
                f"{title} sample {i}: the target must be a class index; got {target!r}"
            ) from None
    if labels.min() < 0:
        raise CorruptDataError(f"{title}: negative class index {int(labels.min())}")
    names = classes if classes is not None else getattr(dataset, "classes", None)
    num = int(labels.max()) + 1
    if not names or len(names) < num:
        names = [str(c) for c in range(num)]
    peak = int(frames.max())
    dtype = next(d for d in (np.uint8, np.int16, np.int32) if peak <= np.iinfo(d).max)
    log.info(
        "%s %s: %d samples -> frames %s in %.1f s",
        title,
        split,
        n,
        frames.shape,
        time.perf_counter() - t0,
    )
    return TensorData(
        name=title,
        split=split,
        inputs=torch.from_numpy(frames.astype(dtype)),
        labels=torch.from_numpy(labels),
        classes=tuple(str(c) for c in names),
        kind="events",
        augment=augment,
        info={
            "source": "tonic",
            "time_steps": time_steps,
            "split_by": split_by,
            "size": list(out_hw),
            "sensor": list(sensor),
        },
    )


def _tonic_class(name: str) -> type:
    tonic = require("tonic", "events", "tonic")
    datasets = tonic.datasets
    exact = getattr(datasets, name, None)
    by_case = {n.lower(): n for n in dir(datasets)}
    cls = (
        exact if isinstance(exact, type) else getattr(datasets, by_case.get(name.lower(), ""), None)
    )
    if not isinstance(cls, type):
        known = sorted(
            n for n in dir(datasets) if n[:1].isupper() and isinstance(getattr(datasets, n), type)
        )
        raise DataError(f"tonic has no dataset {name!r}; it has: {', '.join(known)}")
    return cls


def tonic_spec(name: str) -> Any:
    """The registry entry of ``tonic:NAME`` (``qsnn.data.registry.DatasetSpec``)."""
    from .registry import DatasetSpec

    cls_name = name[len(PREFIX) :]
    cls = _tonic_class(cls_name)
    takes_train = "train" in inspect.signature(cls.__init__).parameters
    classes = getattr(cls, "classes", None)

    def load(
        root: Path,
        split: str,
        *,
        download: bool = False,
        time_steps: int,
        split_by: str = "time",
        size: Any = "native",
        augment: Augment | None = None,
    ) -> TensorData:
        guarded = cls if download else _without_download(cls, root)
        kwargs = {"save_to": str(root)}
        if takes_train:
            kwargs["train"] = split == "train"
        dataset = guarded(**kwargs)
        return from_tonic(
            dataset,
            time_steps=time_steps,
            split_by=split_by,
            size=size,
            name=name,
            split=split,
            augment=augment,
        )

    return DatasetSpec(
        name=name,
        loader=load,
        kind="events",
        title=f"tonic {cls_name}",
        layout=f"what tonic.datasets.{cls_name} keeps under save_to (= --data-root)",
        obtain="tonic downloads it: pass --download (download=True)",
        num_classes=len(classes) if classes else 0,
        splits=("train", "test") if takes_train else ("train",),
        description=f"tonic.datasets.{cls_name}, binned by qsnn's frame code",
    )


def _without_download(cls: type, root: Path) -> type:
    """``cls`` whose ``download`` raises instead of touching the network."""

    def download(self: Any) -> None:
        raise MissingDataError(
            f"tonic {cls.__name__}: its files are not under {root} (tonic would download "
            "them now); pass --download (download=True) to let it"
        )

    return type(cls.__name__, (cls,), {"download": download})

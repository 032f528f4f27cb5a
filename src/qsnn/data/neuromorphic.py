"""Event datasets: N-MNIST, DVS128 Gesture, CIFAR10-DVS, N-Caltech101 as cached frames.

Each recording becomes ``T`` frames of per-polarity counts ``[T, 2, H, W]``
(:mod:`qsnn.data.frames`), resized by scaling event coordinates (so frame sums equal event
counts), stored as ``[N, T, 2, H, W]`` in the smallest integer type that holds the largest
count (uint8, int16 or int32), and cached on disk (:mod:`qsnn.data.cache`). Batches come out
time-major, ``[T, B, 2, H, W]``.

Standard layouts under ``root`` (or under the named folder inside it):

- ``nmnist``: ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``; ATIS 34x34; official split.
- ``dvs128_gesture``: the official ``DvsGesture/user*_*.aedat`` (AEDAT 3.1) with
  ``*_labels.csv`` and ``trials_to_train.txt``/``trials_to_test.txt`` (without them: users
  1-23 train, 24-29 test), or tonic's repack ``ibmGestureTrain|ibmGestureTest/<trial>/
  <label>.npy``; DVS128 128x128; one sample per labelled gesture.
- ``cifar10_dvs``: ``<class>/cifar10_<class>_<i>.aedat`` (AEDAT 2.0; tonic's ``.aedat4``
  repack is read through tonic); DVS128 128x128; no official split.
- ``ncaltech101``: ``Caltech101/<class>/image_*.bin``; ATIS, up to 240x180; no official split.

The fixed 9:1 split of the last two takes, per class, the first ``ceil(0.9 n)`` recordings in
sorted file-name order for train and the rest for test
(:func:`~qsnn.data.base.per_class_split`). Frames are 48x48 by default (the paper's setting)
except N-MNIST, which keeps its native 34x34 unless ``size`` is given; ``size="native"``
keeps any sensor's resolution. Nothing here downloads: the files must be obtained by hand
(the error says from where).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import Augment
from .base import TensorData, per_class_split
from .cache import cache_root, file_fingerprint, load_frames, params_key, save_frames
from .errors import CorruptDataError, DataError, MissingDataError
from .events import (
    Events,
    decode_dvs128_cifar10dvs,
    read_aedat2,
    read_aedat4_with_tonic,
    read_aedat31,
    read_gesture_labels,
    read_nmnist_bin,
    read_tonic_gesture_npy,
)
from .frames import SPLIT_BY, events_to_frames, parse_size
from .registry import register_dataset

__all__ = ["Recording", "build_event_data"]

log = logging.getLogger(__name__)

FRAMES_FORMAT = 1
"""Bump when the frames made from the same files and parameters would change."""

Size = int | str | Sequence[int] | None


@dataclass(frozen=True)
class Recording:
    """One sample: a file, its label, and for DVS128 Gesture the ``[start, end)`` window."""

    path: Path
    label: int
    window: tuple[int, int] | None = None


def _check_params(time_steps: int, split_by: str) -> None:
    if not isinstance(time_steps, int) or time_steps < 1:
        raise DataError(f"time_steps must be an integer >= 1; got {time_steps!r}")
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be one of {', '.join(SPLIT_BY)}; got {split_by!r}")


def _default_padding(height: int) -> int:
    return max(1, height // 12)  # 4 pixels at 48x48


def build_event_data(
    name: str,
    split: str,
    recordings: Sequence[Recording],
    *,
    reader: Callable[[Path], Events],
    base: Path,
    classes: Sequence[str],
    sensor: tuple[int, int],
    time_steps: int,
    split_by: str = "time",
    size: Size = 48,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    augment: Augment | None = None,
    extra_files: Iterable[Path] = (),
    extra_params: dict[str, Any] | None = None,
) -> TensorData:
    """Turn ``recordings`` into a frame :class:`TensorData`, through the disk cache.

    ``reader(path)`` decodes a file; its events must lie on ``sensor = (H, W)``. The cache key
    holds every parameter and the size and mtime of every file read (``extra_files`` too).
    """
    _check_params(time_steps, split_by)
    out_hw = parse_size(size, sensor)
    if not recordings:
        raise MissingDataError(f"{name} {split}: no recordings found under {base}")
    files = sorted({r.path for r in recordings}) + sorted(set(extra_files))
    params: dict[str, Any] = {
        "dataset": name,
        "split": split,
        "format": FRAMES_FORMAT,
        "time_steps": time_steps,
        "split_by": split_by,
        "size": list(out_hw),
        "sensor": list(sensor),
        "samples": [[str(r.path.relative_to(base)), r.label, r.window] for r in recordings],
        "files": file_fingerprint(files, base),
        **(extra_params or {}),
    }
    info = {k: v for k, v in params.items() if k not in ("samples", "files")}
    info["source"] = str(base)
    cache_file = None
    if cache:
        key = params_key(params)[:16]
        fname = f"{name}-{split}-T{time_steps}-{split_by}-{out_hw[0]}x{out_hw[1]}-{key}.pt"
        cache_file = cache_root(cache_dir) / "frames" / fname
        hit = load_frames(cache_file, params)
        if hit is not None:
            log.info("%s %s: %d recordings from cache %s", name, split, hit["n"], cache_file)
            return _make(name, split, hit["frames"], hit["labels"], classes, augment, info)
    t0 = time.perf_counter()
    frames = _frames_of(recordings, reader, sensor, out_hw, time_steps, split_by, workers)
    labels = torch.tensor([r.label for r in recordings], dtype=torch.int64)
    log.info(
        "%s %s: %d recordings -> frames %s %s in %.1f s",
        name, split, len(recordings), tuple(frames.shape), frames.dtype,
        time.perf_counter() - t0,
    )
    if cache_file is not None:
        save_frames(cache_file, params, frames, labels)
    return _make(name, split, frames, labels, classes, augment, info)


def _make(
    name: str, split: str, frames: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
    augment: Augment | None, info: dict[str, Any],
) -> TensorData:
    return TensorData(
        name=name, split=split, inputs=frames, labels=labels, classes=tuple(classes),
        kind="events", augment=augment, info=info,
    )


_DTYPES = (np.uint8, np.int16, np.int32)


def _frames_of(
    recordings: Sequence[Recording],
    reader: Callable[[Path], Events],
    sensor: tuple[int, int],
    out_hw: tuple[int, int],
    time_steps: int,
    split_by: str,
    workers: int | None,
) -> torch.Tensor:
    """Counts ``[N, T, 2, H', W']`` of every recording, in the smallest integer dtype."""
    by_file: dict[Path, list[int]] = {}
    for i, r in enumerate(recordings):
        by_file.setdefault(r.path, []).append(i)

    def work(path: Path) -> list[tuple[int, np.ndarray, int]]:
        ev = reader(path).check_sensor(sensor[0], sensor[1], path)
        out = []
        for i in by_file[path]:
            win = recordings[i].window
            sel = ev.window(*win) if win is not None else ev
            fr = events_to_frames(
                sel, time_steps=time_steps, sensor=sensor, size=out_hw, split_by=split_by
            )
            out.append((i, fr.astype(np.int32), len(sel)))
        return out

    n = len(recordings)
    arr = np.zeros((n, time_steps, 2, *out_hw), dtype=np.uint8)  # [N, T, 2, H', W']
    paths = list(by_file)
    nworkers = workers if workers is not None else min(8, os.cpu_count() or 1)
    empty = 0
    chunk = 256
    with ThreadPoolExecutor(max(1, nworkers)) as ex:
        for lo in range(0, len(paths), chunk):
            for results in ex.map(work, paths[lo : lo + chunk]):
                for i, fr, count in results:
                    empty += count == 0
                    peak = int(fr.max()) if fr.size else 0
                    while peak > np.iinfo(arr.dtype).max:
                        arr = arr.astype(_DTYPES[_DTYPES.index(arr.dtype.type) + 1])
                    arr[i] = fr
            if len(paths) > chunk:
                log.info("read %d / %d files", min(lo + chunk, len(paths)), len(paths))
    if empty:
        log.warning("%d of %d recordings have no events in their window", empty, n)
    return torch.from_numpy(arr)


def _no_download(title: str, obtain: str) -> str:
    return f"qsnn cannot download {title} automatically; {obtain}"


def _missing(title: str, expected: str, obtain: str, download: bool) -> MissingDataError:
    extra = " (" + _no_download(title, obtain) + ")" if download else f"; {obtain}"
    return MissingDataError(f"{title} not found: expected {expected}{extra}")


# --- N-MNIST ---------------------------------------------------------------------------

NMNIST_OBTAIN = (
    "get Train.zip and Test.zip from https://www.garrickorchard.com/datasets/n-mnist and "
    "unzip them into that folder"
)


def _nmnist_recordings(root: Path, split: str, download: bool) -> tuple[Path, list[Recording]]:
    sub = "Train" if split == "train" else "Test"
    for base in (root, root / "NMNIST", root / "N-MNIST", root / "nmnist"):
        for s in (sub, sub.lower()):
            folder = base / s
            if folder.is_dir():
                recs = [
                    Recording(f, d)
                    for d in range(10)
                    for f in sorted((folder / str(d)).glob("*.bin"))
                ]
                if not recs:
                    raise MissingDataError(
                        f"N-MNIST {split}: {folder}/ has no <digit>/*.bin recordings; "
                        f"{NMNIST_OBTAIN}"
                    )
                missing = [d for d in range(10) if not (folder / str(d)).is_dir()]
                if missing:
                    log.warning("N-MNIST %s: %s lacks digit folders %s", split, folder, missing)
                return base, recs
    raise _missing(
        "N-MNIST", f"{root}/{sub}/<digit>/*.bin (or {root}/NMNIST/{sub}/...)", NMNIST_OBTAIN,
        download,
    )


@register_dataset(
    "nmnist",
    kind="events",
    title="N-MNIST",
    layout="Train/<digit>/*.bin, Test/<digit>/*.bin",
    obtain="https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip)",
    num_classes=10,
    aliases=("n_mnist",),
    description="70,000 ATIS recordings of MNIST digits (60,000 / 10,000), 34x34, ~0.3 s each",
)
def _nmnist(
    root: Path, split: str, *, download: bool = False, time_steps: int, split_by: str = "time",
    size: Size = None, cache: bool = True, cache_dir: str | None = None,
    workers: int | None = None,
) -> TensorData:
    base, recs = _nmnist_recordings(root, split, download)
    sensor = (34, 34)
    hw = parse_size(size, sensor)
    return build_event_data(
        "nmnist", split, recs, reader=read_nmnist_bin, base=base,
        classes=[str(d) for d in range(10)], sensor=sensor, time_steps=time_steps,
        split_by=split_by, size=hw, cache=cache, cache_dir=cache_dir, workers=workers,
        augment=None,
    )


# --- DVS128 Gesture --------------------------------------------------------------------

GESTURE_CLASSES = (
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
)
GESTURE_OBTAIN = (
    "get DvsGesture.tar.gz from https://research.ibm.com/interactive/dvsgesture/ and unpack it "
    "there (or tonic's repack ibmGestureTrain/ and ibmGestureTest/)"
)


def _gesture_official(folder: Path, split: str) -> tuple[list[Recording], list[Path]]:
    trials = folder / f"trials_to_{split}.txt"
    listed = trials.is_file()
    if listed:
        names = sorted({ln.strip() for ln in trials.read_text().splitlines() if ln.strip()})
        extra = [trials]
    else:  # the official split: users 1-23 train, 24-29 test
        names = []
        for f in sorted(folder.glob("user*.aedat")):
            user = int(f.name[4:6]) if f.name[4:6].isdigit() else 0
            if (user <= 23) == (split == "train"):
                names.append(f.name)
        extra = []
    recs: list[Recording] = []
    for name in names:
        aedat = folder / name
        labels = folder / (Path(name).stem + "_labels.csv")
        for f in (aedat, labels):
            if not f.is_file():
                where = f" (listed in {trials})" if listed else ""
                raise MissingDataError(f"DVS128 Gesture is incomplete: {f} is missing{where}")
        recs += [Recording(aedat, lab, (s, e)) for lab, s, e in read_gesture_labels(labels)]
        extra.append(labels)
    return recs, extra


def _gesture_tonic(folder: Path) -> list[Recording]:
    recs = []
    for f in sorted(folder.rglob("*.npy")):
        if not f.stem.isdigit() or not 0 <= int(f.stem) < len(GESTURE_CLASSES):
            raise CorruptDataError(f"{f}: tonic's DVS128 Gesture files are named <label 0..10>.npy")
        recs.append(Recording(f, int(f.stem)))
    return recs


@register_dataset(
    "dvs128_gesture",
    kind="events",
    title="DVS128 Gesture",
    layout="DvsGesture/{user*_*.aedat, user*_*_labels.csv, trials_to_train.txt, "
    "trials_to_test.txt} or tonic's ibmGestureTrain|ibmGestureTest/<trial>/<label>.npy",
    obtain="https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz)",
    num_classes=11,
    aliases=("dvsgesture", "dvs_gesture", "dvs128gesture", "gesture"),
    description="1,342 DVS128 recordings of 11 hand and arm gestures by 29 people, 128x128",
)
def _gesture(
    root: Path, split: str, *, download: bool = False, time_steps: int, split_by: str = "time",
    size: Size = 48, cache: bool = True, cache_dir: str | None = None,
    workers: int | None = None, format: str = "auto",
) -> TensorData:
    if format not in ("auto", "aedat", "tonic"):
        raise DataError(f"format must be 'auto', 'aedat' or 'tonic'; got {format!r}")
    sensor = (128, 128)
    hw = parse_size(size, sensor)
    common = dict(
        classes=GESTURE_CLASSES, sensor=sensor, time_steps=time_steps, split_by=split_by,
        size=hw, cache=cache, cache_dir=cache_dir, workers=workers,
        augment=Augment(padding=_default_padding(hw[0]), flip=False),  # flips swap classes
    )
    if format in ("auto", "aedat"):
        for folder in (root / "DvsGesture", root / "DVSGesture", root / "DVS128Gesture", root):
            if folder.is_dir() and any(folder.glob("user*.aedat")):
                recs, extra = _gesture_official(folder, split)
                return build_event_data(
                    "dvs128_gesture", split, recs, reader=read_aedat31, base=folder,
                    extra_files=extra, **common,
                )
    if format in ("auto", "tonic"):
        sub = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
        for base in (root, root / "DVSGesture", root / "dvs128_gesture"):
            if (base / sub).is_dir():
                return build_event_data(
                    "dvs128_gesture", split, _gesture_tonic(base / sub),
                    reader=read_tonic_gesture_npy, base=base, **common,
                )
    raise _missing(
        "DVS128 Gesture",
        f"{root}/DvsGesture/user*_*.aedat with *_labels.csv and trials_to_{split}.txt "
        f"(or tonic's {root}/ibmGesture{'Train' if split == 'train' else 'Test'}/)",
        GESTURE_OBTAIN, download,
    )


# --- CIFAR10-DVS -----------------------------------------------------------------------

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_DVS_OBTAIN = (
    "get the ten class archives (airplane.zip ... truck.zip) from "
    "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 and unzip them there"
)


def _read_cifar10_dvs(path: Path) -> Events:
    if path.suffix == ".aedat4":
        return read_aedat4_with_tonic(path)
    return decode_dvs128_cifar10dvs(*read_aedat2(path))


@register_dataset(
    "cifar10_dvs",
    kind="events",
    title="CIFAR10-DVS",
    layout="<class>/cifar10_<class>_<i>.aedat for the 10 CIFAR-10 classes",
    obtain="https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
    num_classes=10,
    aliases=("cifar10dvs",),
    description="10,000 DVS128 recordings of moving CIFAR-10 images (1,000 per class), 128x128",
)
def _cifar10_dvs(
    root: Path, split: str, *, download: bool = False, time_steps: int, split_by: str = "time",
    size: Size = 48, cache: bool = True, cache_dir: str | None = None,
    workers: int | None = None, train_ratio: float = 0.9,
) -> TensorData:
    cands = (root, root / "CIFAR10DVS", root / "CIFAR10-DVS", root / "cifar10_dvs",
             root / "cifar10-dvs")
    folder = next((c for c in cands if (c / "airplane").is_dir()), None)
    if folder is None:
        raise _missing(
            "CIFAR10-DVS", f"{root}/<class>/*.aedat with class folders "
            f"{', '.join(CIFAR10_CLASSES)} (or under {root}/CIFAR10DVS/)",
            CIFAR10_DVS_OBTAIN, download,
        )
    recs: list[Recording] = []
    for label, cls in enumerate(CIFAR10_CLASSES):
        d = folder / cls
        files = sorted(d.glob("*.aedat")) or sorted(d.glob("*.aedat4"))
        if not files:
            raise MissingDataError(
                f"CIFAR10-DVS is incomplete: {d}/ has no .aedat recordings; {CIFAR10_DVS_OBTAIN}"
            )
        recs += [Recording(f, label) for f in files]
    train_idx, test_idx = per_class_split([r.label for r in recs], train_ratio)
    chosen = [recs[i] for i in (train_idx if split == "train" else test_idx)]
    hw = parse_size(size, (128, 128))
    return build_event_data(
        "cifar10_dvs", split, chosen, reader=_read_cifar10_dvs, base=folder,
        classes=CIFAR10_CLASSES, sensor=(128, 128), time_steps=time_steps, split_by=split_by,
        size=hw, cache=cache, cache_dir=cache_dir, workers=workers,
        augment=Augment(padding=_default_padding(hw[0]), flip=True),
        extra_params={"train_ratio": train_ratio},
    )


# --- N-Caltech101 ----------------------------------------------------------------------

NCALTECH_OBTAIN = (
    "get Caltech101.zip from https://www.garrickorchard.com/datasets/n-caltech101 and unzip it "
    "there"
)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and any(d.glob("*.bin")))


@register_dataset(
    "ncaltech101",
    kind="events",
    title="N-Caltech101",
    layout="Caltech101/<class>/image_*.bin (101 class folders)",
    obtain="https://www.garrickorchard.com/datasets/n-caltech101 (Caltech101.zip)",
    num_classes=101,
    aliases=("n_caltech101", "ncaltech"),
    description="8,709 ATIS recordings of Caltech101 images, 101 classes, up to 240x180",
)
def _ncaltech101(
    root: Path, split: str, *, download: bool = False, time_steps: int, split_by: str = "time",
    size: Size = 48, cache: bool = True, cache_dir: str | None = None,
    workers: int | None = None, train_ratio: float = 0.9,
) -> TensorData:
    folder = None
    for cand in (root / "Caltech101", root / "N-Caltech101", root / "ncaltech101", root):
        if cand.is_dir() and _class_dirs(cand):
            folder = cand
            break
    if folder is None:
        raise _missing(
            "N-Caltech101", f"{root}/Caltech101/<class>/*.bin", NCALTECH_OBTAIN, download
        )
    dirs = _class_dirs(folder)
    recs = [Recording(f, k) for k, d in enumerate(dirs) for f in sorted(d.glob("*.bin"))]
    train_idx, test_idx = per_class_split([r.label for r in recs], train_ratio)
    chosen = [recs[i] for i in (train_idx if split == "train" else test_idx)]
    sensor = (180, 240)
    hw = parse_size(size, sensor)
    return build_event_data(
        "ncaltech101", split, chosen, reader=read_nmnist_bin, base=folder,
        classes=[d.name for d in dirs], sensor=sensor, time_steps=time_steps,
        split_by=split_by, size=hw, cache=cache, cache_dir=cache_dir, workers=workers,
        augment=Augment(padding=_default_padding(hw[0]), flip=True),
        extra_params={"train_ratio": train_ratio},
    )

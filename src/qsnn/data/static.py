"""Static image datasets held in memory as uint8: CIFAR-10, CIFAR-100 and the embedded digits.

- **CIFAR-10 / CIFAR-100** (Krizhevsky 2009): the standard python layout of the official
  archives (``cifar-10-batches-py/``, ``cifar-100-python/``), read once into a uint8 tensor
  ``[N, 3, 32, 32]`` (CIFAR-10 train: 50,000 images, 150 MB). The pickles are read with a
  restricted unpickler that only accepts numpy arrays and plain containers. ``download=True``
  fetches the official archive (MD5-checked).
- **digits** (the embedded offline default): scikit-learn's bundled copy of the UCI optical
  recognition of handwritten digits test set, 1,797 grayscale images of 8x8 pixels with 17
  gray levels (0..16), 10 classes, about 180 per class. It needs no download and no network;
  it is tiny and easy (a linear model reaches about 95 %), so it shows that the whole pipeline
  runs, not what a method is worth. qsnn splits it with a fixed seed, per class, into 1,438
  train and 359 test images, scales the gray levels to 0..255 and can upsample it (``size``).
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Augment
from .base import TensorData
from .download import download_and_extract
from .errors import CorruptDataError, DataError, MissingDataError, require
from .registry import register_dataset

__all__ = ["load_cifar", "load_digits"]

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_CIFAR: dict[str, dict[str, Any]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names": "label_names",
        "classes": {"fine": 10},
        "rows": {"train": 10_000, "test": 10_000},  # per batch file
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names": "fine_label_names",
        "classes": {"fine": 100, "coarse": 20},
        "rows": {"train": 50_000, "test": 10_000},
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
    },
}


# A CIFAR pickle holds at most one array of ``rows`` x 3,072 uint8 (``_CIFAR[...]["rows"]``:
# 10,000 per file, 50,000 in CIFAR-100's single train file); meta files hold none.
_CIFAR_ROW_BYTES = 3 * 32 * 32
_META_MAX_BYTES = 1 << 20


class _Refused(pickle.UnpicklingError):
    """A pickle that declares something a CIFAR file cannot hold (refused before allocating)."""


def _size_text(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} bytes"


def _check_array(shape: Any, dtype: np.dtype, max_bytes: int) -> None:
    """Refuse an array declaration a CIFAR file cannot hold, before anything is allocated."""
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _Refused(f"declares an array of shape {shape!r}, not a tuple of sizes")
    if dtype.hasobject:
        raise _Refused(f"declares an array of Python objects ({dtype}); CIFAR holds numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise _Refused(
            f"declares a {dtype} array of shape {shape} ({_size_text(nbytes)}), more than this "
            f"file can hold (at most {max_bytes // _CIFAR_ROW_BYTES:,} x {_CIFAR_ROW_BYTES:,} "
            f"uint8); refusing to allocate it"
        )


class _CheckedArray(np.ndarray):
    """What ``_reconstruct`` builds while unpickling: its ``__setstate__`` (the pickle's BUILD)
    checks the declared shape, dtype and data size before numpy allocates anything. Turned back
    into plain ``np.ndarray`` views once the pickle is loaded (:func:`_plain`)."""

    _max_bytes: int = 0

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"array state is not a numpy array state: {type(state).__name__}")
        shape, dtype, _fortran, raw = state[-4:]
        if not isinstance(dtype, np.dtype):
            raise _Refused(f"array state has dtype {type(dtype).__name__}, not a numpy dtype")
        _check_array(shape, dtype, self._max_bytes)
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise _Refused(
                f"array of shape {shape} and dtype {dtype} comes with "
                f"{len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__} "
                f"bytes of data, not {math.prod(shape) * dtype.itemsize}"
            )
        super().__setstate__(state)


def _plain(obj: Any, depth: int = 0) -> Any:
    """``obj`` with every ``_CheckedArray`` (in dicts, lists, tuples) as a plain ndarray view."""
    if isinstance(obj, _CheckedArray):
        return obj.view(np.ndarray)
    if depth > 8:
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, depth + 1) for v in obj)
    return obj


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, bytes and numbers only (no arbitrary code), and no
    array larger than ``max_bytes`` (checked from its declared shape, before allocating)."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes in Python 3 pickles of protocol <= 2
        }
    )

    def __init__(self, file: Any, *, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._array = type("_CheckedArray", (_CheckedArray,), {"_max_bytes": max_bytes})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            return super().find_class(module, name)
        # numpy 2 renamed numpy.core to numpy._core; accept pickles written by either.
        for mod in (module, module.replace("numpy.core", "numpy._core"), "numpy.core.multiarray"):
            try:
                found = getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
            return self._reconstruct(found) if name == "_reconstruct" else self._scalar(found)
        raise pickle.UnpicklingError(f"cannot find {module}.{name}")

    def _reconstruct(self, reconstruct: Any) -> Any:
        array_cls, max_bytes = self._array, self._array._max_bytes

        def checked(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
            # numpy's _reconstruct allocates ``shape`` at once (a real pickle declares (0,) and
            # fills the array in __setstate__): check it first, and build the checked subclass.
            if cls is not np.ndarray:
                raise _Refused(f"refusing to build an array of class {cls!r}")
            _check_array(shape, np.dtype(typecode), max_bytes)
            return reconstruct(array_cls, shape, typecode)

        return checked

    @staticmethod
    def _scalar(scalar: Any) -> Any:
        def checked(dtype: Any, data: Any = None) -> Any:
            if not isinstance(dtype, np.dtype) or dtype.hasobject:
                raise _Refused(f"refusing a numpy scalar of dtype {dtype!r}")
            if not isinstance(data, bytes) or len(data) != dtype.itemsize:
                raise _Refused(f"numpy scalar of dtype {dtype} without its {dtype.itemsize} bytes")
            return scalar(dtype, data)

        return checked


def _unpickle(path: Path, max_bytes: int) -> dict[str, Any]:
    """The dict pickled in ``path``; any problem is one ``CorruptDataError`` naming the file."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, max_bytes=max_bytes, encoding="bytes").load()
    except _Refused as err:
        raise CorruptDataError(f"{path}: not a CIFAR python pickle: {err}") from err
    except MemoryError as err:  # e.g. a bytes object declared 10**13 long
        raise CorruptDataError(
            f"{path}: not a CIFAR python pickle: it declares an object too large for memory"
        ) from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OverflowError, RecursionError) as err:
        raise CorruptDataError(f"{path}: truncated or not a CIFAR python pickle ({err})") from err
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v
            for k, v in _plain(obj).items()}


def _describe(value: Any) -> str:
    """A short description of an unexpected value for an error message."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {len(value)} ({', '.join(kinds) or 'empty'})"
    return "nothing" if value is None else f"{type(value).__name__} {value!r:.40}"


def _class_names(path: Path, meta: dict[str, Any], key: str, expected: int) -> tuple[str, ...]:
    """The ``expected`` class names stored under ``key`` of a meta file (str or bytes)."""
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(c, (bytes, str)) for c in names
    ):
        raise CorruptDataError(
            f"{path}: {key!r} must be a list of {expected} class names; got {_describe(names)}"
        )
    if len(names) != expected:
        raise CorruptDataError(f"{path}: {key!r} has {len(names)} class names, not {expected}")
    try:
        return tuple(c.decode() if isinstance(c, bytes) else c for c in names)
    except UnicodeDecodeError as err:
        raise CorruptDataError(f"{path}: {key!r} holds a name that is not UTF-8 ({err})") from err


def _batch_labels(path: Path, lab: Any, key: str, rows: int, num_classes: int) -> np.ndarray:
    """The ``rows`` labels of one batch file as int64, each in ``0..num_classes - 1``."""
    ints = (int, np.integer)
    ok = (
        isinstance(lab, (list, tuple))
        and all(isinstance(v, ints) and not isinstance(v, (bool, np.bool_)) for v in lab)
    ) or (isinstance(lab, np.ndarray) and lab.ndim == 1 and lab.dtype.kind in "iu")
    if not ok:
        raise CorruptDataError(
            f"{path}: {key!r} must be a list of {rows} integer labels; got {_describe(lab)}"
        )
    if len(lab) != rows:
        raise CorruptDataError(f"{path}: {len(lab)} {key!r} for {rows} images")
    if rows:
        low, high = int(min(lab)), int(max(lab))
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise CorruptDataError(
                f"{path}: {key!r} holds label {bad}, outside 0..{num_classes - 1}"
            )
    return np.asarray(lab, dtype=np.int64)


def _find_folder(root: Path, folder: str) -> Path | None:
    for cand in (root / folder, root):
        if cand.name == folder and cand.is_dir():
            return cand
    return None


def load_cifar(
    root: Path, split: str, *, download: bool = False, variant: str = "cifar10",
    labels: str = "fine",
) -> TensorData:
    """CIFAR-10/100 from the standard python layout; ``labels`` picks CIFAR-100's
    ``"fine"`` (100) or ``"coarse"`` (20) classes."""
    cfg = _CIFAR[variant]
    if labels not in ("fine", "coarse"):
        raise DataError(f"labels must be 'fine' or 'coarse'; got {labels!r}")
    folder = _find_folder(root, cfg["folder"])
    if folder is None and download:
        folder = download_and_extract(cfg["url"], cfg["md5"], root, cfg["folder"])
    expected = root / cfg["folder"]
    files = [*cfg[split], cfg["meta"]]
    if folder is None:
        raise MissingDataError(
            f"{cfg['title']} not found: expected {expected}/ with {', '.join(files)} (the "
            f"standard python layout of {cfg['url']}); unpack that archive into {root} or "
            f"pass download=True (--download)"
        )
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise MissingDataError(
            f"{cfg['title']} is incomplete: {folder}/ lacks {', '.join(missing)}; unpack "
            f"{cfg['url']} into {folder.parent} again"
        )
    meta = _unpickle(folder / cfg["meta"], _META_MAX_BYTES)
    coarse = variant == "cifar100" and labels == "coarse"
    name_key = "coarse_label_names" if coarse else cfg["names"]
    if name_key not in meta:
        raise CorruptDataError(f"{folder / cfg['meta']}: no {name_key!r} entry")
    classes = _class_names(folder / cfg["meta"], meta, name_key, cfg["classes"][labels])
    label_key = "labels" if variant == "cifar10" else f"{labels}_labels"
    max_rows = cfg["rows"][split]
    out: np.ndarray | None = None  # filled batch by batch: peak memory ~ data + one batch
    filled, targets = 0, []
    for fname in cfg[split]:
        path = folder / fname
        batch = _unpickle(path, max_rows * _CIFAR_ROW_BYTES)
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or \
                data.shape[1] != _CIFAR_ROW_BYTES:
            raise CorruptDataError(
                f"{path}: expected 'data' uint8 [N, 3072] (N <= {max_rows:,}); got "
                f"{_describe(data)}"
            )
        targets.append(_batch_labels(path, lab, label_key, len(data), len(classes)))
        if out is None:  # official batches are equal-sized: guess the total from the first
            out = np.empty((len(data) * len(cfg[split]), 3072), dtype=np.uint8)
        if filled + len(data) > len(out):
            out = np.concatenate([out[:filled], data])
        else:
            out[filled : filled + len(data)] = data
        filled += len(data)
        del data, batch
    if out is None:  # cfg[split] is never empty
        raise CorruptDataError(f"{folder}: no {split} batches")
    data = out[:filled]
    y = np.concatenate(targets)
    images = torch.from_numpy(data).view(-1, 3, 32, 32)  # rows are channel-planar RGB
    log.info("%s %s: %d images from %s", cfg["title"], split, len(y), folder)
    return TensorData(
        name=variant,
        split=split,
        inputs=images,
        labels=torch.from_numpy(y),
        classes=classes,
        kind="static",
        mean=cfg["mean"],
        std=cfg["std"],
        augment=Augment(padding=4, flip=True),
        info={"source": str(folder), "labels": labels if variant == "cifar100" else "fine"},
    )


@register_dataset(
    "cifar10",
    kind="static",
    title="CIFAR-10",
    layout="cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
    obtain=_CIFAR["cifar10"]["url"] + " (or download=True)",
    num_classes=10,
    aliases=("cifar_10",),
    description="60,000 32x32 RGB images (50,000 train / 10,000 test), 10 classes",
)
def _cifar10(root: Path, split: str, *, download: bool = False) -> TensorData:
    return load_cifar(root, split, download=download, variant="cifar10")


@register_dataset(
    "cifar100",
    kind="static",
    title="CIFAR-100",
    layout="cifar-100-python/{train, test, meta}",
    obtain=_CIFAR["cifar100"]["url"] + " (or download=True)",
    num_classes=100,
    aliases=("cifar_100",),
    description="60,000 32x32 RGB images (50,000 train / 10,000 test), 100 classes (20 coarse)",
)
def _cifar100(
    root: Path, split: str, *, download: bool = False, labels: str = "fine"
) -> TensorData:
    return load_cifar(root, split, download=download, variant="cifar100", labels=labels)


DIGITS_TEST_FRACTION = 0.2


def _digits_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded ``round(0.2 n_k)`` go to test; both sorted."""
    rng = np.random.default_rng(seed)
    test = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[: round(DIGITS_TEST_FRACTION * len(idx))])
    test_idx = np.sort(np.concatenate(test))
    mask = np.ones(len(y), dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def load_digits(
    root: Path, split: str, *, download: bool = False, size: int = 8, seed: int = 0
) -> TensorData:
    """The embedded digits (see the module docstring): uint8 ``[N, 1, size, size]``.

    ``size`` > 8 upsamples bilinearly (once, at load). ``seed`` fixes the train/test split
    (the default 0 gives 1,438 / 359). ``root`` and ``download`` are not used.
    """
    if size < 8:
        raise DataError(f"digits size must be >= 8 (native 8x8); got {size}")
    sk = require("sklearn.datasets", "digits", "scikit-learn")
    bunch = sk.load_digits()
    x = np.round(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    y = np.asarray(bunch.target, dtype=np.int64)
    images = torch.from_numpy(x).unsqueeze(1)  # [N, 8, 8] -> [N, 1, 8, 8]
    if size != 8:
        up = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        images = up.round().clamp_(0, 255).to(torch.uint8)  # [N, 1, size, size]
    train_idx, test_idx = _digits_split(y, seed)
    train = images[torch.from_numpy(train_idx)].float() / 255.0
    mean, std = (float(train.mean()),), (float(train.std()),)
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return TensorData(
        name="digits",
        split=split,
        inputs=images[idx].contiguous(),
        labels=torch.from_numpy(y)[idx],
        classes=tuple(str(c) for c in range(10)),
        kind="static",
        mean=mean,
        std=std,
        augment=Augment(padding=max(1, size // 8), flip=False),
        info={"source": "sklearn.datasets.load_digits", "size": size, "seed": seed},
    )


@register_dataset(
    "digits",
    kind="static",
    title="digits (embedded)",
    layout="nothing: ships inside scikit-learn",
    obtain='pip install "qsnn[digits]" (scikit-learn)',
    num_classes=10,
    description="1,797 8x8 grayscale handwritten digits (1,438 train / 359 test), 10 classes",
)
def _digits(
    root: Path, split: str, *, download: bool = False, size: int = 8, seed: int = 0
) -> TensorData:
    return load_digits(root, split, download=download, size=size, seed=seed)

"""ImageNet (ILSVRC-2012) from the usual class-folder layout, decoded per batch.

``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the validation images sorted into
class folders, as the common ``valprep.sh`` does). 1.28 M images do not fit in memory as
uint8, so :class:`ImageFolderData` keeps the file list and decodes batches in DataLoader
worker processes with Pillow (the ``vision`` extra): train images get a random resized crop
(scale 0.08..1, aspect 3/4..4/3, as torchvision's ``RandomResizedCrop``), val images a center
crop of 87.5 % of the shorter side, both resized to ``image_size``. Each worker returns uint8
``[3, S, S]``; the flip and the normalization run on the batch, on its device, as for the
in-memory datasets. The crop of sample ``i`` is fixed by ``(seed, epoch, i)``.

:class:`ImageFolderData` is also a ``torch.utils.data.Dataset``: ``ds[i] -> (x, y)`` decodes
sample ``i`` as ``ds.batches(b)`` with its defaults does (``seed = epoch = 0``; the train
split's random resized crop is part of decoding, so ``ds[i]`` is that fixed crop; no flip),
normalized float32 ``[3, S, S]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .augment import Augment
from .base import (
    BatchOptions,
    BatchOrder,
    Sample,
    collate_samples,
    derive_seed,
    normalize,
    sample_index,
)
from .errors import CorruptDataError, DataError, MissingDataError, require
from .registry import register_dataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderData", "load_image_folder"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp"})
IMAGENET_OBTAIN = (
    "ImageNet is never downloaded automatically (its licence needs a sign-up): get ILSVRC-2012 "
    "from https://image-net.org/ and arrange train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
)


def _random_resized_box(
    width: int, height: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box (scale 0.08..1, log-uniform aspect 3/4..4/3)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            left = int(rng.integers(0, width - cw + 1))
            top = int(rng.integers(0, height - ch + 1))
            return left, top, left + cw, top + ch
    side = min(width, height)  # fallback: the central square
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class _DecodeImages(Dataset):
    """Decodes file ``i`` to uint8 ``[3, S, S]`` (runs in DataLoader workers)."""

    def __init__(
        self, files: Sequence[Path], labels: Tensor, size: int, train: bool, seed: int, epoch: int
    ) -> None:
        self.files, self.labels = files, labels
        self.size, self.train, self.seed, self.epoch = size, train, seed, epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        pil = require("PIL.Image", "vision", "Pillow")
        path = self.files[i]
        try:
            with pil.open(path) as im:
                im = im.convert("RGB")
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptDataError(f"{path}: truncated or not an image ({err})") from err
        w, h = im.size
        if self.train:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, i, "crop"))
            box = _random_resized_box(w, h, rng)
        else:
            side = 0.875 * min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            box = (left, top, left + side, top + side)
        im = im.resize((self.size, self.size), pil.Resampling.BILINEAR, box=box)
        x = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)  # HWC -> CHW
        return x.contiguous(), self.labels[i]


@dataclass(frozen=True, eq=False)
class ImageFolderData(Dataset[Sample]):
    """One split of a class-folder image dataset, decoded per batch (see module docstring).

    A ``torch.utils.data.Dataset`` of ``(x, y)`` samples (:meth:`__getitem__`); the fast path
    is :meth:`batches` (decoding in worker processes).
    """

    name: str
    split: str
    files: tuple[Path, ...]
    labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    image_size: int = 224
    """Side of the square crops."""
    random_crop: bool = True
    """Random resized crops (train) or center crops (val)."""
    augment: Augment | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "static"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        """Sample ``index`` (negative: from the end) as ``(x, y)``, exactly as ``batches()``
        with its defaults yields it: the split's crop at ``seed = epoch = 0``, no flip,
        normalized float32 ``[3, S, S]``; ``y`` int64 ``[]``."""
        i = sample_index(index, len(self))
        decode = _DecodeImages(self.files, self.labels, self.image_size, self.random_crop, 0, 0)
        x, y = decode[i]
        return self.to_float(x.unsqueeze(0))[0], y

    def collate(self, samples: Sequence[Sample]) -> Sample:
        """``collate_fn`` for a ``DataLoader`` over this data: ``(x [B, 3, S, S], y [B])``,
        the default stacking (here the batch-major layout of :meth:`batches`)."""
        return collate_samples(samples, self.kind)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        """Where decoded batches start: the CPU (``batches(device=...)`` moves them)."""
        return torch.device("cpu")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def time_steps(self) -> None:
        return None

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, indices: Tensor | Sequence[int], split: str | None = None) -> ImageFolderData:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(
            self,
            split=split or self.split,
            files=tuple(self.files[i] for i in idx.tolist()),
            labels=self.labels[idx],
        )

    def to_float(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        return normalize(x, self.mean, self.std, dtype)

    def batches(
        self, batch_size: int, *, workers: int = 4, **options: Unpack[BatchOptions]
    ) -> ImageBatchIterator:
        """Batches ``(x [B, 3, S, S] float, y [B])``, like :meth:`TensorData.batches`; images
        are decoded in ``workers`` DataLoader processes."""
        return ImageBatchIterator(self, batch_size, workers=workers, **options)


class ImageBatchIterator(BatchOrder):
    """Batches of an :class:`ImageFolderData` via a DataLoader (options: :class:`BatchOrder`)."""

    data: ImageFolderData

    def __init__(
        self,
        data: ImageFolderData,
        batch_size: int,
        *,
        workers: int = 4,
        **options: Unpack[BatchOptions],
    ) -> None:
        super().__init__(data, batch_size, **options)
        self.workers = workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        d = self.data
        order = self.order.tolist()
        chunks = [
            order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))
        ]
        loader = DataLoader(
            _DecodeImages(d.files, d.labels, d.image_size, d.random_crop, self.seed, self.epoch),
            batch_sampler=chunks,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        gen = self.augment_generator()
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)  # uint8 [B, 3, S, S]
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, gen)
            yield d.to_float(x, self.dtype), y


def _scan(folder: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for k, cls in enumerate(classes):
        d = folder / cls
        if not d.is_dir():
            raise MissingDataError(f"ImageNet: {d}/ is missing (train/ has class {cls})")
        found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        files += found
        labels += [k] * len(found)
    return files, labels


def load_image_folder(
    root: Path, split: str, *, download: bool = False, image_size: int = 224
) -> ImageFolderData:
    """ImageNet's ``train``/``val`` class folders (``test`` reads ``val``)."""
    require("PIL.Image", "vision", "Pillow")
    if download:
        raise DataError(IMAGENET_OBTAIN)
    if image_size < 8:
        raise DataError(f"image_size must be >= 8; got {image_size}")
    base = next((b for b in (root, root / "imagenet", root / "ILSVRC2012")
                 if (b / "train").is_dir() and (b / "val").is_dir()), None)
    if base is None:
        raise MissingDataError(
            f"ImageNet not found: expected {root}/train/<wnid>/*.JPEG and "
            f"{root}/val/<wnid>/*.JPEG; {IMAGENET_OBTAIN}"
        )
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise MissingDataError(f"ImageNet: {base}/train/ has no class folders")
    sub = "train" if split == "train" else "val"
    files, labels = _scan(base / sub, classes)
    if not files:
        raise MissingDataError(f"ImageNet: no images under {base / sub}/<wnid>/")
    log.info("ImageNet %s: %d images in %d classes under %s", sub, len(files), len(classes), base)
    return ImageFolderData(
        name="imagenet",
        split=sub,
        files=tuple(files),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=tuple(classes),
        image_size=image_size,
        random_crop=split == "train",
        augment=Augment(flip=True),
        info={"source": str(base), "image_size": image_size},
    )


@register_dataset(
    "imagenet",
    kind="static",
    title="ImageNet",
    layout="train/<wnid>/*.JPEG, val/<wnid>/*.JPEG",
    obtain="https://image-net.org/ (ILSVRC-2012; sign-up needed)",
    num_classes=1000,
    splits=("train", "val", "test"),
    aliases=("ilsvrc2012", "imagenet1k"),
    description="1.28 M train / 50,000 val images, 1,000 classes, decoded per batch",
)
def _imagenet(
    root: Path, split: str, *, download: bool = False, image_size: int = 224
) -> ImageFolderData:
    return load_image_folder(root, split, download=download, image_size=image_size)

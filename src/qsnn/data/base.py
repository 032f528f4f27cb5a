"""In-memory datasets and the batch iterator.

A :class:`TensorData` holds one split in memory, in the layout the models take once batched:

- static images: ``inputs`` uint8 ``[N, C, H, W]`` (0..255), normalized per batch by
  ``(x / 255 - mean) / std``; batches come out as float ``[B, C, H, W]``;
- event frames: ``inputs`` integer counts ``[N, T, 2, H, W]`` (channel 0: OFF, 1: ON events);
  batches come out time-major as float ``[T, B, 2, H, W]``.

``labels`` are int64 ``[N]``. :meth:`TensorData.batches` shuffles with a seed, selects whole
batches by index (no per-sample Python), moves them to the device, augments them there and
converts them to float.

A :class:`TensorData` is also a ``torch.utils.data.Dataset``: ``len(ds)`` samples and
``ds[i] -> (x, y)``, sample ``i`` exactly as ``ds.batches(b)`` yields it with its defaults
(no augmentation, float32, on the data's device): static ``x`` normalized ``[C, H, W]``,
event ``x`` float counts ``[T, 2, H, W]``, ``y`` an int64 scalar tensor. So
``DataLoader(ds, batch_size=b)`` works; its default collation stacks events batch-major
``[B, T, 2, H, W]``, while ``collate_fn=ds.collate`` gives the models' time-major layout,
equal to ``batches()``. Augmentation stays on the batched path (``batches(augment=True)``).
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .augment import Augment
from .errors import DataError

__all__ = [
    "BatchIterator",
    "BatchOptions",
    "BatchOrder",
    "TensorData",
    "normalize",
    "per_class_split",
    "raw_input_bits",
    "split_holdout",
]

Kind = Literal["static", "events"]
Sample = tuple[Tensor, Tensor]


def raw_input_bits(kind: str) -> int | None:
    """Bits per value of a data kind's raw input, as ``profile`` and ``estimate`` take them.

    Static images are 8-bit pixels (uint8 ``0..255``, normalized on the way in): ``8``.
    Event frames are per-polarity counts with no fixed width: ``None``, meaning the width is
    inferred from the values seen. This is the one place the rule is written; the model zoo's
    metadata (:func:`qsnn.models.model_info`) and every caller that profiles data use it.
    """
    if kind == "static":
        return 8
    if kind == "events":
        return None
    raise DataError(f"data kind must be 'static' or 'events'; got {kind!r}")


def sample_index(index: object, n: int) -> int:
    """Sequence indexing of ``n`` samples: an integer in ``-n .. n - 1`` -> ``0 .. n - 1``.

    Negative indices count from the end, as for a list; anything outside raises
    ``IndexError``, a non-integer ``TypeError`` (slices are not samples).
    """
    try:
        i = operator.index(index)  # int, numpy integers, 0-d integer tensors
    except TypeError:
        raise TypeError(
            f"dataset indices must be integers; got {type(index).__name__}"
        ) from None
    if not -n <= i < n:
        raise IndexError(f"sample index {i} out of range for {n} samples")
    return i + n if i < 0 else i


def collate_samples(samples: Sequence[Sample], kind: str) -> Sample:
    """Stack ``(x, y)`` samples into the batch layout of ``batches()``: ``x [B, ...]`` for
    static images, time-major ``[T, B, 2, H, W]`` for event frames; ``y [B]``."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    x = torch.stack([s[0] for s in samples])
    y = torch.stack([torch.as_tensor(s[1]) for s in samples])
    if kind == "events":
        x = x.transpose(0, 1).contiguous()  # [B, T, 2, H, W] -> [T, B, 2, H, W]
    return x, y


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (seed, epoch, rank, purpose), stable across runs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def normalize(
    x: Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> Tensor:
    """uint8 images ``[B, C, H, W]`` -> float ``(x / 255 - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return ((x.to(torch.float32) / 255.0 - m) / s).to(dtype)


@dataclass(frozen=True, eq=False)
class TensorData(Dataset[Sample]):
    """One split of a dataset held in memory (see the module docstring for the layouts).

    A ``torch.utils.data.Dataset`` of ``(x, y)`` samples (:meth:`__getitem__`); the fast path
    is :meth:`batches`.
    """

    name: str
    """Registry name of the dataset, e.g. ``"cifar10"``."""
    split: str
    """``"train"``, ``"test"``, or a derived name such as ``"val"`` (see :func:`split_holdout`)."""
    inputs: Tensor
    """Static: uint8 ``[N, C, H, W]``; events: integer counts ``[N, T, 2, H, W]``."""
    labels: Tensor
    """int64 ``[N]``, in ``0 .. num_classes - 1``."""
    classes: tuple[str, ...]
    """Class names, indexed by label."""
    kind: Kind = "static"
    """``"static"`` or ``"events"``."""
    mean: tuple[float, ...] | None = None
    """Per-channel mean of ``x / 255`` used by :meth:`to_float` (static only)."""
    std: tuple[float, ...] | None = None
    """Per-channel standard deviation of ``x / 255`` (static only)."""

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` of the model inputs of static data (what ``profile`` takes as
        ``input_normalization`` to count the raw pixels' bit-planes); ``None`` for events."""
        if self.kind != "static" or self.mean is None or self.std is None:
            return None
        return self.mean, self.std
    augment: Augment | None = None
    """The dataset's standard augmentation, used by ``batches(augment=True)``."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Where the data came from and every parameter that shaped it."""

    def __post_init__(self) -> None:
        want = 4 if self.kind == "static" else 5
        layout = "[N, C, H, W]" if self.kind == "static" else "[N, T, 2, H, W]"
        if self.kind not in ("static", "events"):
            raise DataError(f"kind must be 'static' or 'events'; got {self.kind!r}")
        if self.inputs.dim() != want:
            raise DataError(
                f"{self.name}: {self.kind} inputs must be {layout}; got {tuple(self.inputs.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.inputs.shape[0]:
            raise DataError(
                f"{self.name}: labels must be [N] with N = {self.inputs.shape[0]}; "
                f"got {tuple(self.labels.shape)}"
            )
        if self.kind == "static" and (self.mean is None or self.std is None):
            raise DataError(f"{self.name}: static data needs mean and std")

    # -- description ---------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    # -- samples (torch.utils.data.Dataset) -------------------------------------------------
    def __getitem__(self, index: int) -> Sample:
        """Sample ``index`` (negative: from the end) as ``(x, y)``, exactly as
        ``batches()`` with its defaults yields it: static ``x`` normalized float32
        ``[C, H, W]``, events float32 counts ``[T, 2, H, W]``; ``y`` int64 ``[]``. No
        augmentation (the batched path augments only when asked)."""
        i = sample_index(index, len(self))
        return self.to_float(self.inputs[i : i + 1])[0], self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """``[self[i] for i in indices]`` with one gather and one conversion (the DataLoader
        fetches a batch of indices through this)."""
        n = len(self)
        idx = torch.tensor([sample_index(i, n) for i in indices], dtype=torch.long)
        x = self.to_float(self.inputs.index_select(0, idx.to(self.inputs.device)))
        y = self.labels.index_select(0, idx.to(self.labels.device))
        return list(zip(x.unbind(0), y.unbind(0), strict=True))

    def collate(self, samples: Sequence[Sample]) -> Sample:
        """``collate_fn`` for a ``DataLoader`` over this data: the batches of :meth:`batches`
        (time-major ``[T, B, 2, H, W]`` for events)."""
        return collate_samples(samples, self.kind)

    def __repr__(self) -> str:
        return (
            f"TensorData(name={self.name!r}, split={self.split!r}, kind={self.kind!r}, "
            f"n={len(self)}, inputs={tuple(self.inputs.shape)} {self.inputs.dtype}, "
            f"classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample at one step: ``(C, H, W)`` static, ``(2, H, W)`` events."""
        return tuple(self.inputs.shape[1:] if self.kind == "static" else self.inputs.shape[2:])

    @property
    def time_steps(self) -> int | None:
        """``T`` of event frames; ``None`` for static images (the encoder adds ``T``)."""
        return int(self.inputs.shape[1]) if self.kind == "events" else None

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def class_counts(self) -> list[int]:
        """Number of samples of each class."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()

    # -- derived datasets ----------------------------------------------------------------
    def to(self, device: torch.device | str) -> TensorData:
        """The same data on ``device`` (e.g. the whole uint8 CIFAR-10, 150 MB, on the GPU)."""
        return replace(self, inputs=self.inputs.to(device), labels=self.labels.to(device))

    def subset(self, indices: Tensor | Sequence[int], split: str | None = None) -> TensorData:
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.inputs.device)
        return replace(
            self,
            split=split or self.split,
            inputs=self.inputs.index_select(0, idx),
            labels=self.labels.index_select(0, idx.to(self.labels.device)),
        )

    # -- batches -------------------------------------------------------------------------
    def to_float(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """A raw batch (stored layout) -> model input: normalized images or float counts."""
        if self.kind == "static" and self.mean is not None and self.std is not None:
            return normalize(x, self.mean, self.std, dtype)
        return x.to(dtype)

    def batches(self, batch_size: int, **options: Unpack[BatchOptions]) -> BatchIterator:
        """Iterate over ``(x, y)`` batches; ``options`` as :class:`BatchOrder` takes them."""
        return BatchIterator(self, batch_size, **options)


class BatchOptions(TypedDict, total=False):
    """The keyword options every ``batches()`` takes (defaults and meaning: :class:`BatchOrder`)."""

    shuffle: bool
    seed: int
    epoch: int
    drop_last: bool
    device: torch.device | str | None
    augment: bool | Augment | None
    dtype: torch.dtype
    rank: int
    world_size: int


def resolve_augment(default: Augment | None, augment: bool | Augment | None) -> Augment | None:
    """``True``: the dataset's default; an :class:`Augment`: that one; ``None``/``False``: none."""
    if isinstance(augment, Augment):
        return augment if augment.enabled else None
    if augment:
        return default if default is not None and default.enabled else None
    return None


def shard_order(
    n: int, *, shuffle: bool, seed: int, epoch: int, drop_last: bool, rank: int, world_size: int
) -> Tensor:
    """Sample order of one epoch for one rank (all ranks share the permutation).

    With ``world_size > 1`` every rank gets the same number of samples: ``n // world_size``
    with ``drop_last``, otherwise ``ceil(n / world_size)``, the last few repeated from the
    start (as ``torch.utils.data.DistributedSampler`` does).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"need 0 <= rank < world_size; got rank={rank}, world_size={world_size}")
    if shuffle:
        g = torch.Generator().manual_seed(derive_seed(seed, epoch, "shuffle"))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if world_size == 1:
        return order
    per = n // world_size if drop_last else math.ceil(n / world_size)
    total = per * world_size
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank:total:world_size]


class BatchOrder:
    """What every batch iterator shares: the sample order of one epoch and the batch settings.

    Args:
        data: the split (anything with ``len()``, ``augment`` and ``device``).
        batch_size: samples per batch (the last batch is smaller unless ``drop_last``).
        shuffle, seed, epoch: a permutation fixed by ``(seed, epoch)``, or the stored order.
        drop_last: drop the last incomplete batch.
        device: where batches go (default: the data's device).
        augment: ``True`` for the dataset's default augmentation, an :class:`Augment`, or none.
        dtype: the float type of ``x``.
        rank, world_size: this process's shard of the order (:func:`shard_order`).

    ``len()`` is the number of batches.
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        augment: bool | Augment | None = None,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1; got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else data.device
        self.augment = resolve_augment(data.augment, augment)
        self.dtype = dtype
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.order = shard_order(
            len(data),
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        self._contiguous = not shuffle and world_size == 1

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def augment_generator(self) -> torch.Generator:
        """The augmentation's random stream, fixed by ``(seed, epoch, rank)``."""
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, "aug"))


class BatchIterator(BatchOrder):
    """Batches of a :class:`TensorData`: ``(x, y)`` with ``x`` float on ``device``.

    Static: ``x`` is ``[B, C, H, W]`` normalized; events: ``x`` is time-major
    ``[T, B, 2, H, W]`` float counts. ``y`` is int64 ``[B]``. The order and the augmentation
    are fixed by ``(seed, epoch)`` (and ``rank`` for the augmentation), whatever the device.
    Options as :class:`BatchOrder`.
    """

    data: TensorData

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        data = self.data
        gen = self.augment_generator()
        order = self.order.to(data.inputs.device)
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, len(order))
            if self._contiguous:
                x, y = data.inputs[lo:hi], data.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x = data.inputs.index_select(0, idx)
                y = data.labels.index_select(0, idx.to(data.labels.device))
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, gen)  # [B, ..., H, W], on the device
            if data.kind == "events":
                x = x.transpose(0, 1).contiguous()  # [B, T, 2, H, W] -> [T, B, 2, H, W]
            yield data.to_float(x, self.dtype), y


def split_holdout(
    data: Any, n: int, seed: int = 0, *, stratified: bool = True, name: str = "val"
) -> tuple[Any, Any]:
    """Split ``n`` samples off ``data`` (e.g. a validation set from the train split).

    Returns ``(rest, holdout)``, both in the original order. ``stratified`` keeps the class
    proportions: class ``k`` with ``c_k`` of ``N`` samples gives ``floor(n * c_k / N)``, the
    ``n`` left over going to the largest remainders; which samples is fixed by ``seed``.
    Works on any dataset object with ``labels`` and ``subset(indices, split)``.
    """
    total = len(data)
    if not 0 < n < total:
        raise DataError(f"holdout size must be in 1..{total - 1} for {data.name}; got {n}")
    labels = data.labels.cpu().numpy()
    rng = np.random.default_rng(derive_seed(seed, "holdout"))
    if stratified:
        classes, counts = np.unique(labels, return_counts=True)
        exact = n * counts / total
        take = np.floor(exact).astype(np.int64)
        short = n - int(take.sum())
        take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
        chosen = [
            rng.permutation(np.flatnonzero(labels == c))[:k]
            for c, k in zip(classes, take, strict=True)
        ]
        held = np.sort(np.concatenate(chosen))
    else:
        held = np.sort(rng.permutation(total)[:n])
    mask = np.ones(total, dtype=bool)
    mask[held] = False
    rest = np.flatnonzero(mask)
    return data.subset(torch.from_numpy(rest)), data.subset(torch.from_numpy(held), split=name)


def per_class_split(
    labels: Sequence[int], train_ratio: float = 0.9
) -> tuple[list[int], list[int]]:
    """Fixed per-class split of items listed in a fixed (sorted) order.

    For each class, the first ``ceil(train_ratio * n_k)`` items go to train and the rest to
    test (SpikingJelly's ``split_to_train_test_set`` rule without shuffling, so results
    compare with papers that used it). Returns the train and test positions.
    """
    if not 0 < train_ratio < 1:
        raise DataError(f"train_ratio must be in (0, 1); got {train_ratio}")
    seen: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        seen.setdefault(int(lab), []).append(i)
    train: list[int] = []
    test: list[int] = []
    for items in seen.values():
        cut = math.ceil(len(items) * train_ratio)
        train.extend(items[:cut])
        test.extend(items[cut:])
    return sorted(train), sorted(test)

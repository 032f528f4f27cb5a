"""Augmentation on whole batches, on the device the batch lives on.

The functions take a batch ``[B, ..., H, W]`` (static images ``[B, C, H, W]`` or event frames
in stored layout ``[B, T, 2, H, W]``; every sample keeps one crop and one flip for all its
channels and time steps) and return a batch of the same shape and dtype. Random parameters
(``B`` offsets, ``B`` coin flips) are drawn from a CPU ``torch.Generator`` and moved to the
batch's device, so a seed gives the same augmentation on every device; the pixel work (pad,
gather, flip) runs on the device, with no per-sample Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError

__all__ = ["Augment", "random_crop", "random_flip"]


def _check_batch(x: Tensor, who: str) -> None:
    if x.dim() < 3:
        raise DataError(f"{who} expects a batch [B, ..., H, W]; got shape {tuple(x.shape)}")


def _groups(values: Tensor, device: torch.device) -> list[tuple[int, Tensor]]:
    """``(v, indices of the samples that drew v)`` for each value drawn (CPU draws)."""
    return [
        (int(v), torch.nonzero(values == v).squeeze(1).to(device))
        for v in torch.unique(values).tolist()
    ]


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding (torchvision's ``RandomCrop(size, padding)``), batched.

    Each sample ``b`` is padded by ``padding`` pixels on every side and cropped back to
    ``H x W`` at an offset ``(dy_b, dx_b)`` uniform in ``[0, 2 * padding]``:
    ``out[b, ..., i, j] = pad(x)[b, ..., i + dy_b, j + dx_b]``.
    """
    _check_batch(x, "random_crop")
    if padding < 0:
        raise DataError(f"random_crop padding must be >= 0; got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    batch, (height, width) = x.shape[0], x.shape[-2:]
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    flat = x.reshape(batch, -1, height, width)  # [B, ..., H, W] -> [B, M, H, W]
    padded = F.pad(flat, (padding, padding, padding, padding))  # [B, M, H+2p, W+2p]
    # Rows, then columns: one slice copy per offset value for the samples that drew it
    # (2 * (2p + 1) copies instead of a gather); the sample groups come from the CPU draws,
    # so nothing waits on the device.
    rows = padded.new_empty(batch, flat.shape[1], height, width + 2 * padding)
    for s, idx in _groups(dy, x.device):
        rows.index_copy_(0, idx, padded.index_select(0, idx)[:, :, s : s + height])
    out = flat.new_empty(flat.shape)  # [B, M, H, W]
    for s, idx in _groups(dx, x.device):
        out.index_copy_(0, idx, rows.index_select(0, idx)[..., s : s + width])
    return out.reshape(x.shape)  # [B, M, H, W] -> [B, ..., H, W]


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Horizontal flip (last axis) of each sample with probability ``p``, batched."""
    _check_batch(x, "random_flip")
    if x.shape[0] == 0:
        return x
    flip = torch.nonzero(torch.rand(x.shape[0], generator=generator) < p).squeeze(1)
    if flip.numel() == 0:
        return x
    idx = flip.to(x.device)
    return x.index_copy(0, idx, x.index_select(0, idx).flip(-1))


@dataclass(frozen=True)
class Augment:
    """A batch augmentation: random crop with ``padding`` (0: none), then a horizontal flip.

    ``Augment(padding=4, flip=True)`` is the standard CIFAR recipe. Call it as
    ``augment(x, generator)`` on ``[B, ..., H, W]``.
    """

    padding: int = 0
    """Zero padding of the random crop, in pixels; 0 turns the crop off."""
    flip: bool = False
    """Flip each sample horizontally with probability 1/2."""

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise DataError(f"Augment padding must be >= 0; got {self.padding}")

    @property
    def enabled(self) -> bool:
        return self.padding > 0 or self.flip

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.padding > 0:
            x = random_crop(x, self.padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x

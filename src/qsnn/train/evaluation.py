"""Evaluation of a model on a whole split, and the channels-last layout of batches."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..data import TensorData

__all__ = ["channels_last", "evaluate"]


def channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last memory: ``[B, C, H, W]``, or every step of ``[T, B, C, H, W]``."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:  # [T, B, C, H, W]: every step channels-last
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on all of ``data``."""
    was = model.training
    model.eval()
    device = torch.device(device)
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for x, y in data.batches(batch_size, device=device):
            if channels_last:
                x = _to_channels_last(x)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
    finally:
        model.train(was)
    return {"acc": correct / max(1, count), "loss": loss_sum / max(1, count), "n": count}


_to_channels_last = channels_last  # ``evaluate``'s flag of the same name hides the function

"""A small VGG-style spiking conv net sized for CPU experiments.

Origin: the reference net of SPEC §11 (and ``benchmarks/neuron_step.py``): five 3x3 convs of
widths 32-64-64-128-128, each followed by batch norm and a neuron, 2x2 max-pools after the 2nd,
4th and 5th conv (32 -> 16 -> 8 -> 4), and one linear classifier on the flattened ``128 x 4 x 4``
map: 0.30 M parameters at 10 classes. Same shape as the plain-PyTorch reference runs, so
accuracy and speed compare fairly. The first conv + batch norm is the stem, computed once for a
static image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn
from torch import Tensor

from ..allocation import Bits, BitsPolicy
from ..temporal import FoldTime, TimeMean
from ._base import SpikingModel
from ._registry import register_model
from .stages import Flatten, Head, Stage, Stem, sequence_stages

__all__ = ["SmallConvNet", "small_convnet"]


class SmallConvNet(SpikingModel):
    """VGG-style 5-conv spiking net (SPEC §11), all layers at the model's allocation.

    Args:
        bits, num_classes, in_channels, img_size, overrides, neuron, quant: as every zoo model
            takes them (:class:`~qsnn.models.SpikingModel`).
        widths: the five conv widths (the classifier takes ``widths[4] * (H // 8) * (W // 8)``
            features, so it depends on ``img_size``).
    """

    def __init__(
        self,
        *,
        bits: Bits | str | BitsPolicy,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        widths: tuple[int, int, int, int, int] = (32, 64, 64, 128, 128),
        overrides: Mapping[str, object] | None = None,
        neuron: Mapping[str, Any] | None = None,
        quant: Mapping[str, Any] | None = None,
    ) -> None:
        f = self._begin(bits, num_classes, in_channels, img_size, neuron, quant)
        _, height, width = self.input_size
        if len(widths) != 5:
            raise ValueError(f"widths must list five conv widths; got {widths!r}")
        if height < 8 or width < 8:
            raise ValueError(
                f"img_size must be at least 8x8 (three 2x2 max-pools); got {img_size!r}"
            )
        w0, w1, w2, w3, w4 = widths
        self.stem = f.stem(f.conv_bn(in_channels, w0, 3), in_channels=in_channels)
        self.features = nn.Sequential(
            f.conv_bn_neuron(w0, w1, 3), FoldTime(nn.MaxPool2d(2)),  # -> H/2
            f.conv_bn_neuron(w1, w2, 3),
            f.conv_bn_neuron(w2, w3, 3), FoldTime(nn.MaxPool2d(2)),  # -> H/4
            f.conv_bn_neuron(w3, w4, 3), FoldTime(nn.MaxPool2d(2)),  # -> H/8
        )
        self.head = f.linear(w4 * (height // 8) * (width // 8), num_classes)
        self.readout = TimeMean()
        self._finish(bits, overrides)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> flattened spikes ``[T, B, 128*h*w]``."""
        x = self.features(self.stem(x))  # -> [T, B, 128, H/8, W/8]
        return x.flatten(2)  # [T, B, 128, h, w] -> [T, B, 128*h*w]

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.head(self.forward_features(x)))  # [T, B, K] -> [B, K]

    def stages(self) -> tuple[Stage, ...]:
        """The forward pass declared stage by stage (``qsnn.models.stages``)."""
        return (Stem(self.stem), *sequence_stages(self.features), Flatten(),
                Head(self.head, self.readout))


@register_model
def small_convnet(**kwargs: Any) -> SmallConvNet:
    """Small 5-conv net for CPU experiments (32x32, 10 classes): 0.30 M params."""
    return SmallConvNet(**kwargs)

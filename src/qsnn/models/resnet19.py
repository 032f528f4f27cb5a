"""ResNet-19, the common SNN baseline on CIFAR.

Paper: H. Zheng et al., "Going Deeper With Directly-Trained Larger Spiking Neural Networks"
(tdBN), AAAI 2021; the layout used since by TET (Deng et al., ICLR 2022) and most SNN papers.
Origin of the layout: the public TET code (``models/resnet_models.py``, ``resnet19``):

- stem ``conv3x3 (3 -> 64) -> bn -> neuron``;
- three stages of spiking BasicBlocks ``[3, 3, 2]`` at 128, 256, 512 channels (strides 1, 2, 2;
  the first block of each stage has a ``conv1x1 -> bn`` shortcut);
- global average pool, ``fc1`` (512 -> 256) -> neuron, ``head`` (256 -> classes).

That is 12.63 M parameters at 10 classes, the figure SNN papers quote. (Some descriptions give a
128-channel stem; that variant has 12.70 M and is not the one the quoted count belongs to.)

The block is a classic spiking ResNet block: ``out = neuron(bn2(conv2(h)) + shortcut(x))``; the
residual sum is taken on the membrane input of a neuron, so every conv still sees ``b_s``-bit
spikes and no restricted ADD is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn
from torch import Tensor

from ..allocation import Bits, BitsPolicy
from ..temporal import FoldTime, TimeMean, fold_time
from ._base import SpikingModel
from ._registry import register_model
from .layers import LayerFactory
from .stages import (
    ConvSpike,
    Flatten,
    Head,
    LinearSpike,
    MembraneResidual,
    Pool,
    Stage,
    Stem,
    sequence_stages,
)

__all__ = ["ResNet19", "SpikingBasicBlock", "resnet19"]


class SpikingBasicBlock(nn.Module):
    """``h = conv1-bn-neuron(x)``, ``out = neuron(bn2(conv2(h)) + shortcut(x))``.

    ``[T, B, C_in, H, W] -> [T, B, C, H/s, W/s]``; the shortcut is ``conv1x1-bn`` or identity.
    """

    def __init__(self, f: LayerFactory, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = f.conv_bn_neuron(inplanes, planes, 3, stride)
        self.conv2 = f.conv_bn(planes, planes, 3)
        needs_shortcut = stride != 1 or inplanes != planes
        self.downsample = f.conv_bn(inplanes, planes, 1, stride) if needs_shortcut else None
        self.sn = f.neuron_module()

    def forward(self, x: Tensor) -> Tensor:
        out = fold_time(self.conv2, self.conv1(x))  # [T, B, C, H, W]
        identity = x if self.downsample is None else fold_time(self.downsample, x)
        return self.sn(out + identity)  # residual sum into the neuron's membrane

    def stage(self) -> MembraneResidual:
        """This block as a declared stage (``qsnn.models.stages``)."""
        return MembraneResidual((ConvSpike(self.conv1),), self.conv2, self.downsample, self.sn)


class ResNet19(SpikingModel):
    """ResNet-19 (Zheng et al. 2021; TET layout), all layers at the model's allocation.

    Args:
        bits, num_classes, in_channels, img_size, overrides, neuron, quant: as every zoo model
            takes them (:class:`~qsnn.models.SpikingModel`).
        stem_width: stem channels (64 in the reference code).
        widths: the three stages' widths and ``fc1``'s (``128, 256, 512, 256``; smaller values
            make a narrow variant for quick tests).
    """

    def __init__(
        self,
        *,
        bits: Bits | str | BitsPolicy,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        stem_width: int = 64,
        widths: tuple[int, int, int, int] = (128, 256, 512, 256),
        overrides: Mapping[str, object] | None = None,
        neuron: Mapping[str, Any] | None = None,
        quant: Mapping[str, Any] | None = None,
    ) -> None:
        f = self._begin(bits, num_classes, in_channels, img_size, neuron, quant)
        self.stem = f.stem(f.conv_bn(in_channels, stem_width, 3), in_channels=in_channels)
        if len(widths) != 4:
            raise ValueError(f"widths must list three stage widths and fc1's; got {widths!r}")
        w1, w2, w3, w_fc = widths
        self._inplanes = stem_width
        self.layer1 = self._make_layer(f, w1, 3)
        self.layer2 = self._make_layer(f, w2, 3, stride=2)
        self.layer3 = self._make_layer(f, w3, 2, stride=2)
        self.pool = FoldTime(nn.AdaptiveAvgPool2d(1))
        self.fc1 = f.linear(w3, w_fc)
        self.fc1_sn = f.neuron_module()
        self.head = f.linear(w_fc, num_classes)
        self.readout = TimeMean()
        self._finish(bits, overrides, kaiming_convs=True)

    def _make_layer(
        self, f: LayerFactory, planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        layers = [SpikingBasicBlock(f, self._inplanes, planes, stride)]
        self._inplanes = planes
        layers += [SpikingBasicBlock(f, planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> ``fc1`` spikes ``[T, B, 256]``."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # -> [T, B, 512, h, w]
        x = self.pool(x).flatten(2)  # [T, B, 512, 1, 1] -> [T, B, 512]
        return self.fc1_sn(self.fc1(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.head(self.forward_features(x)))  # [T, B, K] -> [B, K]

    def stages(self) -> tuple[Stage, ...]:
        """The forward pass declared stage by stage (``qsnn.models.stages``)."""
        blocks = [s for layer in (self.layer1, self.layer2, self.layer3)
                  for s in sequence_stages(layer)]
        return (Stem(self.stem), *blocks, Pool(self.pool), Flatten(),
                LinearSpike(self.fc1, self.fc1_sn), Head(self.head, self.readout))


@register_model
def resnet19(**kwargs: Any) -> ResNet19:
    """ResNet-19 for CIFAR (32x32, 10 classes): 12.63 M params."""
    return ResNet19(**kwargs)

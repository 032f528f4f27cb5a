"""SEW-ResNet-18/34/50 with the ADD connection, restricted to ``b_s`` bits.

Paper: W. Fang et al., "Deep Residual Learning in Spiking Neural Networks", NeurIPS 2021
(spike-element-wise residual blocks, ``out = SEW(block(x), identity)`` with ``ADD``).
Origin of the layout: SpikingJelly ``activation_based/model/sew_resnet.py``, itself torchvision's
``resnet.py``: same convs, batch norms and classifier, so parameter counts equal torchvision's
(SEW-ResNet-34 21.80 M, SEW-ResNet-50 25.56 M at 1000 classes), a neuron after every batch norm
and on the downsample branch (``conv1x1 -> bn -> neuron``).

Change from Shen et al. (CVPR 2024, SPEC §6): the ADD is restricted to ``b_s`` bits. Both inputs
are spikes on one shared threshold; their integer levels are added and clamped to
``[0, 2**b_s - 1]`` (``SEWAdd``), so every block outputs ``b_s``-bit spikes and the next conv's
input really is ``b_s``-bit. The shared threshold is one ``LevelScale`` per grid: the stem's
neuron, every block's last neuron and ADD up to the first downsample branch share one, and each
downsample neuron starts a new one for its stage (so a step set from data or learned keeps the
two inputs of every ADD on one grid).

Names: ``sew_resnet{18,34,50}`` use the ImageNet stem (7x7/2 conv, bn, neuron, 3x3/2 max-pool;
1000 classes, 224x224); ``sew_resnet{18,34,50}_cifar`` use the CIFAR stem (3x3/1 conv, bn,
neuron, no pool; 10 classes, 32x32). Either stem can also be chosen with ``stem=``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch.nn as nn
from torch import Tensor

from ..allocation import Bits, BitsPolicy
from ..level_scale import LevelScale
from ..temporal import FoldTime, TimeMean
from ._base import SpikingModel
from ._registry import register_model
from .layers import ConvBNNeuron, LayerFactory, SEWAdd
from .stages import ConvSpike, Flatten, Head, Pool, SEWResidual, Stage, Stem, sequence_stages

__all__ = [
    "SEWBasicBlock",
    "SEWBottleneck",
    "SEWResNet",
    "sew_resnet18",
    "sew_resnet18_cifar",
    "sew_resnet34",
    "sew_resnet34_cifar",
    "sew_resnet50",
    "sew_resnet50_cifar",
]

StemKind = Literal["imagenet", "cifar"]


def _sew_stage(body: Sequence[ConvBNNeuron], downsample: ConvBNNeuron | None, add: SEWAdd
               ) -> SEWResidual:
    """A SEW block's stage: its conv-bn-neurons, the downsample (or identity), the ADD."""
    shortcut = (ConvSpike(downsample),) if downsample is not None else ()
    return SEWResidual(tuple(ConvSpike(m) for m in body), shortcut, add)


class SEWBasicBlock(nn.Module):
    """``conv3x3-bn-neuron -> conv3x3-bn-neuron``, restricted ADD with the (downsampled) input.

    ``[T, B, C_in, H, W] -> [T, B, C, H/s, W/s]``; input and output are ``b_s``-bit spikes.
    ``grid`` is the level scale of the input; the ADD's two inputs (the last neuron and the
    identity or the downsample neuron) share one grid, which is also the output's (``add.level``).
    """

    expansion = 1

    def __init__(self, f: LayerFactory, inplanes: int, planes: int, stride: int = 1,
                 downsample: bool = False, *, grid: LevelScale) -> None:
        super().__init__()
        grid = f.level_scale() if downsample else grid  # a downsample branch starts a new grid
        self.conv1 = f.conv_bn_neuron(inplanes, planes, 3, stride)
        self.conv2 = f.conv_bn_neuron(planes, planes, 3, level=grid)
        self.downsample = (
            f.conv_bn_neuron(inplanes, planes, 1, stride, level=grid) if downsample else None
        )
        self.add = f.sew_add(grid)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(out, identity)

    def stage(self) -> SEWResidual:
        """This block as a declared stage (``qsnn.models.stages``)."""
        return _sew_stage((self.conv1, self.conv2), self.downsample, self.add)


class SEWBottleneck(nn.Module):
    """``1x1 -> 3x3 (stride) -> 1x1 (x4)``, each conv-bn-neuron, restricted ADD (ResNet v1.5)."""

    expansion = 4

    def __init__(self, f: LayerFactory, inplanes: int, planes: int, stride: int = 1,
                 downsample: bool = False, *, grid: LevelScale) -> None:
        super().__init__()
        out = planes * self.expansion
        grid = f.level_scale() if downsample else grid  # a downsample branch starts a new grid
        self.conv1 = f.conv_bn_neuron(inplanes, planes, 1)
        self.conv2 = f.conv_bn_neuron(planes, planes, 3, stride)
        self.conv3 = f.conv_bn_neuron(planes, out, 1, level=grid)
        self.downsample = (
            f.conv_bn_neuron(inplanes, out, 1, stride, level=grid) if downsample else None
        )
        self.add = f.sew_add(grid)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.add(out, identity)

    def stage(self) -> SEWResidual:
        """This block as a declared stage (``qsnn.models.stages``)."""
        return _sew_stage((self.conv1, self.conv2, self.conv3), self.downsample, self.add)


class SEWResNet(SpikingModel):
    """SEW-ResNet with restricted ADD connections (Fang et al. 2021; Shen et al. 2024).

    Args:
        block: ``SEWBasicBlock`` or ``SEWBottleneck``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for SEW-ResNet-34.
        bits, num_classes, in_channels, img_size, overrides, neuron, quant: as every zoo model
            takes them (:class:`~qsnn.models.SpikingModel`).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"`` (3x3/1 conv, no pool).
        widths: the stem's and the four stages' base widths (``64, 128, 256, 512``; smaller
            values make a narrow variant for quick tests).

    Modules: ``stem`` (its conv computed once for static input), ``layer1..4``, ``pool``,
    ``head`` (per-step classifier) and ``readout`` (mean over ``T``).
    """

    def __init__(
        self,
        block: type[SEWBasicBlock] | type[SEWBottleneck],
        layers: Sequence[int],
        *,
        bits: Bits | str | BitsPolicy,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        stem: StemKind = "imagenet",
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        overrides: Mapping[str, object] | None = None,
        neuron: Mapping[str, Any] | None = None,
        quant: Mapping[str, Any] | None = None,
    ) -> None:
        f = self._begin(bits, num_classes, in_channels, img_size, neuron, quant)
        if len(widths) != 4:
            raise ValueError(f"widths must list four stage widths; got {widths!r}")
        w1, w2, w3, w4 = widths
        if stem == "imagenet":
            conv_bn, pool = f.conv_bn(in_channels, w1, 7, 2, 3), nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            conv_bn, pool = f.conv_bn(in_channels, w1, 3, 1, 1), None
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar'; got {stem!r}")
        self.stem_kind = stem
        grid = f.level_scale()  # the stem's spikes; the identity path carries this grid on
        self.stem = f.stem(conv_bn, pool, in_channels=in_channels, level=grid)
        self._inplanes = w1
        self.layer1, grid = self._make_layer(f, block, w1, layers[0], grid=grid)
        self.layer2, grid = self._make_layer(f, block, w2, layers[1], stride=2, grid=grid)
        self.layer3, grid = self._make_layer(f, block, w3, layers[2], stride=2, grid=grid)
        self.layer4, grid = self._make_layer(f, block, w4, layers[3], stride=2, grid=grid)
        self.pool = FoldTime(nn.AdaptiveAvgPool2d(1))
        self.head = f.linear(w4 * block.expansion, num_classes)
        self.readout = TimeMean()
        self._finish(bits, overrides, kaiming_convs=True)

    def _make_layer(self, f: LayerFactory, block: type[SEWBasicBlock] | type[SEWBottleneck],
                    planes: int, blocks: int, stride: int = 1, *,
                    grid: LevelScale) -> tuple[nn.Sequential, LevelScale]:
        """A stage and the grid of its output (a new one after a downsample branch)."""
        downsample = stride != 1 or self._inplanes != planes * block.expansion
        layers = [block(f, self._inplanes, planes, stride, downsample, grid=grid)]
        grid = layers[0].add.level
        self._inplanes = planes * block.expansion
        layers += [block(f, self._inplanes, planes, grid=grid) for _ in range(1, blocks)]
        return nn.Sequential(*layers), grid

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> pooled features ``[T, B, D]``."""
        x = self.stem(x)  # -> [T, B, 64, H', W']
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> [T, B, D, h, w]
        return self.pool(x).flatten(2)  # [T, B, D, 1, 1] -> [T, B, D]

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.head(self.forward_features(x)))  # [T, B, K] -> [B, K]

    def stages(self) -> tuple[Stage, ...]:
        """The forward pass declared stage by stage (``qsnn.models.stages``)."""
        blocks = [s for layer in (self.layer1, self.layer2, self.layer3, self.layer4)
                  for s in sequence_stages(layer)]
        return (Stem(self.stem), *blocks, Pool(self.pool), Flatten(),
                Head(self.head, self.readout))


def _create_sew_resnet(
    block: type[SEWBasicBlock] | type[SEWBottleneck], layers: Sequence[int],
    defaults: Mapping[str, Any], kwargs: Mapping[str, Any],
) -> SEWResNet:
    return SEWResNet(block, layers, **{**defaults, **kwargs})


_IMAGENET = {"num_classes": 1000, "img_size": 224, "stem": "imagenet"}
_CIFAR = {"num_classes": 10, "img_size": 32, "stem": "cifar"}


@register_model
def sew_resnet18(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-18, ImageNet stem, 224x224, 1000 classes (11.69 M params)."""
    return _create_sew_resnet(SEWBasicBlock, (2, 2, 2, 2), _IMAGENET, kwargs)


@register_model
def sew_resnet34(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-34, ImageNet stem, 224x224, 1000 classes (21.80 M params)."""
    return _create_sew_resnet(SEWBasicBlock, (3, 4, 6, 3), _IMAGENET, kwargs)


@register_model
def sew_resnet50(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-50, ImageNet stem, 224x224, 1000 classes (25.56 M params)."""
    return _create_sew_resnet(SEWBottleneck, (3, 4, 6, 3), _IMAGENET, kwargs)


@register_model
def sew_resnet18_cifar(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-18, CIFAR stem (3x3/1, no pool), 32x32, 10 classes."""
    return _create_sew_resnet(SEWBasicBlock, (2, 2, 2, 2), _CIFAR, kwargs)


@register_model
def sew_resnet34_cifar(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-34, CIFAR stem (3x3/1, no pool), 32x32, 10 classes."""
    return _create_sew_resnet(SEWBasicBlock, (3, 4, 6, 3), _CIFAR, kwargs)


@register_model
def sew_resnet50_cifar(**kwargs: Any) -> SEWResNet:
    """SEW-ResNet-50, CIFAR stem (3x3/1, no pool), 32x32, 10 classes."""
    return _create_sew_resnet(SEWBottleneck, (3, 4, 6, 3), _CIFAR, kwargs)

"""Spikformer-L-D: spiking patch splitting, spiking self-attention without softmax, MLP.

Paper: Z. Zhou et al., "Spikformer: When Spiking Neural Network Meets Transformer", ICLR 2023.
Origin of the layout: the public Spikformer code (ZK-Zhou/spikformer: ``cifar10/model.py``,
``imagenet/model.py``, ``cifar10dvs/model.py``):

- SPS: four ``conv3x3-bn-neuron`` stages (``D/8, D/4, D/2, D`` channels) with 3x3/2 max-pools
  after the last ``num_pools`` of them (CIFAR 2, ImageNet 4, DVS 4), then a relative position
  embedding ``x = rpe(x) + x`` (``conv3x3-bn-neuron``); tokens ``[T, B, N, D]``.
- SSA: ``q, k, v = neuron(bn(linear(x)))`` (the reference code's ``1x1`` conv), per head
  ``x = (Q K^T) V * scale`` with no softmax, ``attn_sn`` (threshold 0.5), then
  ``proj = neuron(bn(linear(x)))``.
- MLP: ``fc1`` (``D -> 4D``) and ``fc2`` (``4D -> D``), each linear-bn-neuron.
- Block: ``x = x + ssa(x)``, ``x = x + mlp(x)`` (unrestricted sums: the residual stream widens,
  SPEC §5); head: linear on the mean over tokens, per step, then the mean over ``T``.
  The reference's LayerNorms are never called and so are left out (they hold no used parameter).

Change from Shen et al. (CVPR 2024, SPEC §6): the attention matrix is restricted to ``b_s`` bits.
``S = Q K^T`` of each step and head, a matrix of level products (``theta**2`` times an integer),
goes through ``attn_map``, a stateless ``b_s``-bit ``LevelQuantizer`` with step
``theta_q * theta_k`` (``theta**2`` when both neurons share a fixed ``theta``):
``A = clamp(floor(S / (theta_q theta_k)), 0, L) * theta_q theta_k``, i.e. its integer counts
clamped to ``L``.
So ``A V`` multiplies two ``b_s``-bit level tensors, as the bit-serial hardware needs, and S-ACE
counts ``b_s * b_s`` for both products. The quantizer sits on ``Q K^T`` (before the scale) and
not on ``A V`` because ``A`` is the operand that would otherwise be ``log2(d * L**2)`` bits
wide; it is stateless because an attention matrix belongs to one step (no membrane carries
over). ``scale`` multiplies ``A V`` (the order of the reference's DVS code), so the quantizer
sees whole counts.

Names: ``spikformer_{L}_{D}_cifar`` (32x32, 10 classes; ``L-D`` = 4-384, 4-256, 2-384),
``spikformer_{L}_{D}`` (ImageNet 224x224, 1000 classes; 8-384, 6-512, 8-512, 10-512, 8-768),
``spikformer_2_256_dvs`` (2 polarities, 128x128 or 48x48, 10 classes). ``T`` is ``bits.t``.
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
from .layers import LayerFactory, level_matmul

__all__ = [
    "MLP",
    "SPS",
    "SSA",
    "Spikformer",
    "SpikformerBlock",
    "spikformer_2_256_dvs",
    "spikformer_2_384_cifar",
    "spikformer_4_256_cifar",
    "spikformer_4_384_cifar",
    "spikformer_6_512",
    "spikformer_8_384",
    "spikformer_8_512",
    "spikformer_8_768",
    "spikformer_10_512",
]


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class SPS(nn.Module):
    """Spiking patch splitting after the stem: ``[T, B, D/8, H, W] -> tokens [T, B, N, D]``.

    Stages 1-3 (``conv3x3-bn-neuron``, optional max-pool) and the relative position embedding
    ``x = rpe(x) + x`` (an unrestricted sum). Stage 0 is the model's ``stem``.
    """

    def __init__(self, f: LayerFactory, dim: int, pools: tuple[bool, bool, bool]) -> None:
        super().__init__()
        widths = (dim // 8, dim // 4, dim // 2, dim)
        self.conv1 = f.conv_bn_neuron(widths[0], widths[1], 3)
        self.pool1 = FoldTime(_pool()) if pools[0] else None
        self.conv2 = f.conv_bn_neuron(widths[1], widths[2], 3)
        self.pool2 = FoldTime(_pool()) if pools[1] else None
        self.conv3 = f.conv_bn_neuron(widths[2], widths[3], 3)
        self.pool3 = FoldTime(_pool()) if pools[2] else None
        self.rpe = f.conv_bn_neuron(dim, dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        for conv, pool in ((self.conv1, self.pool1), (self.conv2, self.pool2),
                           (self.conv3, self.pool3)):
            x = conv(x)
            if pool is not None:
                x = pool(x)
        x = self.rpe(x) + x  # [T, B, D, h, w]; unrestricted sum (b_s + 1 bits)
        return x.flatten(3).transpose(2, 3)  # [T, B, D, h, w] -> [T, B, D, N] -> [T, B, N, D]


class SSA(nn.Module):
    """Spiking self-attention, no softmax, attention matrix restricted to ``b_s`` bits.

    ``[T, B, N, D] -> [T, B, N, D]``; per head ``A = attn_map(Q K^T)`` (``b_s``-bit levels),
    ``x = attn_sn(A V * scale)``, then ``proj``.
    """

    def __init__(self, f: LayerFactory, dim: int, num_heads: int, *, qkv_bias: bool,
                 scale: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = scale
        self.q = f.linear_bn_neuron(dim, dim, bias=qkv_bias)
        self.k = f.linear_bn_neuron(dim, dim, bias=qkv_bias)
        self.v = f.linear_bn_neuron(dim, dim, bias=qkv_bias)
        self.attn_map = f.quantizer(theta=f.theta**2)
        self.attn_sn = f.neuron_module(theta_scale=0.5)
        self.proj = f.linear_bn_neuron(dim, dim)

    def _product_step(self) -> tuple[float | Tensor, float | None]:
        q, k = self.q.sn, self.k.sn
        step_q, step_k = q.step(), k.step()
        if isinstance(step_q, Tensor):
            step_q = step_q.detach()
        if isinstance(step_k, Tensor):
            step_k = step_k.detach()
        exact_q, exact_k = q.level.exact_theta(q.bits_s), k.level.exact_theta(k.bits_s)
        exact = None if exact_q is None or exact_k is None else exact_q * exact_k
        return step_q * step_k, exact

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(2, 3)  # [T,B,N,D] -> [T,B,H,N,d]

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        # Q K^T counts level products on the grid theta_q * theta_k (the product of two steps).
        qk_step, qk_exact = self._product_step()
        attn = self.attn_map(level_matmul(q, k.transpose(-2, -1)), qk_step, qk_exact)
        x = level_matmul(attn, v) * self.scale  # [T, B, H, N, N] @ [T, B, H, N, d]
        x = self.attn_sn(x.transpose(2, 3).flatten(3))  # [T,B,H,N,d] -> [T,B,N,H,d] -> [T,B,N,D]
        return self.proj(x)


class MLP(nn.Module):
    """``fc1`` (``D -> hidden``) and ``fc2`` (``hidden -> D``), each linear-bn-neuron."""

    def __init__(self, f: LayerFactory, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = f.linear_bn_neuron(dim, hidden)
        self.fc2 = f.linear_bn_neuron(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class SpikformerBlock(nn.Module):
    """``x = x + ssa(x); x = x + mlp(x)`` on ``[T, B, N, D]`` (unrestricted residual sums)."""

    def __init__(self, f: LayerFactory, dim: int, num_heads: int, mlp_ratio: float, *,
                 qkv_bias: bool, scale: float) -> None:
        super().__init__()
        self.attn = SSA(f, dim, num_heads, qkv_bias=qkv_bias, scale=scale)
        self.mlp = MLP(f, dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(SpikingModel):
    """Spikformer-``depth``-``dim`` (Zhou et al., ICLR 2023) with ``b_s``-bit attention matrices.

    Args:
        depth, dim, num_heads, mlp_ratio: ``L`` blocks of width ``D``, heads, MLP expansion.
        bits, num_classes, in_channels, img_size, overrides, neuron, quant: as every zoo model
            takes them (:class:`~qsnn.models.SpikingModel`).
        num_pools: SPS max-pools (1..4), after the last ``num_pools`` conv stages.
        qkv_bias: biases on the ``q, k, v`` linears (CIFAR code: yes; ImageNet/DVS code: no).
        scale: attention scale (0.125; 0.25 in the DVS code).

    Modules: ``stem`` (first SPS conv, computed once for static input), ``sps``, ``blocks``,
    ``head`` (per step, on the mean over tokens) and ``readout`` (mean over ``T``).
    """

    def __init__(
        self,
        *,
        depth: int,
        dim: int,
        num_heads: int,
        bits: Bits | str | BitsPolicy,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        num_pools: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        scale: float = 0.125,
        overrides: Mapping[str, object] | None = None,
        neuron: Mapping[str, Any] | None = None,
        quant: Mapping[str, Any] | None = None,
    ) -> None:
        f = self._begin(bits, num_classes, in_channels, img_size, neuron, quant)
        if dim % 8:
            raise ValueError(f"dim must be divisible by 8 (SPS widths D/8..D); got {dim}")
        if num_pools not in (1, 2, 3, 4):
            raise ValueError(f"num_pools must be 1, 2, 3 or 4; got {num_pools!r}")
        self.depth, self.dim = depth, dim
        pools = tuple(stage >= 4 - num_pools for stage in range(4))
        stem_pool = _pool() if pools[0] else None
        self.stem = f.stem(f.conv_bn(in_channels, dim // 8, 3), stem_pool, in_channels=in_channels)
        self.sps = SPS(f, dim, pools[1:])
        self.blocks = nn.Sequential(*(
            SpikformerBlock(f, dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, scale=scale)
            for _ in range(depth)
        ))
        self.head = f.linear(dim, num_classes)
        self.readout = TimeMean()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                # The reference's trunc_normal_(std=.02) truncates at +-2, i.e. 100 sigma: never
                # binding, so a plain normal draw is the same distribution (and 6x faster).
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._finish(bits, overrides)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> token mean ``[T, B, D]``."""
        x = self.sps(self.stem(x))  # -> [T, B, N, D]
        return self.blocks(x).mean(2)  # [T, B, N, D] -> [T, B, D]

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.head(self.forward_features(x)))  # [T, B, K] -> [B, K]

    def stages(self) -> tuple[Any, ...]:
        """Spikformer declares no deployable stages: always ``ValueError`` (the reason)."""
        raise ValueError(
            f"{type(self).__name__} cannot be converted to an integer program yet: its spiking "
            "self-attention multiplies two spike tensors (Q K^T and A V, no weights), which the "
            "integer program has no layer for; deployable models are the CNNs "
            "(small_convnet, resnet19, sew_resnet*)"
        )


def _create_spikformer(depth: int, dim: int, defaults: Mapping[str, Any],
                       kwargs: Mapping[str, Any]) -> Spikformer:
    return Spikformer(depth=depth, dim=dim, **{**defaults, **kwargs})


def _cifar(dim: int) -> dict[str, Any]:
    return {"num_heads": dim // 32, "num_classes": 10, "img_size": 32, "num_pools": 2,
            "qkv_bias": True, "scale": 0.125}


def _imagenet(dim: int) -> dict[str, Any]:
    return {"num_heads": dim // 64, "num_classes": 1000, "img_size": 224, "num_pools": 4,
            "qkv_bias": False, "scale": 0.125}


@register_model
def spikformer_4_384_cifar(**kwargs: Any) -> Spikformer:
    """Spikformer-4-384 for CIFAR (32x32, 12 heads): 9.32 M params at 10 classes."""
    return _create_spikformer(4, 384, _cifar(384), kwargs)


@register_model
def spikformer_4_256_cifar(**kwargs: Any) -> Spikformer:
    """Spikformer-4-256 for CIFAR (32x32, 8 heads)."""
    return _create_spikformer(4, 256, _cifar(256), kwargs)


@register_model
def spikformer_2_384_cifar(**kwargs: Any) -> Spikformer:
    """Spikformer-2-384 for CIFAR (32x32, 12 heads)."""
    return _create_spikformer(2, 384, _cifar(384), kwargs)


@register_model
def spikformer_8_384(**kwargs: Any) -> Spikformer:
    """Spikformer-8-384 for ImageNet (224x224, 6 heads)."""
    return _create_spikformer(8, 384, _imagenet(384), kwargs)


@register_model
def spikformer_6_512(**kwargs: Any) -> Spikformer:
    """Spikformer-6-512 for ImageNet (224x224, 8 heads)."""
    return _create_spikformer(6, 512, _imagenet(512), kwargs)


@register_model
def spikformer_8_512(**kwargs: Any) -> Spikformer:
    """Spikformer-8-512 for ImageNet (224x224, 8 heads): 29.69 M params."""
    return _create_spikformer(8, 512, _imagenet(512), kwargs)


@register_model
def spikformer_10_512(**kwargs: Any) -> Spikformer:
    """Spikformer-10-512 for ImageNet (224x224, 8 heads)."""
    return _create_spikformer(10, 512, _imagenet(512), kwargs)


@register_model
def spikformer_8_768(**kwargs: Any) -> Spikformer:
    """Spikformer-8-768 for ImageNet (224x224, 12 heads)."""
    return _create_spikformer(8, 768, _imagenet(768), kwargs)


@register_model
def spikformer_2_256_dvs(**kwargs: Any) -> Spikformer:
    """Spikformer-2-256 for event frames (2 polarities, 16 heads, scale 0.25, 10 classes).

    Native input 128x128 with 4 max-pools (8x8 tokens); at ``img_size=48`` (the paper's
    setting) the default is 3 max-pools (6x6 tokens). ``num_pools`` sets it explicitly.
    """
    img = kwargs.get("img_size", 128)
    side = min(img) if isinstance(img, (tuple, list)) else img
    defaults = {"num_heads": 16, "num_classes": 10, "in_channels": 2, "img_size": 128,
                "num_pools": 4 if isinstance(side, int) and side >= 128 else 3,
                "qkv_bias": False, "scale": 0.25}
    return _create_spikformer(2, 256, defaults, kwargs)

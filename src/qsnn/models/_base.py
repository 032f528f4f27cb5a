"""What every zoo model shares: its allocation, input description, and ``set_bits``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from ..allocation import Bits, BitsPolicy, resolve_policy
from ..bitwidth import apply_bits
from ..level_scale import LevelScale
from ..neurons import SpikeLevels
from .layers import LayerFactory, to_2tuple

__all__ = ["SpikingModel"]


def _check_shared_grids(model: nn.Module, policy: BitsPolicy) -> None:
    """Modules that share one ``LevelScale`` (a restricted ADD and the neurons of its two
    inputs) lie on one grid. A step that depends on ``b_s`` (the ``scaled`` rule) is one grid
    only if they all get one ``b_s``; other steps do not depend on it (a ``data`` step is set
    by the first sharer to run)."""
    groups: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        level = getattr(module, "level", None)
        if isinstance(module, SpikeLevels) and isinstance(level, LevelScale) \
                and level.rule == "scaled":
            groups.setdefault(id(level), []).append(name)
    for names in groups.values():
        widths = {n: policy.for_layer(n).s for n in names}
        if len(set(widths.values())) > 1:
            detail = ", ".join(f"{n}: b_s={w}" for n, w in widths.items())
            raise ValueError(
                "these modules share one spike grid (a restricted ADD and the neurons of its "
                f"inputs) whose 'scaled' step depends on b_s, so they need one b_s; the "
                f"overrides give {detail}"
            )


class SpikingModel(nn.Module):
    """Base class of the zoo: time-major spiking classifiers built at one bit allocation.

    Constructor arguments every zoo model takes (keyword-only):
        bits: allocation ``b_w/b_s/T`` (a ``Bits``, ``"4/2/2"`` or a ``BitsPolicy``).
        num_classes, in_channels, img_size: classifier width and native input size.
        overrides: per-layer widths by module-name pattern, e.g. ``{"stem.*": 8, "head": 8}``.
        neuron: ``SpikeNeuron`` settings for every neuron (``tau``, ``theta``, ``reset``,
            ``level_scale``, ...); quant: weight-quantizer settings (``per_channel``,
            ``learn_scale``).

    Attributes:
        bits: the default allocation ``b_w/b_s/T`` (a ``Bits``).
        policy: the ``BitsPolicy`` applied (default plus per-layer overrides).
        num_classes: number of logits.
        input_size: native ``(C, H, W)`` of one static input.

    Input: a static image ``[B, C, H, W]`` (presented for ``T = bits.t`` steps) or time-major
    frames ``[T, B, C, H, W]`` with ``T = bits.t``. Output: logits ``[B, num_classes]``, the mean
    over ``T`` of the per-step logits. No state is kept between calls.
    """

    bits: Bits
    policy: BitsPolicy
    num_classes: int
    input_size: tuple[int, int, int]

    def _begin(
        self,
        bits: Bits | str | BitsPolicy,
        num_classes: int,
        in_channels: int,
        img_size: int | tuple[int, int],
        neuron: Mapping[str, Any] | None,
        quant: Mapping[str, Any] | None,
    ) -> LayerFactory:
        """The shared start of every zoo model's constructor (in place of
        ``super().__init__()``): initialises the ``nn.Module``, validates and stores
        ``num_classes`` and ``input_size``, and returns the factory of its layers at ``bits``."""
        nn.Module.__init__(self)
        self._init_io(num_classes, in_channels, img_size)
        return LayerFactory.for_model(bits, neuron, quant)

    def _finish(
        self,
        bits: Bits | str | BitsPolicy,
        overrides: Mapping[str, object] | None,
        *,
        kaiming_convs: bool = False,
    ) -> None:
        """The shared end of a zoo model's constructor: optionally He-initialise every conv
        (``fan_out``, as torchvision's ResNets), then apply the allocation and overrides."""
        if kaiming_convs:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.set_bits(bits, overrides)

    def _init_io(
        self, num_classes: int, in_channels: int, img_size: int | tuple[int, int]
    ) -> tuple[int, int]:
        """Validate and store ``num_classes`` and ``input_size``; returns ``(H, W)``."""
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        height, width = to_2tuple(img_size)
        self.num_classes = num_classes
        self.input_size = (in_channels, height, width)
        return height, width

    @property
    def time_steps(self) -> int:
        """``T``, the number of time steps of the allocation."""
        return self.bits.t

    def set_bits(
        self, bits: Bits | str | BitsPolicy, overrides: Mapping[str, object] | None = None
    ) -> BitsPolicy:
        """Apply an allocation (and per-layer overrides) to every layer, ``T`` included.

        Replaces the previous allocation and overrides. Conv/linear layers take ``b_w``, neurons
        and restricted sums ``b_s``, every ``StaticEncoder`` ``T``. Returns the policy applied.
        """
        policy = resolve_policy(bits, overrides)
        _check_shared_grids(self, policy)  # before any layer changes
        policy = apply_bits(self, policy)
        self.policy = policy
        self.bits = policy.default
        return policy

    def stages(self) -> tuple[Any, ...]:
        """The forward pass as declared stages (``qsnn.models.stages``), read by
        ``qsnn.deploy``; a model that declares none raises ``ValueError`` saying so."""
        raise ValueError(
            f"{type(self).__name__} declares no stages (qsnn.models.stages), so it cannot be "
            "converted to an integer program"
        )

    def extra_repr(self) -> str:
        over = f", overrides={dict(self.policy.overrides)}" if self.policy.overrides else ""
        return (f"bits={self.bits}{over}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}")

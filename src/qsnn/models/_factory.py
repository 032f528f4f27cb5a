"""``create_model``: build a registered model by name at a bit allocation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from ..allocation import Bits, BitsPolicy
from ._registry import model_entrypoint

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    bits: Bits | str | BitsPolicy,
    num_classes: int | None = None,
    in_channels: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    overrides: Mapping[str, object] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` with every conv/linear at ``b_w``, every neuron at ``b_s``, ``T`` steps.

    Args:
        name: a registered name (see ``list_models()``); an unknown name raises ``ValueError``
            listing the close matches.
        bits: the allocation ``b_w/b_s/T`` (``"4/2/2"``, a ``Bits`` or a ``BitsPolicy``).
        num_classes, in_channels, img_size: override the model's native values.
        overrides: per-layer widths by module-name pattern, e.g. ``{"stem.*": 8, "head": 8}``.
        **kwargs: model options (``neuron={...}``, ``quant={...}``, ``stem=``, ...).

    Keyword arguments that are ``None`` are dropped, so a CLI may pass its unset options through.
    """
    entry = model_entrypoint(name)
    options = {"num_classes": num_classes, "in_channels": in_channels, "img_size": img_size,
               "overrides": overrides, **kwargs}
    return entry(bits=bits, **{k: v for k, v in options.items() if v is not None})

"""The qsnn model zoo: SEW-ResNet, Spikformer, ResNet-19 and a small CPU net (SPEC §6).

Every model is built from qsnn's foundation modules at one bit allocation ``b_w/b_s/T``::

    from qsnn.models import create_model, list_models
    model = create_model("sew_resnet18_cifar", bits="4/2/2", overrides={"stem.*": 8})
    logits = model(images)  # [B, 3, 32, 32] or [2, B, 3, 32, 32] -> [B, 10]

Models take a static ``[B, C, H, W]`` input (presented for ``T`` steps, the stem computed once)
or time-major frames ``[T, B, C, H, W]`` with ``T = bits.t``; logits are averaged over ``T``; no
state is kept between calls. ``model.bits``, ``model.policy`` and ``model.set_bits(...)`` give
and change the allocation.
"""

from . import sew_resnet, spikformer
from ._base import SpikingModel
from ._factory import create_model
from ._registry import (
    ModelInfo,
    is_model,
    list_models,
    model_entrypoint,
    model_info,
    register_model,
)
from .layers import (
    ConvBN,
    ConvBNNeuron,
    LayerFactory,
    LevelQuantizer,
    LinearBNNeuron,
    RestrictedAdd,
    SEWAdd,
    SpikingStem,
)
from .resnet19 import ResNet19, resnet19
from .sew_resnet import *  # noqa: F403  (the SEW-ResNet family: its __all__)
from .small import SmallConvNet, small_convnet
from .spikformer import *  # noqa: F403  (the Spikformer family: its __all__)

__all__ = [
    "ConvBN",
    "ConvBNNeuron",
    "LayerFactory",
    "LevelQuantizer",
    "LinearBNNeuron",
    "ModelInfo",
    "ResNet19",
    "RestrictedAdd",
    "SEWAdd",
    "SmallConvNet",
    "SpikingModel",
    "SpikingStem",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_info",
    "register_model",
    "resnet19",
    "small_convnet",
    *sew_resnet.__all__,
    *spikformer.__all__,
]

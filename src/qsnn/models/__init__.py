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
from .sew_resnet import (
    SEWResNet,
    sew_resnet18,
    sew_resnet18_cifar,
    sew_resnet34,
    sew_resnet34_cifar,
    sew_resnet50,
    sew_resnet50_cifar,
)
from .small import SmallConvNet, small_convnet
from .spikformer import (
    Spikformer,
    spikformer_2_256_dvs,
    spikformer_2_384_cifar,
    spikformer_4_256_cifar,
    spikformer_4_384_cifar,
    spikformer_6_512,
    spikformer_8_384,
    spikformer_8_512,
    spikformer_8_768,
    spikformer_10_512,
)

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
    "SEWResNet",
    "SmallConvNet",
    "Spikformer",
    "SpikingModel",
    "SpikingStem",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_info",
    "register_model",
    "resnet19",
    "sew_resnet18",
    "sew_resnet18_cifar",
    "sew_resnet34",
    "sew_resnet34_cifar",
    "sew_resnet50",
    "sew_resnet50_cifar",
    "small_convnet",
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

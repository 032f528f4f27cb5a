"""qsnn: quantized spiking neural networks designed and measured under a bit budget.

The data path: static input -> ``StaticEncoder`` over ``T`` -> quantized layers
(``QuantConv2d``/``QuantLinear``, folded over time by ``FoldTime``) -> ``SpikeNeuron`` ->
``TimeMean`` readout. ``Bits("b_w/b_s/T")`` sets every width; ``qsnn.bitserial`` proves that the
work is ``T * b_s`` binary slices of ``b_w``-bit weights.

The main entry points are top-level names, as in timm: ``qsnn.create_model``,
``qsnn.list_models``, ``qsnn.profile``, ``qsnn.get_dataset``, ``qsnn.TrainConfig`` and
``qsnn.train(config, out_dir)``. They load their submodules on first use, so ``import qsnn``
stays light and pulls in no optional dependency.
"""

import importlib

from .allocation import Bits, BitsPolicy, LayerBits, allocations
from .bitserial import (
    bit_slices,
    bitserial_apply,
    bitserial_layer,
    bitserial_time_layer,
    decompose,
    integer_layer,
    recompose,
)
from .bitwidth import apply_bits
from .neurons import (
    LIFNeuron,
    QuantActivation,
    SpikeNeuron,
    spike_pattern_neuron,
    spike_pattern_step,
)
from .quant import QuantConv2d, QuantLinear, fake_quantize_weight, weight_codes, weight_scale
from .surrogate import Surrogate
from .temporal import FoldTime, StaticEncoder, TimeMean, fold_time

__version__ = "0.1.0.dev0"

#: Top-level names loaded from their submodule on first access (PEP 562).
_LAZY = {
    "create_model": "qsnn.models",
    "list_models": "qsnn.models",
    "model_info": "qsnn.models",
    "profile": "qsnn.metrics",
    "get_dataset": "qsnn.data",
    "TrainConfig": "qsnn.train",
    "load_run": "qsnn.train",
}

__all__ = [
    "Bits",
    "BitsPolicy",
    "FoldTime",
    "LIFNeuron",
    "LayerBits",
    "QuantActivation",
    "QuantConv2d",
    "QuantLinear",
    "SpikeNeuron",
    "StaticEncoder",
    "Surrogate",
    "TimeMean",
    "TrainConfig",
    "__version__",
    "allocations",
    "apply_bits",
    "bit_slices",
    "bitserial_apply",
    "bitserial_layer",
    "bitserial_time_layer",
    "create_model",
    "decompose",
    "fake_quantize_weight",
    "fold_time",
    "get_dataset",
    "integer_layer",
    "list_models",
    "load_run",
    "model_info",
    "profile",
    "recompose",
    "spike_pattern_neuron",
    "spike_pattern_step",
    "train",
    "weight_codes",
    "weight_scale",
]


def __getattr__(name: str) -> object:
    if name == "train":  # the package qsnn.train, callable as train(config, out_dir)
        return importlib.import_module("qsnn.train")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qsnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

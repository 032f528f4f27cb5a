"""qsnn: quantized spiking neural networks designed and measured under a bit budget.

The data path: static input -> ``StaticEncoder`` over ``T`` -> quantized layers
(``QuantConv2d``/``QuantLinear``, folded over time by ``FoldTime``) -> ``SpikeNeuron`` ->
``TimeMean`` readout. ``Bits("b_w/b_s/T")`` sets every width; ``qsnn.bitserial`` proves that the
work is ``T * b_s`` binary slices of ``b_w``-bit weights.
"""

from .allocation import Bits, BitsPolicy, LayerBits, allocations, apply_bits
from .bitserial import (
    bit_slices,
    bitserial_apply,
    bitserial_layer,
    bitserial_time_layer,
    decompose,
    integer_layer,
    recompose,
)
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
    "__version__",
    "allocations",
    "apply_bits",
    "bit_slices",
    "bitserial_apply",
    "bitserial_layer",
    "bitserial_time_layer",
    "decompose",
    "fake_quantize_weight",
    "fold_time",
    "integer_layer",
    "recompose",
    "spike_pattern_neuron",
    "spike_pattern_step",
    "weight_codes",
    "weight_scale",
]

"""The bit-width protocol (qsnn.bitwidth): one writer (``apply_bits``, two phases), readers
that return what a layer declares, and every zoo model speaking it.

Expected values are set by hand in each test (the widths asked for, the max-abs scale
``max|w| / (2**(b_w-1) - 1)``), not read back from the code under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qsnn import (
    FoldTime,
    LayerBits,
    QuantConv2d,
    QuantLinear,
    SpikeNeuron,
    StaticEncoder,
    TimeMean,
    apply_bits,
)
from qsnn.bitwidth import (
    DeclaresOutputLevels,
    DeclaresTimeSteps,
    DeclaresWeightBits,
    TakesLayerBits,
    TakesTimeSteps,
    declared_level_step,
    declared_output_levels,
    declared_time_steps,
    declared_weight_bits,
)
from qsnn.models import create_model, list_models


def plain_net() -> nn.Sequential:
    return nn.Sequential(
        StaticEncoder(4),
        FoldTime(QuantLinear(6, 8, bits_w=4)),
        SpikeNeuron(2),
        FoldTime(QuantLinear(8, 3, bits_w=4)),
        TimeMean(),
    )


def widths(model: nn.Module) -> dict[str, tuple]:
    """Every width a module declares, by name (the state a failed call must not change)."""
    out = {}
    for name, m in model.named_modules():
        out[name] = (declared_weight_bits(m), declared_output_levels(m), declared_time_steps(m))
    return out


def test_apply_bits_sets_time_steps_of_a_plain_sequential():
    """The issue's bug: ``apply_bits(net, "2/1/8")`` changed b_w and b_s but not T."""
    net = plain_net()
    apply_bits(net, "2/1/8")
    assert net[0].time_steps == 8
    assert net[1].module.bits_w == 2 and net[3].module.bits_w == 2 and net[2].bits_s == 1
    assert net[0](torch.zeros(5, 6)).shape == (8, 5, 6)
    assert net(torch.zeros(5, 6)).shape == (5, 3)


def test_failed_set_bits_changes_nothing():
    """The issue's bug: a strict-check failure used to leave the head at b_w = 8 while the
    model said 4/2/2."""
    model = create_model("small_convnet", bits="4/2/2", overrides={"head": 16})
    before = widths(model)
    with pytest.raises(ValueError, match="nosuch"):
        model.set_bits("8/2/2", overrides={"nosuch.*": 2})
    assert widths(model) == before
    assert str(model.bits) == "4/2/2" and dict(model.policy.overrides) == {"head": 16}
    assert declared_weight_bits(model.head) == 16


def test_failed_apply_bits_on_a_plain_net_changes_nothing():
    net = plain_net()
    before = widths(net)
    with pytest.raises(ValueError, match="match no quantized layer"):
        apply_bits(net, "2/1/8", overrides={"9": 8})
    assert widths(net) == before


class PickyLayer(nn.Module):
    """A foreign layer that takes part in the protocol and refuses 3-bit weights."""

    def __init__(self) -> None:
        super().__init__()
        self.bits_w = 8

    def check_layer_bits(self, bits: LayerBits) -> None:
        if bits.w == 3:
            raise ValueError("PickyLayer cannot take b_w = 3")

    def set_layer_bits(self, bits: LayerBits) -> None:
        self.bits_w = bits.w

    def forward(self, x):
        return x


def test_a_layer_check_runs_before_any_layer_changes():
    net = nn.Sequential(plain_net(), PickyLayer())  # the picky layer comes last
    before = widths(net)
    with pytest.raises(ValueError, match="cannot take b_w = 3"):
        apply_bits(net, "3/2/2")
    assert widths(net) == before and net[1].bits_w == 8
    apply_bits(net, "5/2/2")
    assert net[1].bits_w == 5 and net[0][0].time_steps == 2


def test_readers_on_foreign_and_declaring_modules():
    assert declared_weight_bits(nn.Linear(2, 2)) is None  # foreign: callers count it as float
    assert declared_output_levels(nn.ReLU()) is None and declared_time_steps(nn.ReLU()) is None
    assert declared_weight_bits(QuantConv2d(1, 1, 1, bits_w=3)) == 3
    assert declared_weight_bits(QuantLinear(2, 2, bits_w=32)) == 16  # float counts as 16
    neuron = SpikeNeuron(3, theta=0.5)
    assert declared_output_levels(neuron) == 3 and declared_level_step(neuron) == 0.5
    assert declared_time_steps(StaticEncoder(5)) == 5 and declared_time_steps(TimeMean()) == 1

    class Levels(nn.Module):  # declares levels without a step: the reader says "no step"
        output_bits = 2

    assert declared_output_levels(Levels()) == 2 and declared_level_step(Levels()) is None

    class Wrong(nn.Module):
        output_bits = "4"

    with pytest.raises(TypeError, match="output_bits must be an int"):
        declared_output_levels(Wrong())


def test_same_weight_bits_keep_a_learned_scale():
    """The issue's bug: setting b_w re-initialised an LSQ scale even when b_w did not change,
    so ``qsnn eval --time-steps`` evaluated an LSQ run with max-abs scales."""
    layer = QuantLinear(3, 2, bits_w=4, per_channel=False, learn_scale=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.7, -0.1, 0.2], [0.3, 0.0, -0.35]]))
        layer.scale.fill_(0.0625)  # "learned"
    layer.set_layer_bits(LayerBits(4, 8))
    assert layer.scale.item() == 0.0625
    layer.bits_w = 4
    assert layer.scale.item() == 0.0625
    layer.bits_w = 2  # a new level set: max-abs again, 0.7 / (2**1 - 1)
    assert layer.scale.item() == pytest.approx(0.7)
    layer.bits_w = 4  # and back: 0.7 / 7
    assert layer.scale.item() == pytest.approx(0.1)


def test_model_time_step_change_keeps_learned_scales():
    model = create_model("small_convnet", bits="4/2/2", overrides={"head": 8},
                         quant={"learn_scale": True})
    scales = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (QuantConv2d, QuantLinear)):
                m.scale.mul_(1.5)  # anything the max-abs rule would not give
                scales[name] = m.scale.clone()
    model.set_bits("4/2/6", overrides={"head": 8})
    for name, m in model.named_modules():
        if name in scales:
            assert torch.equal(m.scale, scales[name]), name


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_speaks_the_protocol(name):
    """Every conv/linear layer takes and declares weight bits, every neuron takes and declares
    spike bits, every encoder takes and declares T, and one ``set_bits`` reaches them all."""
    with torch.device("meta"):
        model = create_model(name, bits="4/2/2")
    convs = neurons = encoders = 0
    for layer, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert isinstance(m, TakesLayerBits) and isinstance(m, DeclaresWeightBits), layer
            convs += 1
        if isinstance(m, SpikeNeuron):
            assert isinstance(m, TakesLayerBits) and isinstance(m, DeclaresOutputLevels), layer
            neurons += 1
        if isinstance(m, StaticEncoder):
            assert isinstance(m, TakesTimeSteps) and isinstance(m, DeclaresTimeSteps), layer
            encoders += 1
    assert convs > 0 and neurons > 0
    model.set_bits("2/3/5")
    for layer, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert declared_weight_bits(m) == 2, layer
        if isinstance(m, DeclaresOutputLevels):
            assert declared_output_levels(m) == 3, layer
        if isinstance(m, StaticEncoder):
            assert declared_time_steps(m) == 5, layer
    assert model.time_steps == 5

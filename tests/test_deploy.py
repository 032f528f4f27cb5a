"""Tests of integer deployment (SPEC §9): conversion, bit-serial integer execution, export, and
agreement with the trained model evaluated in float32 without autocast.

Two tiny small_convnet runs are trained here on the embedded digits (8x8, a few seconds each);
the other checks use untrained nets with randomised batch-norm statistics (negative scales
included) on random uint8 images.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from qsnn import FoldTime, QuantConv2d, QuantLinear, SpikeNeuron, StaticEncoder, TimeMean
from qsnn.cli import main
from qsnn.data import TensorData
from qsnn.deploy import convert, load_program, verify, verify_run
from qsnn.deploy.fixedpoint import neuron_fixed_point, output_fixed_point
from qsnn.deploy.program import OutputLayer, ResidualSpikingLayer, SpikingLayer
from qsnn.models import ConvBN, ConvBNNeuron, LevelQuantizer, LinearBNNeuron, create_model

MEAN, STD = (0.45, 0.5, 0.4), (0.25, 0.2, 0.3)


def _randomise_bn(model: nn.Module, seed: int = 0, negative: bool = True) -> nn.Module:
    """Batch-norm statistics and affine parameters far from their defaults (gamma < 0 too)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            low = -1.0 if negative else 0.2
            m.weight.data.copy_(low + (2.0 - low) * torch.rand(n, generator=gen))
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.2)
    return model.eval()


def _data(n: int = 64, chans: int = 3, size: int = 8, seed: int = 0) -> TensorData:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, chans, size, size), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 5, (n,), generator=gen)
    return TensorData("random", "test", x, y, tuple("abcde"), mean=MEAN[:chans], std=STD[:chans])


def _check_exact(model, program, data):
    report = verify(model, program, data, batch_size=32)
    assert report.level_mismatches == 0, report.summary()
    assert report.agreement == 1.0
    assert report.within_tolerance, report.summary()
    return report


# --------------------------------------------------------------------------------------------
# Trained runs: 4/2/2 and 1/4/1
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from qsnn.train import TrainConfig, train

    out = {}
    threads = torch.get_num_threads()  # threads=1: fast on a busy CPU; restored below
    fixed = {"kernel": "eager", "level_scale": "fixed", "learn_theta": False}
    # learned steps: powers of two at 1/4/1, any value at 4/2/2 (both deploy the same way)
    learned = {"kernel": "eager", "level_scale": "data", "learn_theta": True}
    for bits in ("4/2/2", "1/4/1"):
        steps = {**learned, "pow2_theta": bits == "1/4/1"}
        for key, neuron in ((bits, fixed), (f"{bits} learned", steps)):
            config = TrainConfig(
                bits=bits, epochs=8, batch_size=128, lr=5e-3, warmup_epochs=0.5, val_size=0,
                precision="fp32", channels_last=False, progress=False, profile_batches=0,
                threads=1, model_options={"widths": (16, 32, 32, 32, 32), "neuron": neuron},
            )
            run_dir = tmp_path_factory.mktemp(f"run-{key.replace('/', '-').replace(' ', '-')}")
            result = train(config, run_dir)
            out[key] = (run_dir, result)
    torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("bits", ["4/2/2", "1/4/1"])
def test_trained_model_agrees(runs, bits):
    """The whole digits test set: predictions agree on >= 99.5 % and, where every spike
    agrees, the logits lie within the fixed-point + float32 tolerance."""
    run_dir, result = runs[bits]
    assert result["test_acc_last"] > 0.5  # a trained model, not chance (10 classes)
    report, program = verify_run(run_dir)
    assert report.samples == 359
    assert report.agreement >= 0.995, report.summary()
    assert report.spike_exact >= 0.99, report.summary()
    assert report.within_tolerance, report.summary()
    assert report.max_logit_error_exact <= report.max_tolerance_exact
    assert abs(report.accuracy_integer - report.accuracy_float) <= 0.005
    assert program.source["bits"] == bits


@pytest.mark.parametrize("bits", ["4/2/2", "1/4/1"])
def test_learned_thresholds_deploy_and_agree_on_every_sample(runs, bits):
    """Thresholds set from data and trained, one per neuron layer, not 1 (powers of two at
    1/4/1, unrounded at 4/2/2): the integer program folds each into its layer and agrees with
    the trained model on every test sample."""
    run_dir, result = runs[f"{bits} learned"]
    assert result["test_acc_last"] > 0.5
    from qsnn.train import load_run

    model, _, _ = load_run(run_dir)
    thetas = [m.theta for m in model.modules() if isinstance(m, SpikeNeuron)]
    assert all(m.level.ready and m.level.learn for m in model.modules()
               if isinstance(m, SpikeNeuron))
    assert any(t != 1.0 for t in thetas), thetas
    report, program = verify_run(run_dir)
    assert report.agreement == 1.0, report.summary()
    assert report.within_tolerance, report.summary()
    # the program's thresholds are the trained ones, recomputed from the checkpoint's raw
    # log2 steps: 2**round(l) at 1/4/1 (powers of two), 2**l at 4/2/2
    state = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    raw = [v for k, v in state.items() if k.endswith("sn.level.log2_theta")]
    expected = [2.0 ** (round(float(v)) if bits == "1/4/1" else float(v)) for v in raw]
    spiking = [layer for layer in program.layers if isinstance(layer, SpikingLayer)]
    assert [layer.theta for layer in spiking] == pytest.approx(expected, rel=1e-6)


def test_cli_deploy_then_verify(runs, tmp_path, capsys):
    run_dir, _ = runs["4/2/2"]
    assert main(["deploy", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "spiking" in out
    manifest = json.loads((run_dir / "deploy" / "manifest.json").read_text())
    assert manifest["format"] == "qsnn-integer-program" and manifest["time_steps"] == 2
    kinds = [layer["type"] for layer in manifest["layers"]]
    assert kinds[0] == "spiking" and kinds[-1] == "output" and "maxpool" in kinds
    first = manifest["layers"][0]
    assert first["bits_w"] == 4 and first["bits_in"] == 8 and first["bits_s"] == 2
    assert first["arrays"]["weight"].startswith("int8")
    report_path = tmp_path / "verify.json"
    assert main(["verify", str(run_dir), "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "stored program" in out and "agree on" in out
    assert json.loads(report_path.read_text())["agreement"] >= 0.995


def test_cli_errors(tmp_path, capsys):
    assert main(["deploy", str(tmp_path)]) == 2
    assert "not a qsnn run directory" in capsys.readouterr().err
    bad = tmp_path / "prog.npz"
    bad.write_bytes(b"not a zip")
    assert main(["verify", str(tmp_path), "--program", str(bad)]) == 2
    assert "not a readable qsnn integer program" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Layer types, folding and the file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", ["2/2/2", "8/1/4", "1/3/1"])
def test_small_convnet_every_spike_exact(bits):
    """QuantConv2d + BatchNorm2d (negative scales) + SpikeNeuron, MaxPool2d, Flatten,
    QuantLinear head, StaticEncoder stem computed once, TimeMean; 3-channel normalization."""
    model = _randomise_bn(create_model("small_convnet", bits=bits, in_channels=3, img_size=8,
                                       widths=(8, 16, 16, 16, 16)))
    program = convert(model, mean=MEAN, std=STD)
    assert any((layer.direction < 0).any() for layer in program.layers
               if isinstance(layer, SpikingLayer))
    _check_exact(model, program, _data())


def _sequential_net(t: int = 4) -> nn.Sequential:
    """Soft reset, IF neuron (tau = 1), tau = 4, v_reset != 0, learned threshold, grouped
    strided conv, average pools, LinearBNNeuron, 1-bit head."""
    sn_soft = SpikeNeuron(2, tau=1.0, reset="soft", theta=0.8)
    sn_hard = SpikeNeuron(1, tau=4.0, theta=0.7, v_reset=0.25)
    sn_lin = SpikeNeuron(3, learn_theta=True, theta=1.3)
    return nn.Sequential(
        StaticEncoder(t, ConvBN(QuantConv2d(3, 8, 3, padding=1, bits_w=3, bias=True),
                                nn.BatchNorm2d(8))),
        sn_soft,
        FoldTime(nn.AvgPool2d(2)),
        ConvBNNeuron(QuantConv2d(8, 8, 3, stride=2, padding=1, groups=2, bits_w=5),
                     nn.BatchNorm2d(8), sn_hard),
        FoldTime(nn.AdaptiveAvgPool2d(1)),
        FoldTime(nn.Flatten()),
        LinearBNNeuron(QuantLinear(8, 12, bits_w=2), nn.BatchNorm1d(12), sn_lin),
        QuantLinear(12, 5, bits_w=1),
        TimeMean(),
    )


def test_sequential_of_every_supported_layer():
    model = _randomise_bn(_sequential_net(), seed=1)
    program = convert(model, mean=MEAN, std=STD, input_size=(3, 8, 8))
    kinds = [layer.kind for layer in program.layers]
    assert kinds == ["spiking", "sumpool", "spiking", "sumpool", "flatten", "spiking", "output"]
    pool = program.layers[1]
    assert pool.bits_out == 2 + 2  # a 2x2 window sum of 2-bit levels needs 4 bits
    _check_exact(model, program, _data(seed=1))


def test_time_mean_before_the_head():
    """TimeMean on spikes then a linear head: the levels are summed over T (the 1/T folded
    into the head), and the logits have no time axis."""
    model = _randomise_bn(nn.Sequential(
        StaticEncoder(4, ConvBN(QuantConv2d(3, 4, 3, padding=1, bits_w=4), nn.BatchNorm2d(4))),
        SpikeNeuron(2),
        TimeMean(),
        nn.Flatten(),
        QuantLinear(4 * 8 * 8, 5, bits_w=4),
    ), seed=2)
    program = convert(model, mean=MEAN, std=STD, input_size=(3, 8, 8))
    assert [layer.kind for layer in program.layers] == ["spiking", "timesum", "flatten",
                                                        "output"]
    assert program.layers[1].bits_out == 2 + 2
    _check_exact(model, program, _data(seed=2))


def test_negative_batch_norm_scale_flips_the_comparison():
    """Hand computation. Channel 0: u = a*acc + b with a = -0.5, b = 2 (threshold units).
    F = ceil(24 + log2 0.5) = 23, so Theta = round(2**23 / 0.5) = 2**24, C = round(2**23 * 2 /
    -0.5) = -2**25, direction -1. For acc = 2: V = 2 * 2**23 - 2**25 = -2**24 and
    k = floor(-V / Theta) = 1 = floor(-0.5*2 + 2): the neuron fires when V falls *below*
    -Theta. Channel 1 (a = 0.5, b = 0) keeps the usual direction: V = 2**24, k = 1."""
    fx = neuron_fixed_point(np.array([-0.5, 0.5]), np.array([2.0, 0.0]), levels=3, steps=1,
                            shift=1, hard=True, u_reset=0.0, max_acc=100.0)
    assert fx.direction.tolist() == [-1, 1]
    assert fx.frac_bits.tolist() == [23, 23]
    assert fx.threshold.tolist() == [2**24, 2**24]
    assert fx.bias.tolist() == [-(2**25), 0]
    v = 2 * 2**23 + fx.bias
    k = np.clip(np.floor_divide(fx.direction * v, fx.threshold), 0, 3)
    assert v.tolist() == [-(2**24), 2**24] and k.tolist() == [1, 1]

    # The same on a model whose every batch-norm scale is negative.
    model = nn.Sequential(
        StaticEncoder(2, ConvBN(QuantConv2d(3, 6, 3, padding=1, bits_w=4), nn.BatchNorm2d(6))),
        SpikeNeuron(2), FoldTime(nn.Flatten()), QuantLinear(6 * 64, 5, bits_w=4), TimeMean(),
    )
    bn = model[0].stem.bn
    _randomise_bn(model, seed=3)
    bn.weight.data.copy_(-torch.linspace(0.5, 2.0, 6))
    bn.bias.data.copy_(torch.linspace(0.5, 3.0, 6))
    program = convert(model, mean=MEAN, std=STD, input_size=(3, 8, 8))
    assert (program.layers[0].direction == -1).all()
    report = _check_exact(model, program, _data(seed=3))
    assert report.spike_exact == 1.0


def test_residual_fixed_point_hand_values():
    """Two terms in one membrane (a ResNet-19 neuron). Channel 0: a = 0.5, a' = 0.25: the
    reference is a, F = 23, Theta = 2**24, multipliers 2**23 and round(2**23 * 0.25 / 0.5) =
    2**22. Channel 1: a = 0.25, a' = -1: the reference is the shortcut (larger |a|), direction
    -1, F = 24, Theta = 2**24, multipliers round(2**24 * 0.25 / -1) = -2**22 and 2**24. For
    acc = 4, acc' = -2: u = 0.5*4 + 0.25*(-2) = 1.5 -> k = 1 and u = 0.25*4 + 2 = 3 -> k = 3."""
    fx = neuron_fixed_point(np.array([0.5, 0.25]), np.zeros(2), levels=3, steps=1, shift=1,
                            hard=True, u_reset=0.0, max_acc=100.0,
                            extra=((np.array([0.25, -1.0]), 10.0),))
    assert fx.direction.tolist() == [1, -1]
    assert fx.frac_bits.tolist() == [23, 24]
    assert fx.threshold.tolist() == [2**24, 2**24]
    assert fx.multipliers.tolist() == [[2**23, -(2**22)], [2**22, 2**24]]
    v = 4 * fx.multipliers[0] + (-2) * fx.multipliers[1] + fx.bias
    k = np.clip(np.floor_divide(fx.direction * v, fx.threshold), 0, 3)
    assert k.tolist() == [1, 3]


def test_zero_batch_norm_scale_is_a_constant_spike_train():
    model = nn.Sequential(
        StaticEncoder(4, ConvBN(QuantConv2d(3, 4, 3, padding=1, bits_w=4), nn.BatchNorm2d(4))),
        SpikeNeuron(2), FoldTime(nn.Flatten()), QuantLinear(4 * 64, 5, bits_w=4), TimeMean(),
    )
    _randomise_bn(model, seed=4)
    model[0].stem.bn.weight.data[1] = 0.0
    model[0].stem.bn.bias.data[1] = 0.7  # u = 0.5 u + 0.7: 0.7, 1.05 (fire, reset), 0.7, 1.05
    program = convert(model, mean=MEAN, std=STD, input_size=(3, 8, 8))
    layer = program.layers[0]
    assert layer.direction[1] == 0 and layer.const_levels[1].tolist() == [0, 1, 0, 1]
    _check_exact(model, program, _data(seed=4))


def test_output_fixed_point_hand_values():
    """y = 0.75 * ACC - 0.5: |a| = 0.75, floor(log2 0.75) = -1, S = 24 - 16 + 1 = 9,
    M = 0.75 * 2**25 = 25165824, Bo = -0.5 * 2**25 = -16777216. ACC = 3:
    Y = floor((75497472 - 16777216) / 2**9) = 114688 = 1.75 * 2**16."""
    fx = output_fixed_point(np.array([0.75]), np.array([-0.5]), max_acc=10.0)
    assert fx.shift.tolist() == [9] and fx.multiplier.tolist() == [25165824]
    assert fx.bias.tolist() == [-16777216]
    assert (3 * fx.multiplier[0] + fx.bias[0]) // 2**9 == 114688 == int(1.75 * 2**16)


def test_export_roundtrip_and_bitserial_equals_dense(tmp_path):
    model = _randomise_bn(create_model("small_convnet", bits="4/2/2", in_channels=3, img_size=8,
                                       widths=(8, 16, 16, 16, 16)), seed=5)
    program = convert(model, mean=MEAN, std=STD)
    path = program.save(tmp_path / "deploy")
    assert path.name == "program.npz" and (tmp_path / "deploy" / "manifest.json").is_file()
    loaded = load_program(tmp_path / "deploy")
    x = _data(16, seed=5).inputs
    a = program.run(x, trace=True)
    b = loaded.run(x, trace=True)
    c = program.run(x, bitserial=False, trace=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.logits, c.logits)
    for name, levels in a.levels.items():
        assert torch.equal(levels, b.levels[name]) and torch.equal(levels, c.levels[name])
        assert levels.dtype == torch.int64 and int(levels.max()) <= 3
    stored = np.load(path, allow_pickle=False)
    assert stored["0.weight"].dtype == np.int8 and "manifest" in stored.files
    assert isinstance(loaded.layers[-1], OutputLayer)


def test_run_rejects_bad_input():
    model = _randomise_bn(create_model("small_convnet", bits="4/2/2", in_channels=3, img_size=8,
                                       widths=(8, 16, 16, 16, 16)))
    program = convert(model, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="uint8"):
        program.run(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, 8, 8\]"):
        program.run(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------
# Clear errors naming what is not supported
# --------------------------------------------------------------------------------------------


def test_unsupported_model_names_the_module():
    """A foreign model that declares no stages: the first module convert cannot read is named
    (here a SEW block outside a SEW-ResNet, whose stages would say how it is wired)."""

    class Foreign(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = create_model("sew_resnet18_cifar", bits="4/2/2",
                                       widths=(8, 8, 16, 16)).layer1

        def forward(self, x):
            return self.layer1(x)

    with pytest.raises(ValueError, match=r"'layer1\.0' \(SEWBasicBlock\)"):
        convert(Foreign(), input_size=(8, 8, 8))


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.ReLU(), r"'2' \(ReLU\)"),
        (LevelQuantizer(2), r"'2' \(LevelQuantizer\).*multi-step SpikeNeuron"),
        (SpikeNeuron(2, tau=1.5), r"tau = 2\*\*m.*tau=1.5"),
    ],
)
def test_unsupported_layer_in_sequential(layer, match):
    model = nn.Sequential(
        StaticEncoder(2, ConvBN(QuantConv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))),
        SpikeNeuron(2) if not isinstance(layer, SpikeNeuron) else nn.Identity(),
        layer, FoldTime(nn.Flatten()), QuantLinear(4 * 16, 3), TimeMean(),
    ).eval()
    if isinstance(layer, SpikeNeuron):
        model[1] = nn.Identity()
    with pytest.raises(ValueError, match=match):
        convert(model, input_size=(1, 4, 4))


def test_float_weights_are_rejected():
    model = nn.Sequential(
        StaticEncoder(2, ConvBN(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))),
        SpikeNeuron(2), FoldTime(nn.Flatten()), QuantLinear(4 * 16, 3), TimeMean(),
    ).eval()
    with pytest.raises(ValueError, match=r"'0\.stem\.conv' \(Conv2d\).*float weights"):
        convert(model, input_size=(1, 4, 4))
    model[0].stem.conv = QuantConv2d(1, 4, 3, padding=1, bits_w=32)
    with pytest.raises(ValueError, match="b_w=32"):
        convert(model, input_size=(1, 4, 4))


# --------------------------------------------------------------------------------------------
# The zoo's CNNs from their declared stages: small_convnet, ResNet-19, SEW-ResNet
# --------------------------------------------------------------------------------------------

#: Narrow variants (16x16 inputs, 5 classes) of every registered CNN family.
TINY = {
    "small_convnet": {"widths": (8, 16, 16, 16, 16)},
    "resnet19": {"stem_width": 8, "widths": (16, 16, 16, 16)},
    "sew_resnet18_cifar": {"widths": (8, 8, 16, 16)},
    "sew_resnet34_cifar": {"widths": (8, 8, 16, 16)},
    "sew_resnet50_cifar": {"widths": (4, 4, 8, 8)},
    "sew_resnet18": {"widths": (8, 8, 16, 16)},
    "sew_resnet34": {"widths": (8, 8, 16, 16)},
    "sew_resnet50": {"widths": (4, 4, 8, 8)},
}


def _tiny(name: str, bits: str, **kw) -> nn.Module:
    return create_model(name, bits=bits, num_classes=5, img_size=16, **TINY[name], **kw)


def _stage_modules(stages) -> set[int]:
    """ids of every module a declaration names, nested stages included."""
    from dataclasses import fields

    found: set[int] = set()
    for stage in stages:
        for f in fields(stage):
            value = getattr(stage, f.name)
            if isinstance(value, nn.Module):
                found |= {id(m) for m in value.modules()}
            elif isinstance(value, tuple):
                found |= _stage_modules(value)
    return found


def test_every_registered_cnn_declares_stages_or_is_refused():
    """Every registered model either declares stages or, Spikformer, refuses with why."""
    from qsnn.models import list_models

    cnn = {n for n in list_models() if not n.startswith("spikformer")}
    assert cnn == set(TINY)
    assert list_models("spikformer*")  # refused below, not forgotten


@pytest.mark.parametrize("name", sorted(TINY))
def test_declared_stages_compute_the_forward_pass(name):
    """The stages-driven float reference equals model.forward on random input (the same ops:
    bit-identical), and the declaration names every weight layer of the model."""
    from qsnn.models.stages import run_stages

    model = _randomise_bn(_tiny(name, "2/2/2"), seed=11, negative=False)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        got = run_stages(model.stages(), x)
    assert want.abs().max() > 0
    assert torch.equal(got, want)
    named = _stage_modules(model.stages())
    weights = [n for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear,
                                                                    nn.BatchNorm2d))]
    assert weights and all(id(model.get_submodule(n)) in named for n in weights)


def test_a_forward_that_drifts_from_its_stages_is_caught():
    """A SEW-ResNet whose forward skips a shape-preserving block (the declaration still lists
    it), and a small_convnet whose declaration drops a pool: both refused before conversion."""
    from qsnn.models import SEWResNet, SmallConvNet
    from qsnn.models.sew_resnet import SEWBasicBlock
    from qsnn.models.stages import check_stages

    class Skipping(SEWResNet):
        def forward_features(self, x):
            x = self.layer1[0](self.stem(x))  # layer1[1] left out
            x = self.layer4(self.layer3(self.layer2(x)))
            return self.pool(x).flatten(2)

    model = _randomise_bn(Skipping(SEWBasicBlock, (2, 2, 2, 2), bits="2/2/2", num_classes=5,
                                   img_size=16, stem="cifar", widths=(8, 8, 16, 16)),
                          seed=12, negative=False)
    with pytest.raises(ValueError, match=r"Skipping\.stages\(\) does not describe its forward"):
        check_stages(model)
    with pytest.raises(ValueError, match="drifted"):
        convert(model, mean=MEAN, std=STD)

    class NoPool(SmallConvNet):
        def stages(self):
            return tuple(s for s in super().stages() if type(s).__name__ != "Pool")

    small = _randomise_bn(NoPool(bits="2/2/2", num_classes=5, img_size=16,
                                 widths=(8, 16, 16, 16, 16)), negative=False)
    with pytest.raises(ValueError, match="drifted"):
        convert(small, mean=MEAN, std=STD)


def _train_steps(model: nn.Module, data: TensorData, steps: int = 3) -> nn.Module:
    """A few Adam steps on ``data`` (the first sets the data-rule thresholds, then weights and
    thresholds train), then precise batch-norm statistics on the same batch (after so few
    steps the running averages are still mostly their defaults, and deep layers go silent)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.to_float(data.inputs), data.labels
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: exactly this batch's statistics
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("bits", ["4/2/2", "1/4/1"])
@pytest.mark.parametrize("name", ["small_convnet", "resnet19", "sew_resnet18_cifar"])
@pytest.mark.parametrize("learned", [False, True], ids=["bn-random", "learned-theta"])
def test_cnn_zoo_integer_program_agrees(name, bits, learned):
    """Converted from the declared stages, run bit-serially: every spike level (neurons and
    restricted ADDs) and every prediction agrees with the float32 model on 16 images, logits
    within tolerance; every spiking layer fires. Learned: data-set thresholds trained a few
    steps (powers of two at 1/4/1), not 1, folded into each layer."""
    data = _data(16, size=16, seed=13)
    torch.manual_seed(2)  # the weights (the firing check depends on them)
    if learned:
        neuron = {"kernel": "eager", "level_scale": "data", "learn_theta": True,
                  "pow2_theta": bits == "1/4/1"}
        model = _train_steps(_tiny(name, bits, neuron=neuron), data)
        thetas = {n: m.theta for n, m in model.named_modules() if isinstance(m, SpikeNeuron)}
        assert all(t != 1.0 for t in thetas.values()), thetas
    else:
        model = _randomise_bn(_tiny(name, bits), seed=2, negative=False)
    program = convert(model, mean=MEAN, std=STD)
    report = _check_exact(model, program, data)
    assert report.spike_exact == 1.0
    out = program.run(data.inputs, trace=True)
    spiking = [layer for layer in program.layers if isinstance(layer, SpikingLayer)]
    neurons = {n for n, m in model.named_modules() if isinstance(m, SpikeNeuron)}
    assert {layer.name for layer in spiking} == neurons  # one integer layer per neuron
    rates = {layer.name: float((out.levels[layer.name] > 0).double().mean()) for layer in spiking}
    assert all(r > 0 for r in rates.values()), rates
    if learned:
        assert [layer.theta for layer in spiking] == pytest.approx(
            [thetas[layer.name] for layer in spiking], rel=1e-6)
    kinds = [layer.kind for layer in program.layers]
    if name == "resnet19":  # 8 blocks; the first of each stage has a conv shortcut
        shortcuts = [layer.shortcut_op for layer in program.layers
                     if isinstance(layer, ResidualSpikingLayer)]
        assert shortcuts.count("conv") == 3 and shortcuts.count("identity") == 5
    if name == "sew_resnet18_cifar":  # 8 restricted ADDs, 3 with a downsample branch
        assert kinds.count("add") == 8 and kinds.count("load") == 3


@pytest.mark.parametrize(
    ("name", "adds", "loads"),
    [
        # SEW-ResNet-34: (3, 4, 6, 3) basic blocks; stages 2-4 open with a strided downsample
        ("sew_resnet34_cifar", 16, 3),
        ("sew_resnet34", 16, 3),
        # SEW-ResNet-50: (3, 4, 6, 3) bottlenecks; stage 1 also widens 4x, so 4 downsamples
        ("sew_resnet50_cifar", 16, 4),
    ],
)
def test_deeper_sew_families_agree(name, adds, loads):
    """SEW-ResNet-34 (both stems) and the bottleneck SEW-ResNet-50 convert from their declared
    stages and agree bit-serially with the float model: every level, every prediction; one
    restricted ADD per block and one downsample load per projecting block."""
    torch.manual_seed(2)
    model = _randomise_bn(_tiny(name, "4/2/2"), seed=2, negative=False)
    program = convert(model, mean=MEAN, std=STD)
    report = _check_exact(model, program, _data(16, size=16, seed=13))
    assert report.spike_exact == 1.0
    kinds = [layer.kind for layer in program.layers]
    assert kinds.count("add") == adds and kinds.count("load") == loads


def test_sew_imagenet_stem_agrees():
    """The ImageNet stem (7x7/2 conv, 3x3/2 max-pool with padding) converts the same way."""
    model = _randomise_bn(_tiny("sew_resnet18", "4/2/2"), seed=15)
    program = convert(model, mean=MEAN, std=STD)
    assert program.layers[1].kind == "maxpool" and program.layers[1].padding == (1, 1)
    _check_exact(model, program, _data(16, size=16, seed=15))


def test_residual_program_file_roundtrip(tmp_path):
    """Residual programs are written as version 2 and load back to the same logits and levels;
    a program of version-1 layers is still written as version 1; other versions are refused.
    Negative batch-norm scales here: residual neurons whose comparison flips agree too."""
    torch.manual_seed(16)
    model = _randomise_bn(_tiny("resnet19", "4/2/2"), seed=16)
    program = convert(model, mean=MEAN, std=STD)
    assert any((layer.direction < 0).any() for layer in program.layers
               if isinstance(layer, ResidualSpikingLayer))
    _check_exact(model, program, _data(16, size=16, seed=16))
    path = program.save(tmp_path / "res")
    assert json.loads((tmp_path / "res" / "manifest.json").read_text())["version"] == 2
    x = _data(8, size=16, seed=16).inputs
    a, b = program.run(x, trace=True), load_program(path).run(x, trace=True)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(v, b.levels[k]) for k, v in a.levels.items())
    plain = convert(_randomise_bn(_tiny("small_convnet", "4/2/2")), mean=MEAN, std=STD)
    plain.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "manifest.json").read_text())["version"] == 1
    stored = dict(np.load(path, allow_pickle=False))
    manifest = json.loads(bytes(stored["manifest"]).decode())
    manifest["version"] = 3
    stored["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v3.npz", **stored)
    with pytest.raises(ValueError, match="expected version 1 or 2; got 3"):
        load_program(tmp_path / "v3.npz")


def test_spikformer_is_refused_naming_attention():
    from qsnn.models import Spikformer

    model = Spikformer(depth=1, dim=16, num_heads=2, bits="4/2/2", num_classes=5, img_size=16,
                       num_pools=2)
    with pytest.raises(ValueError, match=r"Spikformer cannot be converted.*self-attention"):
        convert(model, mean=MEAN, std=STD)


# --------------------------------------------------------------------------------------------
# Real CIFAR-10 (3 normalized channels: the rounded input gains), behind -m slow
# --------------------------------------------------------------------------------------------

_SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


@pytest.mark.slow
@pytest.mark.skipif(not (_SHARED / "materialize.py").is_file(), reason=f"{_SHARED} is absent")
@pytest.mark.parametrize("bits", ["4/2/2", "1/4/1"])
def test_cifar10_agreement(bits, tmp_path_factory):
    """small_convnet (narrow) trained 2 epochs on a 1,000-per-class CIFAR-10 subset; the
    integer program on 2,000 real test images agrees on >= 99.5 % of predictions."""
    pytest.importorskip("PIL")
    from qsnn.train import TrainConfig, train

    root = tmp_path_factory.getbasetemp() / "cifar10-data"
    if not (root / "cifar-10-batches-py").is_dir():
        subprocess.run([sys.executable, str(_SHARED / "materialize.py"), str(root),
                        "--train-per-class", "1000"], check=True, capture_output=True)
    config = TrainConfig(
        dataset="cifar10", data_root=str(root), bits=bits, epochs=2, batch_size=128, lr=3e-3,
        val_size=0, precision="fp32", channels_last=False, progress=False, profile_batches=0,
        model_options={"widths": (16, 32, 32, 64, 64), "neuron": {"kernel": "eager"}},
    )
    run_dir = tmp_path_factory.mktemp(f"cifar-{bits.replace('/', '-')}")
    train(config, run_dir)
    report, _ = verify_run(run_dir, limit=2000, batch_size=100)
    assert report.agreement >= 0.995, report.summary()
    assert report.within_tolerance, report.summary()


def test_verify_says_what_it_runs_and_how_far_it_is():
    """Issue 18: verify is not silent for its 15-30 s; a stage line, then one line per
    progress interval (0 here: every batch) with the agreement so far."""
    import io

    from qsnn._progress import Progress

    model = _randomise_bn(create_model("small_convnet", bits="2/2/2", in_channels=3, img_size=8,
                                       widths=(8, 16, 16, 16, 16)))
    program = convert(model, mean=MEAN, std=STD)
    stream = io.StringIO()
    report = verify(model, program, _data(), batch_size=16,
                    progress=Progress("verify", stream=stream, every=0))
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("verify: 64 samples through the float model and, bit-serially, the "
                        "integer program")
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"verify: compared {k} of 64 samples" for k in (16, 32, 48, 64)]
    assert all(", 100.00% agree so far" in line for line in lines[1:])
    assert report.agreement == 1.0

"""The level step theta (qsnn.level_scale): rules, data initialisation, the learned step's
gradient, exact spikes under bf16 autocast, and thresholds kept across allocation changes.

References are independent of the code under test: values worked out by hand in the
docstrings, a BPTT loop written from plain autograd ops (tests/test_neurons.py's
``autograd_neuron``), and float64 recomputation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from qsnn import QuantConv2d, QuantLinear, SpikeNeuron
from qsnn.level_scale import LevelScale, lsq_init, pow2_round
from qsnn.models import SEWAdd, create_model
from qsnn.precision import exact_parts, exact_spike_dtype
from test_neurons import autograd_neuron, python_neuron_tensor

BF16 = torch.bfloat16


# --------------------------------------------------------------------------------------------
# Rules and the data initialisation, by hand
# --------------------------------------------------------------------------------------------


def test_scaled_rule_halves_the_step_per_spike_bit():
    """theta * 2**(1 - b_s) with theta = 1: b_s = 1, 2, 4, 8, 16 -> 1, 1/2, 1/8, 2**-7, 2**-15;
    the range (L + 1) * step stays 2 at every b_s."""
    for bits_s, step in [(1, 1.0), (2, 0.5), (4, 0.125), (8, 2.0**-7), (16, 2.0**-15)]:
        n = SpikeNeuron(bits_s, level_scale="scaled")
        assert n.theta == step
        assert (n.levels + 1) * n.theta == 2.0
    assert SpikeNeuron(3, theta=0.6, level_scale="scaled").theta == 0.125  # 0.15 -> 2**-3
    assert SpikeNeuron(3, theta=0.6, level_scale="scaled", pow2_theta=False).theta == 0.15


def test_scaled_rule_at_one_spike_bit_is_the_fixed_neuron():
    """theta * 2**(1 - 1) = theta: a b_s = 1 model trained with ``scaled`` is the ``fixed`` one
    step for step (benchmarks/level_scale.py trains that pair once)."""
    outs = []
    for rule in ("fixed", "scaled"):
        torch.manual_seed(0)
        model = create_model("small_convnet", bits="1/1/2", overrides={"head": 8},
                             neuron={"level_scale": rule, "theta": 1.0})
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        out = model(x)
        out.sum().backward()
        outs.append((out, [p.grad for p in model.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1], strict=True))


def test_zoo_default_step_is_scaled_with_spike_bits():
    """The zoo's default (chosen by BENCHMARKS.md's option x allocation table): every neuron
    of a model built without neuron settings steps by 2**(1 - b_s), by hand 1, 1/2, 1/8 at
    b_s = 1, 2, 4; an override's b_s gets its own step; a plain SpikeNeuron stays at theta = 1."""
    for bits, step in [("1/1/4", 1.0), ("1/2/2", 0.5), ("1/4/1", 0.125), ("4/4/1", 0.125)]:
        model = create_model("small_convnet", bits=bits)
        steps = {m.theta for m in model.modules() if isinstance(m, SpikeNeuron)}
        assert steps == {step}, bits
    mixed = create_model("small_convnet", bits="1/4/1", overrides={"stem.*": "8/2"})
    steps = {n: m.theta for n, m in mixed.named_modules() if isinstance(m, SpikeNeuron)}
    assert steps["stem.sn"] == 0.5 and set(steps.values()) == {0.5, 0.125}
    assert SpikeNeuron(4).theta == 1.0


def test_data_init_on_a_hand_made_batch():
    """I = [[0.5, -1.5, 2, 0], [1, -0.5, 3, 1.5]] (T = 1, B = 2): sum |I| = 10, mean 1.25.
    LSQ: theta_0 = 2 * 1.25 / sqrt(L):
      b_s = 2 (L = 3):  2.5 / 1.7321 = 1.4434; log2 = 0.53 -> 2**1 = 2.0
      b_s = 4 (L = 15): 2.5 / 3.8730 = 0.6455; log2 = -0.63 -> 2**-1 = 0.5"""
    current = torch.tensor([[[0.5, -1.5, 2.0, 0.0], [1.0, -0.5, 3.0, 1.5]]])
    for bits_s, exact, rounded in [(2, 1.4434, 2.0), (4, 0.6455, 0.5)]:
        assert lsq_init(1.25, 2**bits_s - 1) == pytest.approx(exact, abs=1e-4)
        assert pow2_round(exact) == rounded
        calibrated = SpikeNeuron(bits_s, theta=0.3, level_scale="data", pow2_theta=False)
        assert calibrated.theta == 0.3  # before any training batch: the given theta
        calibrated(current)
        assert calibrated.theta == pytest.approx(exact, abs=1e-4)
        pow2 = SpikeNeuron(bits_s, level_scale="data")
        pow2(current)
        assert pow2.theta == rounded
        # set once: a second batch with other values leaves it alone
        pow2(current * 10)
        assert pow2.theta == rounded


def test_data_init_waits_for_training_mode():
    n = SpikeNeuron(4, level_scale="data").eval()
    n(torch.ones(1, 2, 3))
    assert not n.level.ready and n.theta == 1.0
    n.train()(torch.ones(1, 2, 3))  # mean |I| = 1 -> 2 / sqrt(15) = 0.516 -> 0.5
    assert n.level.ready and n.theta == 0.5


def test_reset_forgets_a_calibrated_step():
    n = SpikeNeuron(4, level_scale="data")
    n(torch.ones(1, 2, 3))
    assert n.theta == 0.5
    n.level.reset()
    assert not n.level.ready
    n(torch.full((1, 2, 3), 8.0))  # 16 / 3.873 = 4.13 -> 4
    assert n.theta == 4.0


def test_bad_level_options_name_the_field():
    with pytest.raises(ValueError, match="level_scale"):
        SpikeNeuron(2, level_scale="learned")
    with pytest.raises(ValueError, match="learn_theta"):
        SpikeNeuron(2, learn_theta="yes")
    with pytest.raises(ValueError, match="pow2_theta"):
        SpikeNeuron(2, pow2_theta=1)
    with pytest.raises(ValueError, match="theta"):
        LevelScale(float("inf"))


# --------------------------------------------------------------------------------------------
# The learned step: LSQ gradient scale in the log domain, against an autograd reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize(("bits_s", "T"), [(1, 1), (1, 4), (2, 3), (3, 5)])
@pytest.mark.parametrize("pow2", [False, True])
def test_learned_step_gradient_matches_reference(reset, bits_s, T, pow2):
    """theta = 2**l; dL/dl = g * ln 2 * theta * dL/dtheta with g = 1 / sqrt(N * L) (N = 5
    features per sample and step here), dL/dtheta and dL/dx from a BPTT loop of autograd ops in
    float64 (the surrogate's staircase, reset detached). With pow2, theta_0 = 0.8 becomes 1."""
    g = torch.Generator().manual_seed(77 + T)
    theta0 = 0.8
    x = torch.randn(T, 4, 5, generator=g, dtype=torch.float64) * 1.5 + 0.7
    gout = torch.randn(T, 4, 5, generator=g, dtype=torch.float64)

    n = SpikeNeuron(bits_s, tau=2.0, theta=theta0, reset=reset, learn_theta=True,
                    pow2_theta=pow2)
    param = n.level.log2_theta
    assert isinstance(param, nn.Parameter) and any(p is param for p in n.parameters())
    x1 = x.clone().requires_grad_(True)
    n(x1).backward(gout)
    theta = 1.0 if pow2 else theta0
    assert n.theta == pytest.approx(theta)

    theta_ref = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    x2 = x.clone().requires_grad_(True)
    autograd_neuron(x2, bits_s=bits_s, tau=2.0, theta=theta_ref, reset=reset).backward(gout)
    lsq = 1.0 / math.sqrt(5 * (2**bits_s - 1))
    expected = lsq * math.log(2.0) * theta * theta_ref.grad
    torch.testing.assert_close(param.grad.double(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)


def test_learned_step_forward_uses_the_parameter():
    n = SpikeNeuron(2, theta=1.0, learn_theta=True)
    n(torch.zeros(1, 1, 1))  # ready at the first training call
    with torch.no_grad():
        n.level.log2_theta.fill_(-1.0)  # theta = 0.5
    x = torch.tensor([[0.6], [0.0]])  # h1 = 0.6 -> k = 1 -> s = 0.5
    assert n(x).view(-1).tolist() == [0.5, 0.0]


def test_optimizer_moves_a_learned_step_and_no_weight_decay_reaches_it():
    from qsnn.train.engine import _param_groups

    n = SpikeNeuron(4, level_scale="data", learn_theta=True)
    x = torch.randn(2, 8, 16)
    n(x)
    groups = _param_groups(nn.Sequential(n), 0.05)
    assert any(p is n.level.log2_theta for p in groups[1]["params"])
    opt = torch.optim.AdamW(n.parameters(), lr=0.1)
    before = float(n.level.log2_theta.detach())
    (n(x) * torch.randn(2, 8, 16)).sum().backward()
    opt.step()
    assert float(n.level.log2_theta.detach()) != before


# --------------------------------------------------------------------------------------------
# Exact spikes under bf16 autocast (SPEC §2 precision)
# --------------------------------------------------------------------------------------------


def test_exact_spike_dtype_by_hand():
    """theta = m * 2**e, m odd: bf16 holds every k * theta (k <= L) iff L * m < 256."""
    assert exact_spike_dtype(BF16, 1.0, 255) == BF16  # m = 1: 255 < 256
    assert exact_spike_dtype(BF16, 2.0**-7, 255) == BF16
    assert exact_spike_dtype(BF16, 1.0, 511) == torch.float32  # b_s = 9
    assert exact_spike_dtype(BF16, 0.75, 63) == BF16  # m = 3: 189 < 256
    assert exact_spike_dtype(BF16, 0.75, 127) == torch.float32  # 381
    assert exact_spike_dtype(BF16, 1.7, 1) == torch.float32  # 1.7 has 24 significant bits
    assert exact_spike_dtype(BF16, None, 1) == torch.float32
    assert exact_spike_dtype(torch.float16, 1.0, 2047) == torch.float16  # 11 bits
    assert exact_spike_dtype(torch.float16, 1.0, 4095) == torch.float32
    assert exact_spike_dtype(torch.float16, 2.0**-20, 1) == torch.float32  # subnormal
    assert exact_spike_dtype(torch.float32, 1.7, 65535) == torch.float32
    assert exact_spike_dtype(torch.float64, 1.7, 65535) == torch.float64


def test_issue_example_level_250_survives_bf16():
    """Input 426.0 (bf16) at theta = 1.7, b_s = 8: u = 250.59 -> k = 250, s = 425.0. In bf16 the
    spike would be 424.0 (level 249); it comes back in float32 as 425.0."""
    n = SpikeNeuron(8, theta=1.7)
    with torch.autocast("cpu", dtype=BF16):
        s = n(torch.tensor([[426.0]], dtype=BF16))
    assert s.dtype == torch.float32
    assert s.item() == 425.0 and n.to_levels(s).item() == 250


@pytest.mark.parametrize("bits_s", [8, 16])
@pytest.mark.parametrize("mode", ["theta=1.7", "scaled", "learned"])
def test_levels_exact_under_bf16_autocast(bits_s, mode):
    """On the same bf16 inputs, the neuron under bf16 autocast fires exactly the levels of a
    float64 reference loop, and its spikes equal k * theta in float32."""
    g = torch.Generator().manual_seed(bits_s)
    kw = {"theta": 1.7} if mode == "theta=1.7" else (
        {"level_scale": "scaled"} if mode == "scaled" else
        {"level_scale": "data", "learn_theta": True})
    n = SpikeNeuron(bits_s, tau=2.0, **kw)
    levels = n.levels
    spread = 1.7 * levels if mode == "theta=1.7" else 2.0
    x = (torch.rand(3, 64, 32, generator=g) * 1.2 * spread).to(BF16)
    n(x.float())  # a learned step is set (from data) by the first training call
    theta = n.theta
    with torch.autocast("cpu", dtype=BF16):
        s = n(x)
    _, ref_levels = python_neuron_tensor(x.double(), bits_s=bits_s, tau=2.0,
                                                  theta=theta, reset="hard")
    assert torch.equal(n.to_levels(s).long(), ref_levels.long())
    assert torch.equal(s.float(), ref_levels.float() * torch.tensor(theta))
    if mode != "theta=1.7" and bits_s == 8:
        assert s.dtype == BF16  # power-of-two steps: bf16 holds 8-bit levels, no cost
    else:
        assert s.dtype == torch.float32
    if mode == "theta=1.7":  # ... and bf16 would not have held them: some levels change
        rounded = torch.round(s.to(BF16).double() / theta).long()
        assert not torch.equal(rounded, ref_levels.long())


def test_16_bit_level_survives_bf16_autocast():
    """b_s = 16, theta = 1, a float32 current 40001.5 under bf16 autocast: k = 40001, sent as
    40001.0 in float32 (bf16 would send 39936 or 40192)."""
    n = SpikeNeuron(16)
    with torch.autocast("cpu", dtype=BF16):
        s = n(torch.tensor([[40001.5]]))
    assert s.dtype == torch.float32 and s.item() == 40001.0


def test_next_layer_reads_float32_levels_exactly_under_autocast():
    """Levels k1 = 40001, k2 = 40000 on the step 2**-15 (b_s = 16, scaled): weights [1, -1]
    give (k1 - k2) * 2**-15 = 2**-15 exactly. Cast to bf16 both would become 39936 * 2**-15 and
    the difference 0; QuantLinear/QuantConv2d read them as two exact bf16 halves."""
    step = 2.0**-15
    x = torch.tensor([[40001 * step, 40000 * step]])
    lin = QuantLinear(2, 1, bias=False, bits_w=16)
    conv = QuantConv2d(2, 1, 1, bias=False, bits_w=16)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
        conv.weight.copy_(torch.tensor([[1.0, -1.0]]).view(1, 2, 1, 1))
    with torch.autocast("cpu", dtype=BF16):
        assert lin(x).item() == step
        assert conv(x.view(1, 2, 1, 1)).item() == step
        assert lin(x.to(BF16)).item() == 0.0  # what a plain bf16 input loses


def test_next_layer_reads_any_float32_spike_exactly():
    """theta = 1.7 is not a power of two: the float32 spikes 40001 * 1.7 and 40000 * 1.7 have
    24 significant bits. Their three bf16 parts sum to them exactly, so weights [1, -1] give
    the float32 difference (1.703125 here) rounded once to bf16 (also 1.703125), where a bf16
    cast of the inputs gives 0 or 256."""
    theta = torch.tensor(1.7)
    x = torch.stack([40001 * theta, 40000 * theta]).view(1, 2)
    with torch.autocast("cpu", dtype=BF16):
        hi, mid, lo = exact_parts(x)
        assert torch.equal(hi.double() + mid.double() + lo.double(), x.double())
        lin = QuantLinear(2, 1, bias=False, bits_w=16)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
        exact = float(x[0, 0].double() - x[0, 1].double())
        assert lin(x).item() == float(torch.tensor(exact).to(BF16))
        assert lin(x.to(BF16)).item() != lin(x).item()
    assert exact_parts(x) is None


def test_float16_autocast_falls_back_to_float32():
    """float16 cannot hold 65535 * 1 (it overflows past 65504 only above, but its 11 bits
    round it): its parts would not be exact, so the layer runs in float32."""
    x = torch.tensor([[65535.0, 65534.0]])
    lin = QuantLinear(2, 1, bias=False, bits_w=16)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            assert exact_parts(x) == ()
            assert lin(x).item() == 1.0
    except RuntimeError as err:  # an older CPU autocast without float16
        pytest.skip(f"float16 autocast on CPU unavailable: {err}")


def test_model_cast_to_bf16_runs_in_bf16_without_autocast():
    """Without autocast nothing switches dtype: a bf16 model computes (and sends spikes) in
    bf16 throughout, even where bf16 cannot hold every level."""
    net = nn.Sequential(SpikeNeuron(8, theta=1.7), QuantLinear(4, 2)).to(BF16)
    out = net(torch.rand(2, 3, 4, dtype=BF16) * 300)
    assert out.dtype == BF16 and net[0](torch.ones(1, 1, 4, dtype=BF16)).dtype == BF16


def test_data_rule_before_its_first_batch_fires_on_the_given_theta():
    """Evaluated before any training batch, a data-rule neuron uses theta = 0.3 as given: under
    bf16 autocast its spikes (0.3 k, not a power-of-two grid) come in float32, exactly."""
    n = SpikeNeuron(4, theta=0.3, level_scale="data").eval()
    x = torch.tensor([[1.25, 4.0]])
    with torch.autocast("cpu", dtype=BF16):
        s = n(x)
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([[4.0, 13.0]]) * torch.tensor(0.3))


def test_sew_add_output_exact_dtype():
    """Under bf16 autocast: b_s = 2 on theta = 0.75 (m = 3: L m = 9 < 256) stays bf16; b_s = 16
    goes to float32 (40001 has 16 significant bits). Without autocast: the promoted dtype."""
    a = torch.tensor([0.75, 1.5], dtype=BF16)
    add = SEWAdd(16, theta=1.0)
    big = torch.tensor([30000.0, 40000.0])
    with torch.autocast("cpu", dtype=BF16):
        assert SEWAdd(2, theta=0.75)(a, a).dtype == BF16
        out = add(big, torch.tensor([1.0, 1.0], dtype=BF16))
    assert out.dtype == torch.float32 and out.tolist() == [30001.0, 40001.0]
    assert SEWAdd(2, theta=0.75)(a, a).dtype == BF16
    assert add(big, big).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# Shared grids, allocation changes, state
# --------------------------------------------------------------------------------------------

LEARNED = {"level_scale": "data", "learn_theta": True}


def test_sew_resnet_add_inputs_share_one_grid():
    """Every ADD's two inputs lie on one grid: block 0 of layer1 shares the stem's; a stage with
    a downsample branch starts a new one, shared by its downsample neuron and every block."""
    model = create_model("sew_resnet18_cifar", bits="1/2/2", neuron=LEARNED)
    l1, l2 = model.layer1, model.layer2
    assert l1[0].add.level is model.stem.sn.level is l1[0].conv2.sn.level is l1[1].add.level
    assert l2[0].add.level is l2[0].downsample.sn.level is l2[1].conv2.sn.level
    assert l2[0].add.level is not l1[0].add.level
    assert l1[0].conv1.sn.level is not l1[0].add.level
    model(torch.rand(4, 3, 32, 32))  # the first training batch sets every step
    for block in (*l1, *l2, *model.layer3, *model.layer4):
        assert block.add.level.ready
        assert block.add.theta == block.conv2.sn.theta
    # SEW-ResNet-18: 4 shared grids (stem + layer1, layer2..4) and 8 conv1 neurons = 12 steps,
    # 12 parameters for the optimizer; the state dict names a shared one under every path
    steps = {id(m) for m in model.modules() if isinstance(m, LevelScale)}
    assert len(steps) == 12
    assert len([n for n, _ in model.named_parameters() if n.endswith("log2_theta")]) == 12
    assert len([k for k in model.state_dict() if k.endswith("log2_theta")]) > 12


def test_overrides_that_split_a_shared_grid_are_refused():
    """The scaled step depends on b_s: an ADD's inputs at b_s 2 and 4 would lie on steps 1/2
    and 1/8. (Fixed, data and learned steps do not depend on b_s: no such error.)"""
    create_model("sew_resnet18_cifar", bits="1/2/2", neuron=LEARNED,
                 overrides={"layer1.0.conv2.sn": "1/4"})
    model = create_model("sew_resnet18_cifar", bits="1/2/2", neuron={"level_scale": "scaled"})
    before = [m.bits_s for m in model.modules() if isinstance(m, SpikeNeuron)]
    with pytest.raises(ValueError, match=r"share one spike grid.*layer1\.0\.conv2\.sn: b_s=4"):
        model.set_bits("1/2/2", {"layer1.0.conv2.sn": "1/4"})
    assert [m.bits_s for m in model.modules() if isinstance(m, SpikeNeuron)] == before
    model.set_bits("1/2/2", {"layer1.0.conv1.sn": "1/4"})  # a neuron on its own grid: fine


def test_old_learned_threshold_checkpoint_loads():
    """Before level scales a learned threshold was the parameter `sn.theta` (linear); it loads
    as log2_theta = log2(theta), set (no recalibration), when the config is read as old."""
    from qsnn.train import TrainConfig

    old = TrainConfig.from_dict({"bits": "1/4/1", "model_options": {"neuron": {
        "learn_theta": True}}})  # fmt: skip
    assert old.precise_bn == 0
    assert old.model_options["neuron"] == {"level_scale": "fixed", "learn_theta": True,
                                           "pow2_theta": False}
    new = TrainConfig.from_dict(TrainConfig().to_dict())
    assert new.precise_bn == 4096 and new.model_options is None
    n = SpikeNeuron(4, **old.model_options["neuron"])
    n.load_state_dict({"theta": torch.tensor(0.3)})
    assert n.level.ready and n.theta == pytest.approx(0.3)


def test_spikformer_attention_step_is_the_product_of_q_and_k_steps():
    model = create_model("spikformer_2_384_cifar", bits="1/2/1", neuron=LEARNED)
    model(torch.rand(2, 3, 32, 32))
    ssa = model.blocks[0].attn
    assert ssa.attn_map.theta == ssa.q.sn.theta * ssa.k.sn.theta


def _thetas(model):
    return {n: m.theta for n, m in model.named_modules() if isinstance(m, SpikeNeuron)}


def test_allocation_change_keeps_trained_steps():
    model = create_model("small_convnet", bits="1/4/1", neuron=LEARNED)
    model(torch.rand(4, 3, 32, 32))
    with torch.no_grad():  # as if trained
        for i, p in enumerate(p for p in model.parameters() if p.dim() == 0):
            p.add_(0.7 * i)
    trained = _thetas(model)
    assert len(set(trained.values())) > 1
    model.set_bits("1/4/3")  # qsnn eval --time-steps 3
    assert _thetas(model) == trained
    model.set_bits("1/2/1")  # a new b_s keeps the step too (reset() is explicit)
    assert _thetas(model) == trained


def test_state_dict_round_trip_does_not_recalibrate():
    model = create_model("small_convnet", bits="1/4/1", neuron={"level_scale": "data"})
    model(torch.rand(4, 3, 32, 32))
    state = model.state_dict()
    fresh = create_model("small_convnet", bits="1/4/1", neuron={"level_scale": "data"})
    fresh.load_state_dict(state)
    fresh(torch.rand(4, 3, 32, 32) * 50)  # training mode, very different input
    assert _thetas(fresh) == _thetas(model)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("small_convnet", {"img_size": 8, "widths": (8, 8, 8, 8, 8)}),
        ("sew_resnet18_cifar", {"img_size": 8}),
        ("resnet19", {"img_size": 8}),
        ("spikformer_4_256_cifar", {"img_size": 16}),
    ],
)
def test_zoo_trains_learned_steps_under_bf16_autocast(name, kw):
    """One bf16 training step of every model family with data-initialised learned steps: every
    step is set, gets a finite gradient, and every spike tensor lies on its grid."""
    torch.manual_seed(0)
    model = create_model(name, bits="2/4/2", neuron=LEARNED, **kw)
    off_grid = []

    def on_grid(mod, args, out):
        k = out.float() / mod.theta
        if not torch.equal(k, k.round()):
            off_grid.append(type(mod).__name__)

    for m in model.modules():
        if isinstance(m, (SpikeNeuron, SEWAdd)):
            m.register_forward_hook(on_grid)
    with torch.autocast("cpu", dtype=BF16):
        loss = model(torch.randn(2, 3, kw["img_size"], kw["img_size"])).float().square().mean()
    loss.backward()
    steps = [m for m in model.modules() if isinstance(m, LevelScale) and m.stateful]
    assert steps and all(s.ready for s in steps)
    grads = [s.log2_theta.grad for s in steps]
    assert all(g is not None and torch.isfinite(g) for g in grads)
    assert not off_grid, off_grid


def test_auto_precision_keeps_bf16_only_where_a_bf16_current_reaches_every_level():
    """A bf16 current has 8 significant bits: below 256 * theta its step is at most theta, so
    it reaches every level of b_s <= 8; a b_s = 16 neuron at T = 1 would see only the bf16
    values in [0, 65535 theta] (a few thousand levels). Checked by counting them."""
    from qsnn.train.engine import auto_precision

    grid = torch.arange(0, 2**16, dtype=torch.float32).to(BF16).unique()
    assert grid.numel() < 2**12  # distinct levels a bf16 current can produce at b_s = 16
    assert torch.arange(0, 256, dtype=torch.float32).to(BF16).unique().numel() == 256
    for bits, want in (("1/8/1", BF16), ("1/16/1", None), ("4/4/1", BF16)):
        model = create_model("small_convnet", bits=bits, img_size=8, widths=(4,) * 5)
        assert auto_precision(model, BF16) == want, bits
    model = create_model("small_convnet", bits="1/4/1", img_size=8, widths=(4,) * 5,
                         overrides={"features.0.sn": "1/16"})
    assert auto_precision(model, BF16) is None
    assert auto_precision(model, None) is None

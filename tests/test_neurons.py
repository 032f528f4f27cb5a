"""Acceptance tests for the spike-pattern neuron (SPEC §2, paper Eq. 1, 2, 6-7).

References are written here independently of qsnn: a per-element plain-Python loop over ``t``
for the forward pass, and an autograd loop of torch ops (float64) with a hand-written
straight-through staircase whose backward is the surrogate ``g(u)`` for the gradients.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
import torch.nn as nn

from qsnn import LIFNeuron, QuantActivation, SpikeNeuron, Surrogate, spike_pattern_step

# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------


def python_neuron(xs, *, bits_s, tau, theta, reset, v_reset=0.0):
    """Per-element reference: ``xs`` is a list over t of Python floats; returns (spikes, levels)."""
    L = 2**bits_s - 1
    beta = 1.0 / tau
    v = 0.0
    spikes, levels = [], []
    for x in xs:
        h = beta * v + x
        k = min(max(math.floor(h / theta), 0), L)
        v = (v_reset if k > 0 else h) if reset == "hard" else h - k * theta
        spikes.append(k * theta)
        levels.append(k)
    return spikes, levels


def python_neuron_tensor(x, **kw):
    """Apply ``python_neuron`` element by element to ``x: [T, ...]`` (float64 result)."""
    T = x.shape[0]
    flat = x.detach().double().reshape(T, -1)
    out = torch.zeros_like(flat)
    lev = torch.zeros_like(flat, dtype=torch.int64)
    for n in range(flat.shape[1]):
        s, k = python_neuron([float(flat[t, n]) for t in range(T)], **kw)
        out[:, n] = torch.tensor(s, dtype=torch.float64)
        lev[:, n] = torch.tensor(k, dtype=torch.int64)
    return out.reshape(x.shape), lev.reshape(x.shape)


def ref_bump(shape, x, w):
    """Unit-area bumps of peak 1/w (written from the SPEC/brief, not from qsnn)."""
    if shape == "triangle":
        return torch.clamp(1.0 - x.abs() / w, min=0.0) / w
    if shape == "rectangle":
        return (x.abs() < w / 2).to(x.dtype) / w
    if shape == "sigmoid":
        a = 4.0 / w
        sg = torch.sigmoid(a * x)
        return a * sg * (1 - sg)
    if shape == "atan":
        a = 2.0 / w
        return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)
    raise AssertionError(shape)


def ref_g(u, levels, shape="triangle", width=1.0):
    """``g(u) = sum_{j=1}^{L} bump(u - j)`` (full sum, no truncation)."""
    return sum(ref_bump(shape, u - j, width) for j in range(1, levels + 1))


class StaircaseSTE(torch.autograd.Function):
    """Forward ``clamp(floor(u), 0, L)``; backward ``grad * g(u)``."""

    @staticmethod
    def forward(ctx, u, levels, shape, width):
        ctx.save_for_backward(u)
        ctx.levels, ctx.shape, ctx.width = levels, shape, width
        return torch.clamp(torch.floor(u), 0, levels)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ref_g(u, ctx.levels, ctx.shape, ctx.width), None, None, None


def autograd_neuron(x, *, bits_s, tau, theta, reset, v_reset=0.0, shape="triangle", width=1.0):
    """Reference BPTT loop (reset detached) from torch ops; ``theta`` may be a tensor."""
    L = 2**bits_s - 1
    beta = 1.0 / tau
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = beta * v + x[t]
        u = h / theta
        k = StaircaseSTE.apply(u, L, shape, width)
        out.append(k * theta)
        if reset == "hard":
            v = torch.where(k.detach() > 0, torch.full_like(h, v_reset), h)
        else:
            v = h - (k * theta).detach()
    return torch.stack(out)


# --------------------------------------------------------------------------------------------
# Forward: golden values worked out by hand
# --------------------------------------------------------------------------------------------


def test_hand_example_hard_reset():
    """b_s = 2 (L = 3), tau = 2 (beta = 0.5), theta = 1, hard reset, x = [1.5, 0.75, 0.5, 5]:

    t1: h = 1.5            k = 1   v = 0
    t2: h = 0 + 0.75       k = 0   v = 0.75
    t3: h = 0.375 + 0.5    k = 0   v = 0.875
    t4: h = 0.4375 + 5     k = 3 (clamped from 5)   v = 0
    spikes = [1, 0, 0, 3]
    """
    x = torch.tensor([1.5, 0.75, 0.5, 5.0]).view(4, 1)
    n = SpikeNeuron(2, tau=2.0, theta=1.0, reset="hard")
    assert n(x).view(-1).tolist() == [1.0, 0.0, 0.0, 3.0]
    lv = n.forward_levels(x)
    assert lv.dtype == torch.int32
    assert lv.view(-1).tolist() == [1, 0, 0, 3]


def test_hand_example_soft_reset():
    """Same input, soft reset:

    t1: h = 1.5            k = 1   v = 0.5
    t2: h = 0.25 + 0.75    k = 1   v = 0
    t3: h = 0 + 0.5        k = 0   v = 0.5
    t4: h = 0.25 + 5       k = 3   v = 2.25
    spikes = [1, 1, 0, 3]
    """
    x = torch.tensor([1.5, 0.75, 0.5, 5.0]).view(4, 1)
    n = SpikeNeuron(2, tau=2.0, theta=1.0, reset="soft")
    assert n(x).view(-1).tolist() == [1.0, 1.0, 0.0, 3.0]
    assert n.forward_levels(x).view(-1).tolist() == [1, 1, 0, 3]


def test_hand_example_lif_theta_half():
    """LIF (b_s = 1), tau = 2, theta = 0.5, hard reset, x = [0.6, 0.2, 1.6]:

    t1: h = 0.6, u = 1.2 -> k = 1, v = 0
    t2: h = 0.2, u = 0.4 -> k = 0, v = 0.2
    t3: h = 0.1 + 1.6 = 1.7, u = 3.4 -> k = 1 (L = 1), v = 0
    spikes = k * theta = [0.5, 0, 0.5]
    """
    x = torch.tensor([0.6, 0.2, 1.6]).view(3, 1)
    assert LIFNeuron(tau=2.0, theta=0.5)(x).view(-1).tolist() == [0.5, 0.0, 0.5]
    assert SpikeNeuron(1, tau=2.0, theta=0.5)(x).view(-1).tolist() == [0.5, 0.0, 0.5]


def test_hand_example_integrate_and_fire_v_reset():
    """tau = 1 (beta = 1, IF), b_s = 1, theta = 1, hard reset to v_reset = 0.5, x = [1, 0.25, 0.25]:

    t1: h = 1     -> k = 1, v = 0.5
    t2: h = 0.75  -> k = 0, v = 0.75
    t3: h = 1.0   -> k = 1
    spikes = [1, 0, 1]  (with v_reset = 0 instead: t2 h = 0.25, t3 h = 0.5 -> [1, 0, 0])
    """
    x = torch.tensor([1.0, 0.25, 0.25]).view(3, 1)
    assert SpikeNeuron(1, tau=1.0, v_reset=0.5)(x).view(-1).tolist() == [1.0, 0.0, 1.0]
    assert SpikeNeuron(1, tau=1.0, v_reset=0.0)(x).view(-1).tolist() == [1.0, 0.0, 0.0]


def test_defaults():
    """Defaults (SPEC §2): tau = 2, theta = 1, hard reset, b_s = 1.

    x = [0.75, 0.75, 0.75]: h = 0.75 (k 0), 1.125 (k 1, v -> 0), 0.75 (k 0) -> [0, 1, 0].
    """
    x = torch.tensor([0.75, 0.75, 0.75]).view(3, 1)
    assert SpikeNeuron()(x).view(-1).tolist() == [0.0, 1.0, 0.0]


# --------------------------------------------------------------------------------------------
# Forward: against the per-element plain-Python loop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("bits_s", [1, 2, 3, 5])
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize(("theta", "T"), [(1.0, 1), (0.5, 4), (1.3, 3), (0.25, 6)])
def test_neuron_matches_python_loop(reset, bits_s, tau, theta, T):
    g = torch.Generator().manual_seed(zlib.crc32(repr((reset, bits_s, tau, theta, T)).encode()))
    x = torch.randn(T, 2, 3, 2, generator=g, dtype=torch.float64) * (2.0 * theta) + 0.6 * theta
    n = SpikeNeuron(bits_s, tau=tau, theta=theta, reset=reset)
    spikes, levels = python_neuron_tensor(x, bits_s=bits_s, tau=tau, theta=theta, reset=reset)
    out = n(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out.double(), spikes, rtol=0, atol=1e-12)
    assert torch.equal(n.forward_levels(x).long(), levels)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("v_reset", [0.0, 0.25, -0.5])
def test_neuron_v_reset_matches_python_loop(reset, v_reset):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 7, generator=g, dtype=torch.float64) * 2.5
    n = SpikeNeuron(2, tau=1.5, theta=0.8, reset=reset, v_reset=v_reset)
    spikes, _ = python_neuron_tensor(x, bits_s=2, tau=1.5, theta=0.8, reset=reset,
                                     v_reset=v_reset)
    torch.testing.assert_close(n(x).double(), spikes, rtol=0, atol=1e-12)


def test_neuron_float32_input_matches_python_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=g) * 2 + 0.5  # float32
    n = SpikeNeuron(3, tau=2.0, theta=0.5, reset="soft")
    spikes, _ = python_neuron_tensor(x, bits_s=3, tau=2.0, theta=0.5, reset="soft")
    out = n(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), spikes, rtol=0, atol=1e-6)


def test_neuron_float64_membrane_is_float64():
    """A float64 input is integrated in float64.

    tau = 1 (beta = 1), b_s = 1, theta = 1, x = [1 - 1e-12, 0]:
    t1: h = 1 - 1e-12 < 1 -> k = 0 (no spike), v = h; t2: h = 1 - 1e-12 -> k = 0.
    Expected spikes [0, 0]. (A float32 membrane rounds h to 1.0 and fires at t1.)
    """
    x = torch.tensor([1.0 - 1e-12, 0.0], dtype=torch.float64).view(2, 1)
    n = SpikeNeuron(1, tau=1.0, theta=1.0)
    assert n(x).view(-1).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("bits_s", [1, 3])
def test_module_equals_pure_step_function(reset, bits_s):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 4, 3, generator=g, dtype=torch.float64) * 2
    tau, theta, v_reset = 3.0, 0.7, 0.1
    n = SpikeNeuron(bits_s, tau=tau, theta=theta, reset=reset, v_reset=v_reset)
    v = torch.zeros_like(x[0])
    ks = []
    for t in range(x.shape[0]):
        k, v = spike_pattern_step(x[t], v, bits_s=bits_s, theta=theta, beta=1 / tau,
                                  reset=reset, v_reset=v_reset)
        ks.append(k)
    k_step = torch.stack(ks)
    _, levels = python_neuron_tensor(x, bits_s=bits_s, tau=tau, theta=theta, reset=reset,
                                     v_reset=v_reset)
    assert torch.equal(k_step.long(), levels)
    torch.testing.assert_close(n(x).double(), k_step.double() * theta, rtol=0, atol=1e-12)


def test_step_function_hand_values():
    """spike_pattern_step(I = [2.5, 0.5, -1], v = [0, 1, 0]), b_s = 2, theta = 1, beta = 0.5:

    h = [2.5, 1.0, -1]; k = [2, 1, 0];
    hard: v_next = [0, 0, -1];  soft: v_next = [0.5, 0, -1].
    """
    cur = torch.tensor([2.5, 0.5, -1.0])
    v = torch.tensor([0.0, 1.0, 0.0])
    k, vn = spike_pattern_step(cur, v, bits_s=2, theta=1.0, beta=0.5, reset="hard", v_reset=0.0)
    assert k.tolist() == [2, 1, 0]
    assert vn.tolist() == [0.0, 0.0, -1.0]
    k, vn = spike_pattern_step(cur, v, bits_s=2, theta=1.0, beta=0.5, reset="soft", v_reset=0.0)
    assert k.tolist() == [2, 1, 0]
    assert vn.tolist() == [0.5, 0.0, -1.0]


def test_every_call_starts_from_zero_state():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 6, generator=g) * 1.8
    for n in (SpikeNeuron(2, tau=1.0, reset="soft"), SpikeNeuron(1), LIFNeuron(tau=4.0)):
        a = n(x)
        b = n(x)
        assert torch.equal(a, b)
        # and a different input in between does not leak into the next call
        n(torch.full_like(x, 0.9))
        assert torch.equal(n(x), a)
    assert not any(True for _ in SpikeNeuron(2).buffers())


def test_levels_in_range_and_spikes_are_levels_times_theta():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 4, 5, generator=g) * 10
    for bits_s in (1, 2, 4, 8, 16):
        n = SpikeNeuron(bits_s, tau=1.0, theta=0.5, reset="soft")
        k = n.forward_levels(x)
        assert k.dtype == torch.int32
        assert int(k.min()) >= 0 and int(k.max()) <= 2**bits_s - 1
        torch.testing.assert_close(n(x), k.float() * 0.5)


# --------------------------------------------------------------------------------------------
# T = 1 is the quantized ANN activation (paper Eq. 2)
# --------------------------------------------------------------------------------------------


def python_quantizer(x, bits, delta):
    return min(max(math.floor(x / delta), 0), 2**bits - 1) * delta


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("delta", [1.0, 0.25, 0.3])
@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_neuron_T1_equals_qann_quantizer(bits, delta, tau, reset):
    g = torch.Generator().manual_seed(bits * 100 + int(delta * 10))
    x = torch.randn(3, 17, generator=g, dtype=torch.float64) * delta * 2**bits / 2
    x[0, :4] = torch.tensor([-delta, 0.0, delta, (2**bits + 3) * delta], dtype=torch.float64)
    expected = torch.tensor([[python_quantizer(float(v), bits, delta) for v in row] for row in x],
                            dtype=torch.float64)
    n = SpikeNeuron(bits, tau=tau, theta=delta, reset=reset)
    torch.testing.assert_close(n(x.unsqueeze(0))[0], expected, rtol=0, atol=1e-12)
    qa = QuantActivation(bits, delta=delta)
    torch.testing.assert_close(qa(x), expected, rtol=0, atol=1e-12)


def test_quant_activation_hand_values():
    """b = 2, Delta = 0.5: x = [-1, 0.2, 0.5, 0.99, 1.2, 1.5, 9] -> floor(x/0.5) = [-2, 0, 1, 1,
    2, 3, 18] -> clamp to [0, 3] -> [0, 0, 1, 1, 2, 3, 3] -> times 0.5."""
    x = torch.tensor([[-1.0, 0.2, 0.5, 0.99, 1.2, 1.5, 9.0]])
    assert QuantActivation(2, delta=0.5)(x).view(-1).tolist() == [0, 0, 0.5, 0.5, 1.0, 1.5, 1.5]


def test_quant_activation_keeps_shape():
    x = torch.randn(2, 3, 4, 4)
    assert QuantActivation(3, delta=0.1)(x).shape == x.shape


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bits_s": 0}, "bits_s"),
        ({"bits_s": 17}, "bits_s"),
        ({"bits_s": 2.0}, "bits_s"),
        ({"bits_s": True}, "bits_s"),
        ({"tau": 0.5}, "tau"),
        ({"tau": 0.0}, "tau"),
        ({"tau": -2.0}, "tau"),
        ({"theta": 0.0}, "theta"),
        ({"theta": -1.0}, "theta"),
        ({"reset": "foo"}, "reset"),
        ({"reset": "HARD"}, "reset"),
    ],
)
def test_invalid_neuron_args(kwargs, name):
    bits_s = kwargs.pop("bits_s", 1)
    with pytest.raises(ValueError, match=name):
        SpikeNeuron(bits_s, **kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [({"tau": 0.5}, "tau"), ({"theta": 0.0}, "theta"),
                                              ({"reset": "foo"}, "reset")])
def test_invalid_lif_args(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LIFNeuron(**kwargs)


@pytest.mark.parametrize("bits", [0, 17])
def test_invalid_quant_activation_bits(bits):
    with pytest.raises(ValueError, match="bits_s"):
        QuantActivation(bits, delta=1.0)


def test_neuron_rejects_input_without_time_dim():
    with pytest.raises(ValueError):
        SpikeNeuron(2)(torch.randn(5))


@pytest.mark.parametrize(("shape", "width"), [("gauss", 1.0), ("triangle", 0.0),
                                              ("triangle", -1.0)])
def test_invalid_surrogate(shape, width):
    with pytest.raises(ValueError):
        Surrogate(shape, width)


# --------------------------------------------------------------------------------------------
# Surrogate derivative (observed through the neuron's T = 1 gradient: ds/dx = g(x / theta))
# --------------------------------------------------------------------------------------------


def _t1_grad(x, bits_s, theta, surrogate):
    x = x.clone().requires_grad_(True)
    n = SpikeNeuron(bits_s, theta=theta, surrogate=surrogate)
    n(x.unsqueeze(0)).sum().backward()
    return x.grad


@pytest.mark.parametrize("bits_s", [1, 2, 3])
def test_default_surrogate_is_trapezoid(bits_s):
    """Default triangle of width 1: g(u) = clamp(min(u, L + 1 - u), 0, 1).

    Hand values for L = 1: g(-0.5) = 0, g(0.25) = 0.25, g(1) = 1, g(1.5) = 0.5, g(2.5) = 0.
    """
    L = 2**bits_s - 1
    u = torch.linspace(-1.5, L + 2.5, 97, dtype=torch.float64)
    expected = torch.clamp(torch.minimum(u, L + 1 - u), 0, 1)
    torch.testing.assert_close(_t1_grad(u, bits_s, 1.0, None), expected, rtol=0, atol=1e-12)
    if bits_s == 1:
        pts = torch.tensor([-0.5, 0.25, 1.0, 1.5, 2.5], dtype=torch.float64)
        assert _t1_grad(pts, 1, 1.0, None).tolist() == [0.0, 0.25, 1.0, 0.5, 0.0]


@pytest.mark.parametrize("bits_s", [1, 2, 3])
@pytest.mark.parametrize(("shape", "width"), [("triangle", 0.5), ("triangle", 2.0),
                                              ("rectangle", 0.5), ("rectangle", 1.5)])
def test_surrogate_exact_shapes_match_sum_of_bumps(bits_s, shape, width):
    L = 2**bits_s - 1
    # avoid rectangle edges |u - j| == w/2 exactly
    u = torch.linspace(-2.0, L + 3.0, 131, dtype=torch.float64) + 0.0123
    theta = 0.5
    got = _t1_grad(u * theta, bits_s, theta, Surrogate(shape, width))
    torch.testing.assert_close(got, ref_g(u, L, shape, width), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bits_s", [1, 2])
@pytest.mark.parametrize("shape", ["sigmoid", "atan"])
def test_surrogate_smooth_shapes_near_levels(bits_s, shape):
    """Near the jumps (within half a level) the smooth shapes match the full sum of bumps."""
    L = 2**bits_s - 1
    u = torch.cat([torch.linspace(j - 0.5, j + 0.5, 11, dtype=torch.float64)
                   for j in range(1, L + 1)])
    got = _t1_grad(u, bits_s, 1.0, Surrogate(shape, 1.0))
    torch.testing.assert_close(got, ref_g(u, L, shape, 1.0), rtol=0, atol=0.03)
    # peak 1/w at an isolated jump
    if bits_s == 1:
        assert abs(float(_t1_grad(torch.tensor([1.0], dtype=torch.float64), 1, 1.0,
                                  Surrogate(shape, 1.0))[0]) - 1.0) < 0.03


def _integration_grid(levels: int) -> torch.Tensor:
    """Nodes covering the whole line, float64: uniform steps h = 2**-10 over the levels
    (offset by h/2, so every bump edge of a rectangle of width 0.5, 1, 1.5, 2, 4 falls midway
    between nodes and the trapezoid rule integrates the step exactly), then tails whose steps
    grow geometrically (ratio 1.002) out to |u| ~ 1e8, beyond which atan's tail is < 1e-8 of
    a level."""
    h = 2.0**-10
    core = torch.arange(-10.0, levels + 11.0, h, dtype=torch.float64) + h / 2
    lo, hi = float(core[0]), float(core[-1])
    n = math.ceil(math.log(1e7) / math.log(1.002))
    grow = torch.tensor(1.002, dtype=torch.float64) ** torch.arange(1, n + 1, dtype=torch.float64)
    left = (lo - 11.0 * (grow - 1.0)).flip(0)  # lo - 11 (r^k - 1): first step 0.022
    right = hi + 11.0 * (grow - 1.0)
    return torch.cat([left, core, right])


@pytest.mark.parametrize("bits_s", [1, 2, 5])
@pytest.mark.parametrize(("shape", "width"), [
    ("triangle", 0.5), ("triangle", 1.0), ("triangle", 2.0),
    ("rectangle", 0.5), ("rectangle", 1.0), ("rectangle", 4.0),
    ("sigmoid", 0.5), ("sigmoid", 1.0), ("sigmoid", 2.0),
    ("atan", 0.5), ("atan", 1.0), ("atan", 2.0),
])
def test_surrogate_unit_area_per_level(bits_s, shape, width):
    """The surrogate's promise (``qsnn.surrogate``): every bump has unit area, so ``g``
    integrates to ``L = 2**b_s - 1`` over the line (the smooth staircase climbs by ``L``).

    Checked by trapezoid integration (float64) of the neuron's input gradient (``theta = 1``,
    so ``ds/dx = g(u)``), against the closed form, not against a copy of the bumps. Up to
    ``L = 16`` every bump is summed: area ``L`` for every shape. For ``L = 31`` the sum runs
    over the 16 levels nearest to ``u``, i.e. level ``j`` counts for ``u - j`` in ``[-8, 8)``:
    exact for triangle (``w <= 2``) and rectangle (``w <= 4``); sigmoid loses
    ``2 exp(-8 * 4 / w)`` of a level at most (< 1e-6 at ``w = 2``); atan keeps
    ``int_{-8}^{8} (a/2) / (1 + (pi a x / 2)^2) dx = (2/pi) atan(4 pi a)`` per level,
    ``a = 2 / w`` (0.9873 at ``w = 0.5``, 0.9747 at ``w = 1``, 0.9497 at ``w = 2``).
    """
    L = 2**bits_s - 1
    u = _integration_grid(L)
    g = _t1_grad(u, bits_s, 1.0, Surrogate(shape, width))
    area = float(torch.trapezoid(g, u))
    per_level = 1.0
    if shape == "atan" and L > 16:
        per_level = 2 / math.pi * math.atan(4 * math.pi * (2.0 / width))
    assert area == pytest.approx(per_level * L, rel=2e-6, abs=1e-9), (area, per_level * L)
    assert float(g.min()) >= 0.0  # a sum of non-negative bumps
    # peak 1/w at an isolated level (L = 1): the promised height, read at u = 1
    if bits_s == 1:
        peak = _t1_grad(torch.tensor([1.0], dtype=torch.float64), 1, 1.0, Surrogate(shape, width))
        assert float(peak[0]) == pytest.approx(1.0 / width, rel=1e-9)


def test_surrogate_string_spec():
    x = torch.linspace(-1, 3, 41, dtype=torch.float64)
    torch.testing.assert_close(_t1_grad(x, 1, 1.0, "rectangle:1.5"),
                               _t1_grad(x, 1, 1.0, Surrogate("rectangle", 1.5)))


# --------------------------------------------------------------------------------------------
# Gradients: against the reference autograd loop (float64)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize(("bits_s", "tau", "theta", "T"),
                         [(1, 2.0, 1.0, 1), (1, 2.0, 1.0, 4), (2, 1.0, 0.5, 3),
                          (3, 4.0, 1.0, 5), (2, 1.5, 0.7, 6), (4, 2.0, 0.3, 2)])
@pytest.mark.parametrize("surrogate", [None, ("triangle", 0.5), ("sigmoid", 1.0)])
def test_input_gradient_matches_reference_bptt(reset, bits_s, tau, theta, T, surrogate):
    g = torch.Generator().manual_seed(1000 * bits_s + T)
    x = (torch.randn(T, 3, 4, generator=g, dtype=torch.float64) * 1.5 + 0.8) * theta
    gout = torch.randn(T, 3, 4, generator=g, dtype=torch.float64)
    shape, width = surrogate or ("triangle", 1.0)
    sur = None if surrogate is None else Surrogate(shape, width)

    x1 = x.clone().requires_grad_(True)
    n = SpikeNeuron(bits_s, tau=tau, theta=theta, reset=reset, surrogate=sur)
    out = n(x1)
    out.backward(gout)

    x2 = x.clone().requires_grad_(True)
    ref = autograd_neuron(x2, bits_s=bits_s, tau=tau, theta=theta, reset=reset, shape=shape,
                          width=width)
    ref.backward(gout)
    torch.testing.assert_close(out.detach(), ref.detach(), rtol=0, atol=1e-12)
    if shape in ("triangle", "rectangle"):
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    else:  # qsnn may drop the far tails of smooth bumps
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-2, atol=1e-2)


def test_input_gradient_hand_example():
    """b_s = 1, tau = 2, theta = 1, hard reset, x = [0.5, 0.5], dL/ds = [0, 1]:

    forward: h1 = 0.5 (k 0, v 0.5), h2 = 0.25 + 0.5 = 0.75 (k 0).
    g(u) = clamp(min(u, 2 - u), 0, 1): g(h2) = 0.75.
    dL/dh2 = 1 * 0.75 = 0.75 -> dL/dx2 = 0.75
    dL/dv1 = beta * dL/dh2 = 0.375; m1 = [k1 == 0] = 1 -> dL/dh1 = 0 * g(0.5) + 0.375 = 0.375.
    """
    x = torch.tensor([[0.5], [0.5]], dtype=torch.float64, requires_grad=True)
    SpikeNeuron(1)(x).backward(torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([0.375, 0.75], dtype=torch.float64))


def test_input_gradient_hand_example_hard_reset_blocks():
    """Same as above but x1 = 1.25 fires (k1 = 1): hard reset blocks dL/dv1 (m1 = 0), soft passes.

    h2 = 0 + 0.5 (hard) -> g = 0.5; dL/dx1 = 0 * g(1.25) + 0 = 0.
    soft: v1 = 0.25, h2 = 0.125 + 0.5 = 0.625 -> g = 0.625; dL/dx1 = 0.5 * 0.625 = 0.3125.
    """
    gout = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    x = torch.tensor([[1.25], [0.5]], dtype=torch.float64, requires_grad=True)
    SpikeNeuron(1, reset="hard")(x).backward(gout)
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([0.0, 0.5], dtype=torch.float64))
    x = torch.tensor([[1.25], [0.5]], dtype=torch.float64, requires_grad=True)
    SpikeNeuron(1, reset="soft")(x).backward(gout)
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([0.3125, 0.625],
                                                             dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# Memory layout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_channels_last_layout_kept_in_input_gradient(T, reset):
    B, C, H, W = 2, 4, 5, 5
    torch.manual_seed(0)
    conv = nn.Conv2d(3, C, 3, padding=1).to(memory_format=torch.channels_last)
    inp = torch.randn(T * B, 3, H, W).contiguous(memory_format=torch.channels_last)
    y = conv(inp)  # [T*B, C, H, W], channels-last
    assert y.is_contiguous(memory_format=torch.channels_last)
    x = y.unflatten(0, (T, B))  # [T, B, C, H, W]
    grads = []
    x.register_hook(grads.append)
    n = SpikeNeuron(2, theta=0.3, reset=reset)
    out = n(x)
    for t in range(T):
        assert out[t].is_contiguous(memory_format=torch.channels_last)
    out.backward(torch.randn(out.shape))
    (gx,) = grads
    for t in range(T):
        assert gx[t].is_contiguous(memory_format=torch.channels_last), gx[t].stride()
    # and the values are those of the same computation in the default layout
    x_ref = y.detach().contiguous().unflatten(0, (T, B)).requires_grad_(True)
    torch.manual_seed(1)
    gout = torch.randn(out.shape)
    n(x_ref).backward(gout)
    x_cl = y.detach().unflatten(0, (T, B)).requires_grad_(True)
    n(x_cl).backward(gout)
    torch.testing.assert_close(x_cl.grad, x_ref.grad)


def test_a_failed_fused_variant_falls_back_alone_and_is_reported_once(caplog):
    """A compile failure of one kernel variant (here: float64) is logged once and that variant
    runs eagerly; another variant (float32) still runs fused, and nothing process-wide changes
    (the failure lives in the FusedKernels object that saw it). The "compiler" is a stand-in
    that fails for float64, so the test needs no C++ toolchain."""
    import logging

    from qsnn import _neuron_kernels as K

    fused_calls = []

    def fake_compiled(x, *args):
        if x.dtype == torch.float64:
            raise RuntimeError("no C++ compiler for this variant")
        fused_calls.append(x.dtype)
        return K.forward_kernel(x, *args)

    kernels = K.FusedKernels()
    kernels.compiled["forward"] = fake_compiled
    theta = torch.tensor(0.5, dtype=torch.float64)
    x64 = torch.linspace(-1, 3, 12, dtype=torch.float64).reshape(3, 4)
    args64 = (x64, 3, theta, 0.5, 0.0, 3, True, torch.float64)
    with caplog.at_level(logging.WARNING, logger=K.__name__):
        first = kernels("forward", args64, required=False)
        second = kernels("forward", args64, required=False)
    eager = K.forward_kernel(*args64)
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    x32 = x64.float()
    args32 = (x32, 3, theta.float(), 0.5, 0.0, 3, True, torch.float32)
    assert torch.equal(kernels("forward", args32, required=False), K.forward_kernel(*args32))
    assert fused_calls == [torch.float32]
    strict = K.FusedKernels()  # kernel="fused" asks for the fused kernel: no silent fallback
    strict.compiled["forward"] = fake_compiled
    with pytest.raises(RuntimeError, match="no C"):
        strict("forward", args64, required=True)


def test_spike_pattern_step_is_the_kernels_equation():
    """The pure step function and the eager kernel share one equation: stepping by hand over
    T reproduces the kernel's spikes for both resets (values checked by hand at T = 3)."""
    from qsnn import _neuron_kernels as K

    x = torch.tensor([[0.6, 1.2, 2.9], [0.6, 0.1, 0.0], [0.6, 0.0, 5.0]])  # [T=3, N=3]
    theta, beta = torch.tensor(0.5), 0.5
    for reset, expected in (
        # hard: h1 = .6 .. k1=1,2,3(clamp 3); v=0 where fired; h2=.6,.1,0 -> k2=1,0,0;
        # h3 = .6, .05, 5 -> k3 = 1, 0, 3
        ("hard", [[1, 2, 3], [1, 0, 0], [1, 0, 3]]),
        # soft: v1 = .1, .2, 1.4; h2 = .65, .2, .7 -> k2 = 1, 0, 1; v2 = .15, .2, .2;
        # h3 = .675, .1, 5.1 -> k3 = 1, 0, 3
        ("soft", [[1, 2, 3], [1, 0, 1], [1, 0, 3]]),
    ):
        v, ks = None, []
        for t in range(3):
            k, v = spike_pattern_step(x[t], v, bits_s=2, theta=0.5, beta=beta, reset=reset)
            ks.append(k.tolist())
        assert ks == expected, reset
        spikes = K.forward_kernel(x, 3, theta, beta, 0.0, 3, reset == "hard", torch.float32)
        assert (spikes / 0.5).tolist() == expected, reset

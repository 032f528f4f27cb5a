"""Acceptance tests for weight quantization (SPEC §3, paper Eq. 5).

The level set is checked against references written here: ``Q = 2**(b_w-1) - 1``,
``Delta = max|w| / Q`` per output channel (or per tensor), ``q = clamp(round(w / Delta), -Q, Q)``;
``b_w = 1``: ``q = sign(w)`` in ``{-1, +1}``, ``Delta = mean|w|``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from qsnn import QuantConv2d, QuantLinear, fake_quantize_weight, weight_codes, weight_scale

# --------------------------------------------------------------------------------------------
# Independent reference (numpy, float32 like the weights)
# --------------------------------------------------------------------------------------------


def ref_codes(w: np.ndarray, bits_w: int, per_channel: bool = True):
    """Codes (int64) and scale (float32, shaped to broadcast) per SPEC §3."""
    w = w.astype(np.float32)
    axes = tuple(range(1, w.ndim)) if per_channel else tuple(range(w.ndim))
    if bits_w == 1:
        delta = np.abs(w).mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        q = np.where(w >= 0, 1, -1)
        return q.astype(np.int64), delta
    Q = 2 ** (bits_w - 1) - 1
    delta = (np.abs(w).max(axis=axes, keepdims=True) / np.float32(Q)).astype(np.float32)
    q = np.clip(np.rint(w / delta), -Q, Q)
    return q.astype(np.int64), delta


def _groups(q: torch.Tensor, per_channel: bool):
    return list(q.reshape(q.shape[0], -1)) if per_channel else [q.reshape(-1)]


# --------------------------------------------------------------------------------------------
# Hand-worked example
# --------------------------------------------------------------------------------------------

W_HAND = torch.tensor([[1.4, -3.0, 0.4, 0.1, -2.2, 2.6]])


@pytest.mark.parametrize(
    ("bits_w", "delta", "codes"),
    [
        # Q = 3, Delta = 3/3 = 1: w/Delta = [1.4, -3, 0.4, 0.1, -2.2, 2.6] -> [1, -3, 0, 0, -2, 3]
        (3, 1.0, [1, -3, 0, 0, -2, 3]),
        # Q = 1 (ternary), Delta = 3: w/3 = [.47, -1, .13, .03, -.73, .87] -> [0, -1, 0, 0, -1, 1]
        (2, 3.0, [0, -1, 0, 0, -1, 1]),
        # Q = 7, Delta = 3/7: w*7/3 = [3.27, -7, .93, .23, -5.13, 6.07] -> [3, -7, 1, 0, -5, 6]
        (4, 3.0 / 7.0, [3, -7, 1, 0, -5, 6]),
        # Q = 127, Delta = 3/127: w*127/3 = [59.27, -127, 16.93, 4.23, -93.13, 110.07]
        (8, 3.0 / 127.0, [59, -127, 17, 4, -93, 110]),
        # b_w = 1: q = sign(w), Delta = mean|w| = (1.4+3+.4+.1+2.2+2.6)/6 = 9.7/6
        (1, 9.7 / 6.0, [1, -1, 1, 1, -1, 1]),
    ],
)
def test_hand_example_codes(bits_w, delta, codes):
    q, scale = weight_codes(W_HAND, bits_w)
    assert q.dtype == torch.int32
    assert q.view(-1).tolist() == codes
    assert float(scale.reshape(-1)[0]) == pytest.approx(delta, rel=1e-6)
    wq = fake_quantize_weight(W_HAND, bits_w)
    torch.testing.assert_close(wq, torch.tensor([codes], dtype=torch.float32) * delta)


def test_hand_example_per_channel_vs_per_tensor():
    """w = [[1, -0.5, 0.25], [4, 2, -1]], b_w = 3 (Q = 3).

    per channel: Delta = [1/3, 4/3]; codes [[3, -2 (-1.5 -> -2, half to even), ...]] is a tie, so
    use rows without ties: w = [[0.9, -0.3, 0.2], [4, 2.4, -1]]:
      row 0: Delta = 0.3, w/Delta = [3, -1, 0.67] -> [3, -1, 1]
      row 1: Delta = 4/3, w/Delta = [3, 1.8, -0.75] -> [3, 2, -1]
    per tensor: Delta = 4/3 for both rows:
      row 0: w/Delta = [0.675, -0.225, 0.15] -> [1, 0, 0]
    """
    w = torch.tensor([[0.9, -0.3, 0.2], [4.0, 2.4, -1.0]])
    q, d = weight_codes(w, 3, per_channel=True)
    assert q.tolist() == [[3, -1, 1], [3, 2, -1]]
    torch.testing.assert_close(d.reshape(-1), torch.tensor([0.3, 4 / 3]))
    q, d = weight_codes(w, 3, per_channel=False)
    assert q.tolist() == [[1, 0, 0], [3, 2, -1]]
    assert d.numel() == 1
    assert float(d) == pytest.approx(4 / 3)


# --------------------------------------------------------------------------------------------
# Level set against the numpy reference, several shapes
# --------------------------------------------------------------------------------------------

SHAPES = [(5, 7), (4, 3, 3, 3), (6, 2, 1, 1), (1, 9)]


@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_channel", [True, False])
def test_codes_match_reference(bits_w, shape, per_channel):
    g = torch.Generator().manual_seed(bits_w * 31 + len(shape))
    w = torch.randn(shape, generator=g) * 0.2
    q, delta = weight_codes(w, bits_w, per_channel=per_channel)
    q_ref, d_ref = ref_codes(w.numpy(), bits_w, per_channel)
    assert np.array_equal(q.numpy().astype(np.int64), q_ref)
    torch.testing.assert_close(delta.expand_as(w), torch.from_numpy(d_ref).expand_as(w),
                               rtol=1e-6, atol=0)
    # weight_scale agrees with the scale returned with the codes
    torch.testing.assert_close(weight_scale(w, bits_w, per_channel).expand_as(w),
                               delta.expand_as(w))
    # fake-quantized weight == Delta * q
    wq = fake_quantize_weight(w, bits_w, per_channel)
    torch.testing.assert_close(wq, torch.from_numpy(d_ref * q_ref.astype(np.float32)))


@pytest.mark.parametrize("bits_w", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_level_set_multibit(bits_w, per_channel):
    """b_w >= 2: codes in [-Q, Q], at most 2**b_w - 1 distinct per group, max|w| -> +-Q."""
    Q = 2 ** (bits_w - 1) - 1
    g = torch.Generator().manual_seed(bits_w)
    w = torch.randn(6, 3, 4, 4, generator=g) * torch.logspace(-2, 1, 6).view(6, 1, 1, 1)
    q, _ = weight_codes(w, bits_w, per_channel=per_channel)
    assert int(q.min()) >= -Q and int(q.max()) <= Q
    wg = _groups(w, per_channel)
    for qg, wrow in zip(_groups(q, per_channel), wg, strict=True):
        assert len(torch.unique(qg)) <= 2**bits_w - 1
        i = int(wrow.abs().argmax())
        assert int(qg[i]) == (Q if wrow[i] > 0 else -Q)
    if bits_w >= 4 and per_channel:
        # with 48 Gaussian weights per channel the extremes are both reached somewhere
        assert int(q.max()) == Q or int(q.min()) == -Q


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_level_set_binary(per_channel, shape):
    """b_w = 1: exactly two values per group, +-Delta with Delta = mean|w| of the group."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(shape, generator=g)
    # make sure every group has both signs
    w.view(w.shape[0], -1)[:, 0] = w.view(w.shape[0], -1)[:, 0].abs() + 0.1
    w.view(w.shape[0], -1)[:, -1] = -(w.view(w.shape[0], -1)[:, -1].abs() + 0.1)
    q, _ = weight_codes(w, 1, per_channel=per_channel)
    assert set(torch.unique(q).tolist()) == {-1, 1}
    wq = fake_quantize_weight(w, 1, per_channel)
    for wqg, wg in zip(_groups(wq, per_channel), _groups(w, per_channel), strict=True):
        vals = torch.unique(wqg)
        assert len(vals) == 2
        m = float(wg.abs().mean())
        torch.testing.assert_close(vals, torch.tensor([-m, m]), rtol=1e-6, atol=0)
        # signs follow the weights
        assert torch.equal(torch.sign(wqg)[wg != 0], torch.sign(wg)[wg != 0])


@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_quantized_weight_is_exactly_delta_times_q(bits_w, per_channel):
    """``w_q = Delta * q`` bit for bit (not ``w + (Delta*q - w)``, which is off by an ulp)."""
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    q, delta = weight_codes(w, bits_w, per_channel)
    wq = fake_quantize_weight(w, bits_w, per_channel)
    assert torch.equal(wq, delta * q.to(torch.float32))
    for group in _groups(wq, per_channel):
        n = len(torch.unique(group))
        assert n == 2 if bits_w == 1 else n <= 2**bits_w - 1
    layer = QuantLinear(64, 8, bits_w=bits_w, per_channel=per_channel)
    with torch.no_grad():
        layer.weight.copy_(w)
    q, delta = layer.weight_codes()
    assert torch.equal(layer.quantized_weight(), delta * q.to(torch.float32))


def test_binary_zero_weight_gets_a_sign():
    """b_w = 1 codes are never 0: a zero weight maps to -1 or +1."""
    q, _ = weight_codes(torch.tensor([[0.0, 1.0, -1.0]]), 1)
    assert q.view(-1)[0].item() in (-1, 1)
    assert q.view(-1).tolist()[1:] == [1, -1]


def test_all_zero_channel_is_finite():
    w = torch.zeros(2, 4)
    w[1] = torch.tensor([1.0, -2.0, 0.5, 0.0])
    for bits_w in (1, 2, 4, 8):
        _, delta = weight_codes(w, bits_w)
        assert torch.isfinite(delta).all()
        wq = fake_quantize_weight(w, bits_w)
        assert torch.isfinite(wq).all()
        torch.testing.assert_close(wq[0], torch.zeros(4))


# --------------------------------------------------------------------------------------------
# Straight-through gradient
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits_w", [1, 2, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_ste_gradient_is_identity_for_fixed_scale(bits_w, per_channel):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 5, generator=g, requires_grad=True)
    up = torch.randn(4, 5, generator=g)
    fake_quantize_weight(w, bits_w, per_channel).backward(up)
    torch.testing.assert_close(w.grad, up)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def _conv(bits_w, **kw):
    torch.manual_seed(0)
    return QuantConv2d(3, 4, 3, padding=1, bits_w=bits_w, **kw)


def _linear(bits_w, **kw):
    torch.manual_seed(0)
    return QuantLinear(6, 5, bits_w=bits_w, **kw)


@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_forward_uses_delta_times_q(bits_w, per_channel):
    layer = _linear(bits_w, per_channel=per_channel)
    q_ref, d_ref = ref_codes(layer.weight.detach().numpy(), bits_w, per_channel)
    wq_ref = torch.from_numpy(d_ref * q_ref.astype(np.float32))
    torch.testing.assert_close(layer.quantized_weight(), wq_ref)
    q, delta = layer.weight_codes()
    assert np.array_equal(q.numpy().astype(np.int64), q_ref)
    torch.testing.assert_close(layer.quantized_weight(), delta * q.float())
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), F.linear(x, wq_ref, layer.bias))


@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_conv_forward_uses_delta_times_q(bits_w, per_channel):
    layer = _conv(bits_w, per_channel=per_channel)
    q_ref, d_ref = ref_codes(layer.weight.detach().numpy(), bits_w, per_channel)
    wq_ref = torch.from_numpy(d_ref * q_ref.astype(np.float32))
    torch.testing.assert_close(layer.quantized_weight(), wq_ref)
    q, _ = layer.weight_codes()
    assert q.shape == layer.weight.shape and q.dtype == torch.int32
    assert np.array_equal(q.numpy().astype(np.int64), q_ref)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, wq_ref, layer.bias, padding=1))


@pytest.mark.parametrize("bits_w", [16, 32])
def test_float_bits_leave_weight_float(bits_w):
    for layer, x, ref in (
        (_linear(bits_w), torch.randn(3, 6), None),
        (_conv(bits_w), torch.randn(2, 3, 5, 5), None),
    ):
        torch.testing.assert_close(layer.quantized_weight(), layer.weight)
        if isinstance(layer, nn.Conv2d):
            ref = F.conv2d(x, layer.weight, layer.bias, padding=1)
        else:
            ref = F.linear(x, layer.weight, layer.bias)
        torch.testing.assert_close(layer(x), ref)
    w = torch.randn(3, 4)
    assert torch.equal(fake_quantize_weight(w, bits_w), w)


def test_bits_w_is_settable_and_validated():
    layer = _linear(8)
    x = torch.randn(2, 6)
    layer.bits_w = 2
    assert layer.bits_w == 2
    q, _ = layer.weight_codes()
    assert set(torch.unique(q).tolist()) <= {-1, 0, 1}
    q_ref, d_ref = ref_codes(layer.weight.detach().numpy(), 2)
    torch.testing.assert_close(layer(x), F.linear(x, torch.from_numpy(d_ref * q_ref.astype(
        np.float32)), layer.bias))
    layer.bits_w = 32
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    for bad in (0, 9, 12, 33, 2.0, True):
        with pytest.raises(ValueError, match="bits_w"):
            layer.bits_w = bad
    with pytest.raises(ValueError, match="bits_w"):
        QuantLinear(3, 2, bits_w=9)
    with pytest.raises(ValueError, match="bits_w"):
        QuantConv2d(3, 2, 3, bits_w=0)


def test_layers_are_drop_in_modules():
    conv = QuantConv2d(4, 6, (3, 2), stride=2, padding=(1, 0), groups=2, bias=False, bits_w=4)
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert conv(torch.randn(1, 4, 7, 6)).shape == nn.Conv2d(
        4, 6, (3, 2), stride=2, padding=(1, 0), groups=2)(torch.randn(1, 4, 7, 6)).shape
    lin = QuantLinear(5, 3, bias=False, bits_w=2)
    assert isinstance(lin, nn.Linear) and lin.bias is None
    assert lin(torch.randn(2, 4, 5)).shape == (2, 4, 3)
    # weight gradient flows (straight-through)
    lin(torch.randn(2, 5)).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_state_dict_round_trip():
    a = _conv(4)
    b = QuantConv2d(3, 4, 3, padding=1, bits_w=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(a(x), b(x))


# --------------------------------------------------------------------------------------------
# Learned scale (LSQ-style): same level set, scale gets a gradient
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("factory", [_linear, _conv])
@pytest.mark.parametrize("per_channel", [True, False])
def test_learned_scale_same_level_set_and_gradient(bits_w, factory, per_channel):
    layer = factory(bits_w, per_channel=per_channel, learn_scale=True)
    params = [p for n, p in layer.named_parameters() if n != "weight" and n != "bias"]
    assert len(params) == 1, "learned scale should be one extra parameter"
    (scale,) = params
    Q = 1 if bits_w == 1 else 2 ** (bits_w - 1) - 1

    # initialised by the max-abs (mean-abs for b_w = 1) rule: same weight as fixed scale
    fixed = factory(bits_w, per_channel=per_channel)
    torch.testing.assert_close(layer.quantized_weight(), fixed.quantized_weight())

    # move the scale; the level set stays {Delta * q : q integer in [-Q, Q]} (or +-Delta)
    with torch.no_grad():
        scale.mul_(0.37)
    wq = layer.quantized_weight().detach()
    d = scale.detach().expand_as(wq) if scale.dim() else scale.detach().expand(wq.shape)
    ratio = wq / d
    torch.testing.assert_close(ratio, torch.round(ratio), rtol=0, atol=1e-4)
    r = torch.round(ratio)
    assert int(r.min()) >= -Q and int(r.max()) <= Q
    if bits_w == 1:
        assert set(r.unique().tolist()) <= {-1.0, 1.0}
    # codes agree with the weight the layer uses
    q, delta = layer.weight_codes()
    torch.testing.assert_close(wq, delta * q.float(), rtol=1e-6, atol=1e-7)
    assert int(q.min()) >= -Q and int(q.max()) <= Q

    # gradient reaches the scale (and the weight)
    layer.zero_grad()
    x = torch.randn((3, 6) if isinstance(layer, nn.Linear) else (2, 3, 5, 5))
    (layer(x) ** 2).sum().backward()
    assert scale.grad is not None
    assert torch.isfinite(scale.grad).all() and scale.grad.abs().sum() > 0
    assert layer.weight.grad is not None


@pytest.mark.parametrize("bits_w", [1, 2, 4])
def test_learned_scale_codes_agree_with_weight_for_any_trained_scale(bits_w):
    """Whatever value training drives the learned scale to (here: some channels pushed through
    zero to negative values, which Adam does reach at b_w = 1), the integer codes handed to
    metrics, bit-serial runs and deployment must describe the weight the layer computes with:
    ``quantized_weight() == Delta * q``."""
    torch.manual_seed(0)
    layer = QuantLinear(6, 4, bits_w=bits_w, learn_scale=True)
    (scale,) = [p for n, p in layer.named_parameters() if n not in ("weight", "bias")]
    with torch.no_grad():
        scale.view(-1)[0] *= -1.0
        scale.view(-1)[2] *= -0.5
    q, delta = layer.weight_codes()
    torch.testing.assert_close(layer.quantized_weight().detach(), delta * q.float(), rtol=1e-6,
                               atol=1e-7)

"""Acceptance tests for the bit-serial identity (SPEC §4, paper Eq. 3 and Appendix B).

Every check is **exact integer equality** against a dense int64 reference written here with
numpy (``conv2d_int64`` below: a per-kernel-offset im2col + einsum in int64), never against
qsnn's own dense path.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from qsnn import (
    FoldTime,
    QuantConv2d,
    QuantLinear,
    SpikeNeuron,
    bit_slices,
    bitserial_apply,
    bitserial_layer,
    bitserial_time_layer,
    decompose,
    integer_layer,
    recompose,
)

# --------------------------------------------------------------------------------------------
# Independent int64 references
# --------------------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_int64(x, w, stride=1, padding=0, dilation=1, groups=1):
    """Dense integer conv2d in numpy int64: x [N, C, H, W], w [O, C/groups, kh, kw]."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert c == cg * groups
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    for gi in range(groups):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * og:(gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                           j * dw:j * dw + sw * (wo - 1) + 1:sw]  # [N, cg, ho, wo]
                out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def linear_int64(x, w):
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    return x @ w.T


def random_int_weight(shape, bits_w, gen):
    """Random integer codes with every output channel reaching +-Q (so Delta = 1 and q = w)."""
    if bits_w == 1:
        w = torch.randint(0, 2, shape, generator=gen) * 2 - 1
    else:
        Q = 2 ** (bits_w - 1) - 1
        w = torch.randint(-Q, Q + 1, shape, generator=gen)
        flat = w.view(shape[0], -1)
        sign = torch.randint(0, 2, (shape[0],), generator=gen) * 2 - 1
        flat[:, 0] = sign * Q
    return w


def set_int_weight(layer, w_int):
    with torch.no_grad():
        layer.weight.copy_(w_int.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.normal_()  # the integer identity ignores bias
    q, _ = layer.weight_codes()
    assert torch.equal(q.long(), w_int.long()), "precondition: codes equal the integer weights"


# --------------------------------------------------------------------------------------------
# decompose / recompose / bit_slices
# --------------------------------------------------------------------------------------------


def test_decompose_hand_example():
    """levels [5, 2, 0, 7], 3 bits, LSB first:
    5 = 101b, 2 = 010b, 0 = 000b, 7 = 111b
    bit 0: [1, 0, 0, 1]; bit 1: [0, 1, 0, 1]; bit 2: [1, 0, 0, 1].
    """
    planes = decompose(torch.tensor([5, 2, 0, 7]), 3)
    assert planes.dtype == torch.int64
    assert planes.tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]]
    assert recompose(planes).tolist() == [5, 2, 0, 7]
    # extra high bits are zero planes
    assert decompose(torch.tensor([1]), 4).view(-1).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 12, 16])
def test_decompose_recompose_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    shape = (2, 3, 4)
    levels = torch.randint(0, 2**bits, shape, generator=g)
    planes = decompose(levels, bits)
    assert planes.shape == (bits, *shape)
    assert planes.dtype == torch.int64
    assert set(planes.unique().tolist()) <= {0, 1}
    # plane k is bit k, checked element by element in plain Python
    for idx in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        value = int(levels[idx])
        assert [int(planes[(k, *idx)]) for k in range(bits)] == [(value >> k) & 1
                                                                  for k in range(bits)]
    assert torch.equal(recompose(planes), levels.long())
    # float levels holding whole numbers are accepted
    assert torch.equal(decompose(levels.double(), bits), planes)


def test_bit_slices_hand_example():
    """levels [T=2, B=1, 2] with 2 bits: step 0 = [3, 1], step 1 = [2, 0]:
    slice 0 = bit 0 of step 0 = [1, 1]; slice 1 = bit 1 of step 0 = [1, 0];
    slice 2 = bit 0 of step 1 = [0, 0]; slice 3 = bit 1 of step 1 = [1, 0].
    """
    levels = torch.tensor([[[3, 1]], [[2, 0]]])
    s = bit_slices(levels, 2)
    assert s.shape == (4, 1, 2)
    assert s[:, 0].tolist() == [[1, 1], [1, 0], [0, 0], [1, 0]]


@pytest.mark.parametrize(("T", "bits"), [(1, 1), (1, 4), (3, 1), (2, 3), (4, 2)])
def test_bit_slices_order(T, bits):
    g = torch.Generator().manual_seed(T * 10 + bits)
    levels = torch.randint(0, 2**bits, (T, 2, 3), generator=g)
    s = bit_slices(levels, bits)
    assert s.shape == (T * bits, 2, 3)
    for t in range(T):
        for k in range(bits):
            assert torch.equal(s[t * bits + k], (levels[t] >> k) & 1)


@pytest.mark.parametrize(
    ("levels", "bits"),
    [
        (torch.tensor([8]), 3),
        (torch.tensor([-1]), 3),
        (torch.tensor([0, 2]), 1),
        (torch.tensor([256]), 8),
        (torch.tensor([1.5]), 2),
        (torch.tensor([0.5]), 4),
    ],
)
def test_out_of_range_levels(levels, bits):
    with pytest.raises(ValueError):
        decompose(levels, bits)
    with pytest.raises(ValueError):
        bit_slices(levels.view(1, 1, -1), bits)
    lin = QuantLinear(levels.numel(), 2, bits_w=4)
    with pytest.raises(ValueError):
        bitserial_layer(lin, levels.view(1, -1), bits)
    with pytest.raises(ValueError):
        bitserial_time_layer(lin, levels.view(1, 1, -1), bits)
    with pytest.raises(ValueError):
        bitserial_apply(lambda x: x, levels.view(1, -1), bits)


@pytest.mark.parametrize("bits", [0, -1, 2.0])
def test_bad_bits(bits):
    with pytest.raises(ValueError):
        decompose(torch.tensor([0]), bits)


# --------------------------------------------------------------------------------------------
# QANN view: one b-bit activation = b binary slices (exact)
# --------------------------------------------------------------------------------------------

CONV_CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, H, W)
    (3, 4, 3, 1, 1, 1, 1, 6, 6),
    (4, 6, 3, 2, 0, 1, 2, 7, 6),
    (4, 4, 3, 1, 1, 1, 4, 5, 5),  # depthwise
    (2, 3, (3, 2), (2, 1), (1, 0), 1, 1, 7, 5),
    (2, 2, 3, 1, 2, 2, 1, 6, 6),  # dilation
    (5, 3, 1, 1, 0, 1, 1, 4, 3),  # pointwise
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bits_w", [1, 2, 4, 8])
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_bitserial_conv_exact(case, bits_w, bits):
    cin, cout, k, stride, pad, dil, groups, h, w = case
    g = torch.Generator().manual_seed(zlib.crc32(repr((case, bits_w, bits)).encode()))
    layer = QuantConv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups,
                        bits_w=bits_w)
    w_int = random_int_weight(layer.weight.shape, bits_w, g)
    set_int_weight(layer, w_int)
    x = torch.randint(0, 2**bits, (2, cin, h, w), generator=g)
    ref = conv2d_int64(x.numpy(), w_int.numpy(), stride, pad, dil, groups)
    dense = integer_layer(layer, x)
    serial = bitserial_layer(layer, x, bits)
    assert dense.dtype == torch.int64 and serial.dtype == torch.int64
    assert np.array_equal(dense.numpy(), ref)
    assert np.array_equal(serial.numpy(), ref)


@pytest.mark.parametrize(("fin", "fout", "batch"), [(7, 3, 2), (16, 5, 1), (1, 4, 3)])
@pytest.mark.parametrize("bits_w", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_bitserial_linear_exact(fin, fout, batch, bits_w, bits):
    g = torch.Generator().manual_seed(fin * 1000 + bits_w * 10 + bits)
    layer = QuantLinear(fin, fout, bits_w=bits_w)
    w_int = random_int_weight(layer.weight.shape, bits_w, g)
    set_int_weight(layer, w_int)
    x = torch.randint(0, 2**bits, (batch, fin), generator=g)
    ref = linear_int64(x.numpy(), w_int.numpy())
    assert np.array_equal(integer_layer(layer, x).numpy(), ref)
    assert np.array_equal(bitserial_layer(layer, x, bits).numpy(), ref)


@pytest.mark.parametrize("bits_w", [2, 3, 5])
@pytest.mark.parametrize("bits", [2, 4])
def test_bitserial_float_trained_weights_use_codes(bits_w, bits):
    """Real-valued weights: the integer layer is the layer's codes; codes from a numpy reference
    (q = clamp(rint(w / (max|w| / Q)), -Q, Q) per output channel, float32)."""
    torch.manual_seed(bits_w * 7 + bits)
    layer = QuantConv2d(3, 4, 3, padding=1, bits_w=bits_w)
    wn = layer.weight.detach().numpy().astype(np.float32)
    Q = 2 ** (bits_w - 1) - 1
    delta = (np.abs(wn).max(axis=(1, 2, 3), keepdims=True) / np.float32(Q)).astype(np.float32)
    q_ref = np.clip(np.rint(wn / delta), -Q, Q).astype(np.int64)
    x = torch.randint(0, 2**bits, (2, 3, 5, 5))
    ref = conv2d_int64(x.numpy(), q_ref, 1, 1)
    assert np.array_equal(bitserial_layer(layer, x, bits).numpy(), ref)
    assert np.array_equal(integer_layer(layer, x).numpy(), ref)


def test_bitserial_hand_example_linear():
    """W = [[1, -1, 0], [1, 1, 1]] (b_w = 2, ternary), a = [3, 1, 2] (2 bits).

    planes: a_0 = [1, 1, 0], a_1 = [1, 0, 1]
    W a_0 = [0, 2], W a_1 = [1, 2]; sum 2**k W a_k = [0 + 2, 2 + 4] = [2, 6] = W a.
    """
    layer = QuantLinear(3, 2, bias=False, bits_w=2)
    set_int_weight(layer, torch.tensor([[1, -1, 0], [1, 1, 1]]))
    a = torch.tensor([[3, 1, 2]])
    assert bitserial_layer(layer, a, 2).tolist() == [[2, 6]]
    assert integer_layer(layer, a).tolist() == [[2, 6]]


def test_bitserial_large_values_exact():
    """8-bit weights and 8-bit inputs with a big fan-in: sums far above 2**24 stay exact."""
    g = torch.Generator().manual_seed(123)
    layer = QuantLinear(4096, 3, bits_w=8)
    w_int = random_int_weight(layer.weight.shape, 8, g)
    w_int[0] = 127  # every weight at the extreme: 4096 * 127 * 255 = 132,648,960
    set_int_weight(layer, w_int)
    x = torch.full((1, 4096), 255)
    x[0, ::7] = torch.randint(0, 256, (x[0, ::7].numel(),), generator=g)
    ref = linear_int64(x.numpy(), w_int.numpy())
    assert np.array_equal(bitserial_layer(layer, x, 8).numpy(), ref)
    assert np.array_equal(integer_layer(layer, x).numpy(), ref)


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_bitserial_apply_generic_op(bits):
    g = torch.Generator().manual_seed(bits)
    m = torch.randint(-9, 10, (5, 4), generator=g)
    levels = torch.randint(0, 2**bits, (3, 5), generator=g)

    def op(x):  # any linear map on [N, 5]
        return x @ m.to(x.dtype)

    got = bitserial_apply(op, levels, bits)
    assert got.dtype == torch.int64
    assert np.array_equal(got.numpy(), levels.numpy().astype(np.int64) @ m.numpy())


def test_plain_float_layers_rejected():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, 1.25, 0.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError):
        bitserial_layer(lin, torch.tensor([[1, 2, 3]]), 2)
    with pytest.raises(ValueError):
        bitserial_layer(QuantLinear(3, 2, bits_w=32), torch.tensor([[1, 2, 3]]), 2)
    with pytest.raises(ValueError):
        bitserial_layer(nn.ReLU(), torch.tensor([[1, 2, 3]]), 2)


# --------------------------------------------------------------------------------------------
# SNN view: T steps of b_s-bit spikes = T * b_s binary slices (exact)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "bits_s"), [(1, 1), (4, 1), (2, 2), (3, 3), (1, 8), (2, 4)])
@pytest.mark.parametrize("bits_w", [1, 2, 4, 8])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_bitserial_time_layer_exact(T, bits_s, bits_w, kind):
    g = torch.Generator().manual_seed(T * 100 + bits_s * 10 + bits_w)
    if kind == "conv":
        layer = QuantConv2d(4, 6, 3, stride=2, padding=1, groups=2, bits_w=bits_w)
        levels = torch.randint(0, 2**bits_s, (T, 2, 4, 5, 5), generator=g)
    else:
        layer = QuantLinear(6, 4, bits_w=bits_w)
        levels = torch.randint(0, 2**bits_s, (T, 3, 6), generator=g)
    w_int = random_int_weight(layer.weight.shape, bits_w, g)
    set_int_weight(layer, w_int)
    out = bitserial_time_layer(layer, levels, bits_s)
    assert out.dtype == torch.int64
    assert out.shape[:2] == (T, levels.shape[1])
    for t in range(T):
        if kind == "conv":
            ref = conv2d_int64(levels[t].numpy(), w_int.numpy(), 2, 1, 1, 2)
        else:
            ref = linear_int64(levels[t].numpy(), w_int.numpy())
        assert np.array_equal(out[t].numpy(), ref)
    # the same as T * b_s binary slices recombined by hand with weights 2**k
    slices = bit_slices(levels, bits_s)
    assert slices.shape[0] == T * bits_s
    for t in range(T):
        acc = 0
        for k in range(bits_s):
            sl = slices[t * bits_s + k].numpy()
            part = (conv2d_int64(sl, w_int.numpy(), 2, 1, 1, 2) if kind == "conv"
                    else linear_int64(sl, w_int.numpy()))
            acc = acc + (1 << k) * part
        assert np.array_equal(out[t].numpy(), acc)


@pytest.mark.parametrize(("bits_s", "T"), [(1, 4), (2, 2), (4, 1)])
def test_neuron_levels_through_bitserial_layer(bits_s, T):
    """End to end: a neuron's spikes s = k * theta into a quantized conv (no bias) give
    ``Delta_w[o] * theta * (q * k)`` where ``q * k`` is run as T * b_s binary slices."""
    torch.manual_seed(bits_s * 10 + T)
    theta = 0.5
    neuron = SpikeNeuron(bits_s, tau=2.0, theta=theta)
    conv = QuantConv2d(3, 4, 3, padding=1, bias=False, bits_w=3)
    x = torch.randn(T, 2, 3, 6, 6) * 2
    spikes = neuron(x)
    k = neuron.forward_levels(x)
    y = FoldTime(conv)(spikes)  # float path, [T, B, 4, 6, 6]
    q, delta = conv.weight_codes()
    serial = bitserial_time_layer(conv, k, bits_s)
    for t in range(T):
        ref = conv2d_int64(k[t].numpy(), q.numpy(), 1, 1)
        assert np.array_equal(serial[t].numpy(), ref)
    scale = delta.reshape(1, 1, -1, 1, 1) * theta
    torch.testing.assert_close(y, scale * serial.float(), rtol=1e-5, atol=1e-5)

"""End-to-end learning: a small quantized spiking model trains at 2/2/2 and at 1/1/4.

The toy problem is a noisy XOR of two Gaussian coordinates (plus distractor features): it is
separable, but not linearly, so the loss can only fall if gradients pass through the spiking
hidden layer (surrogate) and the quantized weights (straight-through).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qsnn
from qsnn import Bits, FoldTime, QuantLinear, SpikeNeuron, StaticEncoder, TimeMean


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (and flaky run time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def xor_data():
    g = torch.Generator().manual_seed(0)
    n = 256
    corners = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    idx = torch.arange(n) % 4
    y = (idx >= 2).long()  # class 1 where the two signs differ
    x2 = corners[idx] * 1.5 + 0.35 * torch.randn(n, 2, generator=g)
    x = torch.cat([x2, 0.3 * torch.randn(n, 4, generator=g)], dim=1)  # [256, 6]
    return x, y


def make_model(bits: Bits, *, learn_scale=False, learn_theta=False, hidden=32):
    model = nn.Sequential(
        StaticEncoder(bits.t),  # [B, 6] -> [T, B, 6]
        FoldTime(QuantLinear(6, hidden, learn_scale=learn_scale)),
        SpikeNeuron(theta=0.5, learn_theta=learn_theta),
        FoldTime(QuantLinear(hidden, 2, learn_scale=learn_scale)),
        TimeMean(),  # [T, B, 2] -> [B, 2]
    )
    qsnn.apply_bits(model, bits)
    return model


@pytest.mark.parametrize(
    ("bits", "options"),
    [
        ("2/2/2", {}),
        ("1/1/4", {}),
        ("2/2/2", {"learn_scale": True, "learn_theta": True}),
        ("1/1/4", {"learn_scale": True, "learn_theta": True}),
    ],
)
def test_loss_falls(bits, options):
    torch.manual_seed(0)
    b = Bits.parse(bits)
    model = make_model(b, **options)
    # the allocation really is in place
    assert model[1].module.bits_w == b.w and model[3].module.bits_w == b.w
    assert model[2].bits_s == b.s

    x, y = xor_data()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(200):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    start = losses[0]
    assert abs(start - math.log(2)) < 0.2  # starts near chance
    end = sum(losses[-10:]) / 10
    assert end < 0.25 * start, f"{bits}: loss {start:.3f} -> {end:.3f}"
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95, f"{bits}: accuracy {acc:.3f}"

    # after training the weights the model computes with are still in the b_w level set
    for layer in (model[1].module, model[3].module):
        q, delta = layer.weight_codes()
        Q = 1 if b.w == 1 else 2 ** (b.w - 1) - 1
        assert int(q.abs().max()) <= Q
        if b.w == 1:
            assert set(q.unique().tolist()) <= {-1, 1}
        torch.testing.assert_close(layer.quantized_weight(), delta * q.float(), rtol=1e-6,
                                   atol=1e-6)
    # and the hidden layer emits b_s-bit levels
    with torch.no_grad():
        h = model[1](model[0](x))
        k = model[2].forward_levels(h)
    assert int(k.min()) >= 0 and int(k.max()) <= 2**b.s - 1

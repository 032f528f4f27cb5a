"""A one-minute end-to-end tour of the foundation API (``qsnn demo``).

Builds a tiny quantized spiking MLP at an allocation ``b_w/b_s/T``, trains it on a fixed toy
problem (two interleaved spirals, 2-D points), and checks the bit-serial identity on its hidden
layer: the spike levels of all ``T`` steps run as ``T * b_s`` binary slices through the
``b_w``-bit integer weights give exactly the dense integer product.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .allocation import Bits
from .bitserial import bitserial_time_layer, integer_layer
from .bitwidth import apply_bits
from .neurons import SpikeNeuron
from .quant import QuantLinear
from .temporal import FoldTime, StaticEncoder, TimeMean

__all__ = ["make_spiral_data", "make_toy_snn", "run_demo"]


def make_spiral_data(n: int = 1024, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: ``x: [n, 2]`` float32, ``y: [n]`` in {0, 1}."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    r = torch.rand(n, generator=gen) * 0.9 + 0.1
    angle = 3 * math.pi * r + math.pi * y
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    return x + 0.03 * torch.randn(n, 2, generator=gen), y


def make_toy_snn(bits: Bits, hidden: int = 64) -> nn.Sequential:
    """encoder (stem linear run once) -> neuron -> linear -> neuron -> linear -> mean over T."""
    model = nn.Sequential(
        StaticEncoder(bits.t, stem=QuantLinear(2, hidden)),  # [B, 2] -> [T, B, hidden]
        SpikeNeuron(bits.s, theta=0.5),
        FoldTime(QuantLinear(hidden, hidden)),
        SpikeNeuron(bits.s, theta=0.5),
        FoldTime(QuantLinear(hidden, 2)),
        TimeMean(),  # [T, B, 2] -> [B, 2]
    )
    apply_bits(model, bits)
    return model


def run_demo(bits: Bits, steps: int = 200, seed: int = 0) -> str:
    """Train the toy SNN for ``steps`` AdamW steps (at least 1) and return a short report."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (an untrained net has no accuracy to "
                         f"report); got {steps!r}")
    torch.manual_seed(seed)
    x, y = make_spiral_data(seed=seed)
    x_test, y_test = make_spiral_data(512, seed=seed + 1)
    model = make_toy_snn(bits)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lines = [f"qsnn demo: spiking MLP at {bits} (budget {bits.budget}) on two spirals"]
    start = time.perf_counter()
    for step in range(steps + 1):
        loss = F.cross_entropy(model(x), y)
        if step % max(1, steps // 4) == 0:
            lines.append(f"  step {step:4d}  loss {loss.item():.3f}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    lines.append(f"  test accuracy {100 * acc:.1f} % ({time.perf_counter() - start:.1f} s)")

    # Bit-serial identity on the hidden layer: T*b_s binary slices == dense integer product.
    with torch.no_grad():
        neuron, hidden = model[1], model[2].module
        levels = neuron.to_levels(neuron(model[0](x_test[:64])))  # [T, 64, hidden]
        if hidden.bits_w < 16:
            serial = bitserial_time_layer(hidden, levels, bits.s)
            dense = integer_layer(hidden, levels.flatten(0, 1)).unflatten(0, levels.shape[:2])
            same = torch.equal(serial, dense)
            lines.append(
                f"  bit-serial: {bits.t} steps x {bits.s} spike bits = {bits.t * bits.s} binary "
                f"slices per sample; equal to the dense integer product: {same}"
            )
    return "\n".join(lines)

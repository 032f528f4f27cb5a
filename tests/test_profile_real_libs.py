"""Issue 17, item 2, with the real libraries where they install (skipped otherwise): snnTorch
1.0's time loop and SpikingJelly 2.0's stateful neurons, counted against hand-computed
references. Install here with ``pip install --no-deps snntorch spikingjelly loguru``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qsnn.metrics import profile


def test_snntorch_time_loop_is_one_row_per_layer() -> None:
    snn = pytest.importorskip("snntorch", reason="snnTorch not installed")

    class Net(nn.Module):
        def __init__(self, steps: int = 5) -> None:
            super().__init__()
            self.steps = steps
            self.fc1, self.lif1 = nn.Linear(16, 8), snn.Leaky(beta=0.9)
            self.fc2, self.lif2 = nn.Linear(8, 4), snn.Leaky(beta=0.9)

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = 0
            for _ in range(self.steps):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                out = out + spk2
            return out

    torch.manual_seed(0)
    p = profile(Net(), torch.rand(3, 16) * 4)
    assert [(r.name, r.t_op, r.macs, r.b_in) for r in p.layers] == [
        ("fc1", 5, 128, 8), ("fc2", 5, 32, 1)]  # fmt: skip
    # S-ACE by hand: 16*8 MACs * 16 (float w) * 8 (raw) * 5 + 8*4 * 16 * 1 (spikes) * 5
    assert p.s_ace == 128 * 16 * 8 * 5 + 32 * 16 * 1 * 5


def test_spikingjelly_is_reset_between_batches_and_counts_its_steps() -> None:
    pytest.importorskip("spikingjelly", reason="SpikingJelly not installed")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    net = nn.Sequential(layer.Linear(16, 8), neuron.LIFNode(), layer.Linear(8, 4),
                        neuron.LIFNode())  # fmt: skip
    batches = [torch.rand(3, 16) * 4 for _ in range(3)]
    alone = []
    for b in batches:
        functional.reset_net(net)
        alone.append(profile(net, b, reset=lambda m: None).layers[1].fr)
    merged = profile(net, batches[0], data=batches)  # reset_net found by itself
    assert merged.layers[1].b_in == 1
    assert merged.layers[1].fr == pytest.approx(sum(alone) / 3, rel=1e-12)

    functional.set_step_mode(net, "m")  # multi-step: [T, B, ...] through [T * B] layers
    functional.reset_net(net)
    p = profile(net, torch.rand(4, 3, 16) * 4, time_major=True)
    assert [(r.t_op, r.macs, r.b_in) for r in p.layers] == [(4, 128, 8), (4, 32, 1)]
    assert p.s_ace == 128 * 16 * 8 * 4 + 32 * 16 * 1 * 4

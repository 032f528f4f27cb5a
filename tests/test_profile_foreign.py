"""Issue 17, item 2: fair profiles of models that are not qsnn's, each defect against a
reference computed by hand. Models are written in the style of SpikingJelly (stateful neurons,
``[T * B, ...]`` multi-step input) and snnTorch (a time loop inside ``forward``, neurons that
return ``(spikes, membrane)``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qsnn.metrics import profile
from qsnn.metrics.energy import DEFAULT_ENERGY
from qsnn.metrics.tracker import raw_levels


class Heaviside(nn.Module):
    """A parameter-free spiking nonlinearity (binary spikes), as a foreign neuron."""

    def forward(self, x):
        return (x > 0).float()


class Ternary(nn.Module):
    """Signed spikes in {-1, 0, 1}."""

    def forward(self, x):
        return torch.sign(x) * (x.abs() > 0.5).float()


class StatefulLIF(nn.Module):
    """SpikingJelly-style single-step neuron: keeps its membrane between calls, ``reset()``."""

    def __init__(self) -> None:
        super().__init__()
        self.v = None

    def reset(self) -> None:
        self.v = None

    def forward(self, x):
        self.v = x if self.v is None else self.v * 0.5 + x
        spikes = (self.v >= 1.0).float()
        self.v = self.v * (1 - spikes)
        return spikes


class SnnTorchStyle(nn.Module):
    """A time loop inside forward; the neuron returns (spikes, membrane)."""

    class Leaky(nn.Module):
        def forward(self, x, mem):
            mem = 0.9 * mem + x
            spk = (mem > 1.0).float()
            return spk, mem - spk

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.fc1, self.lif, self.fc2 = nn.Linear(16, 8), self.Leaky(), nn.Linear(8, 4)

    def forward(self, x):
        mem = torch.zeros(x.shape[0], 8)
        out = 0
        for _ in range(self.steps):
            spk, mem = self.lif(self.fc1(x), mem)
            out = out + self.fc2(spk)
        return out / self.steps


def by_name(p, name):
    return next(r for r in p.layers if r.name == name)


def test_a_flattened_raw_input_is_still_dense_for_the_first_layer() -> None:
    """nn.Flatten before the first Linear kept spike-event pricing: 2,048 MACs at E_AC gave
    1,843 pJ; a dense layer on 8-bit pixels costs E_MAC * 2,048 = 9,420.8 pJ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    p = profile(model, torch.rand(4, 1, 8, 8))
    first = p.layers[0]
    assert not first.spiking_input
    assert (first.macs, first.b_in) == (64 * 32, 8)
    assert first.energy_conventional_pj == pytest.approx(DEFAULT_ENERGY.e_mac_pj * 2048)
    assert first.energy_conventional_pj == pytest.approx(9420.8)


def test_a_time_folded_foreign_model_declares_its_steps() -> None:
    """A model fed ``[T * B, ...]`` (SpikingJelly's multi-step layout) runs every layer T
    times per sample: S-ACE per sample = MACs * b_w * b_in * T. Linear(64 -> 32) on 8-bit
    input, float weights (16): 2048 * 16 * 8 * 4 = 1,048,576 at T = 4."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
    x = torch.rand(4 * 2, 1, 8, 8)
    per_step = profile(model, x)
    folded = profile(model, x, time_steps=4)
    assert folded.layers[0].t_op == 4 and folded.layers[0].macs == 2048
    assert folded.s_ace == 2048 * 16 * 8 * 4
    assert per_step.s_ace * 4 == folded.s_ace  # the old count was T times too small
    with pytest.raises(ValueError, match="divisible"):
        profile(model, torch.rand(6, 1, 8, 8), time_steps=4)
    with pytest.raises(ValueError, match="time_steps is for"):
        profile(model, torch.rand(4, 2, 1, 8, 8), time_steps=4, time_major=True)


def test_average_pooling_keeps_the_width_of_foreign_binary_spikes() -> None:
    """2x2 average pooling of binary spikes gives multiples of 1/4; read at the next conv
    they looked like 3-bit levels. SPEC §5: pooling keeps the width, so b_in = 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Heaviside(), nn.AvgPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1))  # fmt: skip
    p = profile(model, torch.rand(2, 1, 8, 8))
    second = by_name(p, "3")
    assert second.b_in == 1 and second.spiking_input
    # S-ACE by hand: 4 * 4 * 9 * 4 * 4 MACs at b_w 16, b_in 1
    assert second.s_ace == 4 * 4 * 9 * 16 * 16 * 1


def test_signed_spikes_count_sign_and_magnitude_bits() -> None:
    """Ternary spikes {-1, 0, 1} are 2 bits (sign + 1 magnitude bit), not dense 16."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Ternary(), nn.Linear(8, 4))
    p = profile(model, torch.randn(16, 8))
    second = by_name(p, "2")
    assert second.b_in == 2 and second.spiking_input
    assert second.s_ace == 8 * 4 * 16 * 2


def _bits_by_hand(k: torch.Tensor) -> float:
    return sum(bin(int(v)).count("1") for v in k.flatten()) / (8 * k.numel())


def test_the_raw_images_bit_density_is_that_of_its_pixels() -> None:
    """The stem read an 8-bit image as if its density were its firing rate (0.995 for a
    photo); the density of an 8-bit image is that of its pixels' bit-planes."""
    torch.manual_seed(0)
    k = torch.randint(0, 256, (3, 3, 8, 8))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    want = _bits_by_hand(k)
    assert profile(model, k.float() / 255).layers[0].density == pytest.approx(want, rel=1e-12)
    assert profile(model, k.float()).layers[0].density == pytest.approx(want, rel=1e-12)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    x = (k.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    normalized = profile(model, x, input_normalization=(mean, std))
    assert normalized.layers[0].density == pytest.approx(want, rel=1e-12)
    # Without the normalization the pixels cannot be read off: the firing rate stands in.
    assert profile(model, x).layers[0].density == profile(model, x).layers[0].fr
    assert raw_levels(torch.rand(2, 3), 8) is None


def test_stateful_models_are_reset_before_every_batch() -> None:
    """A stateful neuron leaks membrane state from one batch into the next; ``reset`` is
    called before each one, so the firing rate over the batches equals that of each batch
    measured alone."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), StatefulLIF(), nn.Linear(8, 4))
    batches = [torch.rand(16, 8) for _ in range(3)]

    def reset(m):
        m[1].reset()

    alone = []
    for b in batches:
        m_profile = profile(model, b, reset=reset)
        alone.append(by_name(m_profile, "2").fr)
    merged = by_name(profile(model, batches[0], data=batches, reset=reset), "2")
    assert merged.fr == pytest.approx(sum(alone) / 3, rel=1e-12)
    leaky = by_name(profile(model, batches[0], data=batches, reset=lambda m: None), "2")
    assert leaky.fr != pytest.approx(merged.fr, rel=1e-9)  # the state did leak without it


def test_a_time_loop_inside_forward_is_one_row_per_layer() -> None:
    """snnTorch-style: fc1 and fc2 each called T = 5 times per forward; one row each with
    T_op = 5 and the per-step MACs (16 * 8 and 8 * 4), not 5 rows of MACs / 5."""
    torch.manual_seed(0)
    model = SnnTorchStyle(steps=5)
    p = profile(model, torch.rand(3, 16) * 3)
    names = [r.name for r in p.layers]
    assert names == ["fc1", "fc2"], names
    fc1, fc2 = p.layers
    assert (fc1.t_op, fc1.macs, fc2.t_op, fc2.macs) == (5, 128, 5, 32)
    assert fc2.b_in == 1 and fc2.spiking_input  # (spikes, membrane): the spikes are seen
    assert p.s_ace == 128 * 16 * 8 * 5 + 32 * 16 * 1 * 5

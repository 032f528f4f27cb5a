"""Acceptance tests for ``qsnn.profile``, the cost counter (SPEC §5, issue 3).

Every expected figure is worked out by hand in the test's docstring from the layer shapes and
from spike tensors built in the test, never taken from the code's own output. Definitions
(SPEC §5), per sample, ``MACs`` per time step:

    S-ACE = MACs * b_w * b_in * T_op          SOPs   = fr * MACs * b_in * T_op
    NS-ACE = b_w * SOPs                        events = fr * MACs * T_op
    NS-ACE bits = density * MACs * b_w * b_in * T_op
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from qsnn import Bits, FoldTime, QuantConv2d, QuantLinear, SpikeNeuron, StaticEncoder, TimeMean
from qsnn.metrics import EnergyModel, profile

EXACT = 1e-12  # relative tolerance for "exact" float figures (only float rounding allowed)


# -- helpers ------------------------------------------------------------------------------------
class Levels(nn.Module):
    """Identity that declares its output ``bits``-bit integer levels of scale ``theta``: lets a
    test feed a spike tensor it built by hand to the next layer."""

    def __init__(self, bits: int, theta: float = 1.0) -> None:
        super().__init__()
        self.output_bits = bits
        self.theta = theta

    def forward(self, x):
        return x


class RestrictedAdd(nn.Module):
    """SEW-style ADD restricted to ``b_s`` bits: the sum of two level tensors clamped to
    ``[0, 2**b_s - 1]`` levels (SPEC §6), declared as ``b_s``-bit output."""

    def __init__(self, bits: int, theta: float = 1.0) -> None:
        super().__init__()
        self.output_bits = bits
        self.theta = theta

    def forward(self, a, b):
        return torch.clamp(a + b, 0.0, (2**self.output_bits - 1) * self.theta)


def level_tensor(shape, counts: dict[int, int], seed: int = 0, theta: float = 1.0):
    """A tensor of ``shape`` holding exactly ``counts[k]`` entries of level ``k`` (value
    ``k * theta``), the rest zero, at positions shuffled by a fixed seed."""
    n = 1
    for d in shape:
        n *= d
    flat = torch.zeros(n)
    i = 0
    for level, count in counts.items():
        flat[i : i + count] = level * theta
        i += count
    assert i <= n
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return flat[perm].reshape(shape)


def by_name(p, name):
    rows = [r for r in p.layers if r.name == name]
    assert len(rows) == 1, [r.name for r in p.layers]
    return rows[0]


def only(p, kind):
    rows = [r for r in p.layers if r.kind == kind]
    assert len(rows) == 1, [(r.name, r.kind) for r in p.layers]
    return rows[0]


# -- 1. a single quantized linear layer fed a known spike tensor ------------------------------
@pytest.mark.parametrize(
    ("bits", "theta", "counts", "b_w", "want"),
    [
        # 2-bit spikes, 30 % non-zero (60 of 200): fr = 0.3, NOT dense.
        # 1-bits: level 1 -> 1, level 2 -> 1, level 3 -> 2: 20 + 20 + 40 = 80 of 200 * 2 = 400
        # bit slots -> density 0.2. MACs = 10 * 3 = 30, b_w = 4, b_in = 2, T = 4:
        # S-ACE = 30*4*2*4 = 960; SOPs = 0.3*30*2*4 = 72; events = 0.3*30*4 = 36;
        # NS-ACE = 4*72 = 288; NS-ACE bits = 0.2*30*4*2*4 = 192.
        (2, 1.0, {1: 20, 2: 20, 3: 20}, 4,
         dict(fr=0.3, density=0.2, s_ace=960, sops=72, events=36, ns_ace=288, nsb=192)),
        # Same levels at theta = 0.5 (values k * 0.5): the figures do not depend on the scale.
        (2, 0.5, {1: 20, 2: 20, 3: 20}, 4,
         dict(fr=0.3, density=0.2, s_ace=960, sops=72, events=36, ns_ace=288, nsb=192)),
        # Binary spikes, 50 of 200 -> fr = density = 0.25; b_w = 2, b_in = 1, T = 4:
        # S-ACE = 30*2*1*4 = 240; SOPs = 0.25*30*1*4 = 30; events = 30; NS-ACE = 2*30 = 60;
        # NS-ACE bits = 0.25*30*2*1*4 = 60.
        (1, 1.0, {1: 50}, 2,
         dict(fr=0.25, density=0.25, s_ace=240, sops=30, events=30, ns_ace=60, nsb=60)),
        # 3-bit spikes: 10 x level 7 (3 ones), 10 x level 4 (1 one), 20 x level 5 (2 ones):
        # fr = 40/200 = 0.2; ones = 30 + 10 + 40 = 80 of 600 slots -> density 2/15.
        # b_w = 8, b_in = 3, T = 4: S-ACE = 30*8*3*4 = 2880; SOPs = 0.2*30*3*4 = 72;
        # events = 0.2*30*4 = 24; NS-ACE = 8*72 = 576; NS-ACE bits = (2/15)*2880 = 384.
        (3, 1.0, {7: 10, 4: 10, 5: 20}, 8,
         dict(fr=0.2, density=2 / 15, s_ace=2880, sops=72, events=24, ns_ace=576, nsb=384)),
    ],
)
def test_single_linear_known_spikes(bits, theta, counts, b_w, want):
    """A QuantLinear(10 -> 3) fed a hand-built [T=4, B=5, 10] level tensor (200 entries):
    MACs per step per sample = 10 * 3 = 30, t_op = 4; the other figures are in the cases."""
    x = level_tensor((4, 5, 10), counts, theta=theta)
    model = nn.Sequential(Levels(bits, theta), FoldTime(QuantLinear(10, 3, bias=False,
                                                                     bits_w=b_w)))
    p = profile(model, x, time_major=True)
    r = by_name(p, "1.module")
    assert r.kind == "linear"
    assert r.macs == 30
    assert r.t_op == 4
    assert r.b_w == b_w
    assert r.b_in == bits
    assert r.budget == b_w * bits * 4
    assert r.spiking_input
    assert r.fr == pytest.approx(want["fr"], rel=EXACT)
    assert r.density == pytest.approx(want["density"], rel=EXACT)
    assert r.s_ace == want["s_ace"]
    assert r.sops == pytest.approx(want["sops"], rel=EXACT)
    assert r.events == pytest.approx(want["events"], rel=EXACT)
    assert r.ns_ace == pytest.approx(want["ns_ace"], rel=EXACT)
    assert r.ns_ace_bits == pytest.approx(want["nsb"], rel=EXACT)
    # One layer: the totals are that layer's figures.
    assert p.macs == 30
    assert p.s_ace == want["s_ace"]
    assert p.totals["s_ace"] == want["s_ace"]
    assert p.sops == pytest.approx(want["sops"], rel=EXACT)
    assert p.ns_ace == pytest.approx(want["ns_ace"], rel=EXACT)
    assert p.ns_ace_bits == pytest.approx(want["nsb"], rel=EXACT)
    assert p.events == pytest.approx(want["events"], rel=EXACT)
    # Layer by layer, NS-ACE = b_w * SOPs.
    assert r.ns_ace == pytest.approx(b_w * r.sops, rel=EXACT)


def test_params_params16_size_bytes():
    """QuantLinear(10 -> 3, no bias) at b_w = 4: params = 30; params_16 = 30 * 4 / 16 = 7.5;
    size_bytes = 2 bytes * 7.5 = 15. The per-layer row carries the same counts."""
    model = nn.Sequential(Levels(1), FoldTime(QuantLinear(10, 3, bias=False, bits_w=4)))
    p = profile(model, level_tensor((2, 3, 10), {1: 20}), time_major=True)
    assert p.params == 30
    assert p.params_16 == pytest.approx(7.5, rel=EXACT)
    assert p.size_bytes == pytest.approx(15.0, rel=EXACT)
    r = by_name(p, "1.module")
    assert r.params == 30
    assert r.params_16 == pytest.approx(7.5, rel=EXACT)


# -- 2. b_in follows SPEC §5 --------------------------------------------------------------------
class TwoBranch(nn.Module):
    """Two b_s-bit neuron branches merged by a restricted (SEW) ADD or a plain ``a + b``."""

    def __init__(self, b_s: int, restricted: bool) -> None:
        super().__init__()
        self.fc_a = FoldTime(QuantLinear(6, 6, bits_w=4))
        self.fc_b = FoldTime(QuantLinear(6, 6, bits_w=4))
        self.n_a = SpikeNeuron(b_s, theta=0.25)
        self.n_b = SpikeNeuron(b_s, theta=0.25)
        self.merge = RestrictedAdd(b_s, theta=0.25) if restricted else None
        self.head = FoldTime(QuantLinear(6, 3, bits_w=4))

    def forward(self, x):
        a = self.n_a(self.fc_a(x))
        b = self.n_b(self.fc_b(x))
        s = self.merge(a, b) if self.merge is not None else a + b
        return self.head(s)


@pytest.mark.parametrize("b_s", [1, 2, 4])
def test_b_in_restricted_add_keeps_b_s(b_s):
    """SEW ADD clamped to b_s bits: the head's b_in = b_s (SPEC §5/§6)."""
    torch.manual_seed(0)
    p = profile(TwoBranch(b_s, restricted=True), torch.randn(3, 4, 6), time_major=True)
    head = by_name(p, "head.module")
    assert head.b_in == b_s
    assert head.t_op == 3
    assert head.s_ace == 18 * 4 * b_s * 3  # MACs 6*3 = 18, b_w 4, T 3


@pytest.mark.parametrize("b_s", [1, 2, 4])
def test_b_in_plain_add_widens(b_s):
    """Unrestricted ``a + b`` of two b_s-bit outputs: levels up to 2*(2**b_s - 1) need
    b_s + 1 bits (1 -> 2, 2 -> 3, 4 -> 5); S-ACE of the head = 18 * 4 * (b_s + 1) * 3."""
    torch.manual_seed(0)
    p = profile(TwoBranch(b_s, restricted=False), torch.randn(3, 4, 6), time_major=True)
    head = by_name(p, "head.module")
    assert head.b_in == b_s + 1
    assert head.s_ace == 18 * 4 * (b_s + 1) * 3


@pytest.mark.parametrize(
    "pool",
    [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2), nn.AdaptiveMaxPool2d(2)],
    ids=["max", "avg", "adaptive_avg", "adaptive_max"],
)
def test_b_in_pooling_keeps_width(pool):
    """neuron (b_s = 3) -> pool -> conv: the conv's b_in = 3 (pooling keeps the width).
    Input [T=2, B=2, 4, 12, 12] (spatial size != T). Pooled maps are 6x6 (2x2 for the adaptive
    pools), so the conv (4 -> 5, k = 1) has MACs 4*5*36 = 720 or 4*5*4 = 80; b_in and t_op = 2
    are what this test is about."""
    torch.manual_seed(0)
    model = nn.Sequential(
        SpikeNeuron(3, theta=0.3), FoldTime(pool), FoldTime(QuantConv2d(4, 5, 1, bits_w=2))
    )
    p = profile(model, torch.rand(2, 2, 4, 12, 12) * 3)
    conv = by_name(p, "2.module")
    assert conv.b_in == 3
    assert conv.t_op == 2
    assert conv.macs == (80 if "Adaptive" in type(pool).__name__ else 720)


def test_b_in_global_avg_pool_before_classifier():
    """neuron (b_s = 2) -> global average pool -> flatten -> linear: the classifier counts its
    input's width (b_in = 2), T_op = T = 3. MACs = 4 * 10 = 40; S-ACE = 40 * 4 * 2 * 3 = 960.
    Spatial 6x6 != T."""
    torch.manual_seed(0)
    model = nn.Sequential(
        SpikeNeuron(2, theta=0.3),
        FoldTime(nn.AdaptiveAvgPool2d(1)),
        FoldTime(nn.Flatten()),
        FoldTime(QuantLinear(4, 10, bits_w=4)),
    )
    p = profile(model, torch.rand(3, 2, 4, 6, 6))
    head = by_name(p, "3.module")
    assert head.b_in == 2
    assert head.t_op == 3
    assert head.macs == 40
    assert head.s_ace == 960


@pytest.mark.parametrize(("input_bits", "want"), [(8, 8), (4, 4), (1, 1)])
def test_b_in_raw_image_counts_input_bits(input_bits, want):
    """A conv on the raw image counts input_bits (default 8). QuantConv2d(3, 4, 3, pad 1) on
    8x8: MACs = 3*4*9*64 = 6912; S-ACE = 6912 * 2 * input_bits * 1."""
    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, padding=1, bits_w=2)
    kwargs = {} if input_bits == 8 else {"input_bits": input_bits}
    p = profile(conv, torch.rand(2, 3, 8, 8), **kwargs)
    r = p.layers[0]
    assert r.b_in == want
    assert r.macs == 6912
    assert r.t_op == 1
    assert r.s_ace == 6912 * 2 * want


def test_b_in_dense_intermediate_counts_16():
    """conv -> BatchNorm (no neuron) -> conv: the second conv sees dense floats: b_in = 16.
    The first conv sees the raw image: b_in = 8."""
    torch.manual_seed(0)
    model = nn.Sequential(
        QuantConv2d(3, 4, 3, padding=1, bits_w=4), nn.BatchNorm2d(4),
        QuantConv2d(4, 4, 3, padding=1, bits_w=4),
    )
    p = profile(model, torch.randn(2, 3, 8, 8))
    assert by_name(p, "0").b_in == 8
    second = by_name(p, "2")
    assert second.b_in == 16
    assert not second.spiking_input


def test_b_in_inferred_input_bits():
    """input_bits=None: event counts 0..5 need 3 bits; non-integer floats count 16."""
    conv = nn.Conv2d(2, 3, 3)
    counts = level_tensor((2, 2, 6, 6), {1: 20, 3: 10, 5: 4})
    assert profile(conv, counts, input_bits=None).layers[0].b_in == 3
    torch.manual_seed(0)
    assert profile(conv, torch.randn(2, 2, 6, 6), input_bits=None).layers[0].b_in == 16


def test_b_in_quantized_ann_activation():
    """A QANN (T = 1): conv -> QuantActivation(4 bits) -> conv. The second conv sees 4-bit
    levels: b_in = 4, t_op = 1; QuantConv2d(4, 4, 3, pad 1, b_w 2) on 8x8: MACs = 4*4*9*64 =
    9,216; S-ACE = 9,216 * 2 * 4 * 1 = 73,728."""
    from qsnn import QuantActivation

    torch.manual_seed(0)
    model = nn.Sequential(
        QuantConv2d(3, 4, 3, padding=1, bits_w=2), QuantActivation(4, delta=0.1),
        QuantConv2d(4, 4, 3, padding=1, bits_w=2),
    )
    p = profile(model, torch.rand(2, 3, 8, 8))
    r = by_name(p, "2")
    assert (r.b_in, r.t_op, r.b_w, r.macs) == (4, 1, 2, 9_216)
    assert r.s_ace == 73_728


def test_float_weights_count_16_bits():
    """QuantLinear(bits_w=32) keeps float weights, counted as 16 bits (SPEC §1): MACs 10*3 =
    30, b_in 1, T 2 -> S-ACE = 30*16*1*2 = 960; params_16 = params = 30."""
    model = nn.Sequential(Levels(1), FoldTime(QuantLinear(10, 3, bias=False, bits_w=32)))
    p = profile(model, level_tensor((2, 3, 10), {1: 12}), time_major=True)
    r = by_name(p, "1.module")
    assert r.b_w == 16
    assert r.s_ace == 960
    assert p.params_16 == p.params == 30


# -- 3. a conv net: MACs by the analytic formula -----------------------------------------------
def test_conv_net_macs_analytic():
    """Input [2, 3, 32, 32]; MACs per sample = C_in * C_out * k^2 * H_out * W_out / groups:
      conv0: 3->16, k3, s1, p1 -> 32x32: 3*16*9*1024           =   442,368
      conv2: 16->32, k3, s2, p1 -> 16x16 (floor((32+2-3)/2)+1): 16*32*9*256 = 1,179,648
      conv4: 32->32, k3, s1, p0, groups 4 -> 14x14: 32*32*9*196/4 = 451,584
      conv6: 32->64, k1 -> 14x14: 32*64*196                     =   401,408
      fc10 : 64 -> 10                                           =       640
      total                                                     = 2,475,648
    Static input: t_op = 1 everywhere."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        QuantConv2d(32, 32, 3, groups=4, bits_w=4), nn.ReLU(),
        nn.Conv2d(32, 64, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    p = profile(model, torch.randn(2, 3, 32, 32))
    want = {"0": 442_368, "2": 1_179_648, "4": 451_584, "6": 401_408, "10": 640}
    assert [r.name for r in p.layers] == list(want)
    for name, macs in want.items():
        r = by_name(p, name)
        assert r.macs == macs, name
        assert r.t_op == 1
    assert [r.kind for r in p.layers] == ["conv"] * 4 + ["linear"]
    assert p.macs == 2_475_648
    assert by_name(p, "4").b_w == 4
    assert by_name(p, "0").b_w == 16


# -- 4. attention ----------------------------------------------------------------------------
class SpikingSelfAttention(nn.Module):
    """Spikformer-style SSA on [T, B, N, D]: q, k, v = neurons(linear(x)); attn = q @ k^T;
    out = attn_neuron(attn) @ v, with ``heads`` heads of size D / heads."""

    def __init__(self, dim: int, heads: int, b_s: int, b_attn: int, bits_w: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = QuantLinear(dim, dim, bits_w=bits_w)
        self.k = QuantLinear(dim, dim, bits_w=bits_w)
        self.v = QuantLinear(dim, dim, bits_w=bits_w)
        self.q_n = SpikeNeuron(b_s, theta=0.2)
        self.k_n = SpikeNeuron(b_s, theta=0.2)
        self.v_n = SpikeNeuron(b_s, theta=0.2)
        self.attn_n = SpikeNeuron(b_attn, theta=0.5)
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, x):
        t, b, n, d = x.shape

        def split(z):  # [T, B, N, D] -> [T, B, H, N, D/H]
            return z.reshape(t, b, n, self.heads, d // self.heads).permute(0, 1, 3, 2, 4)

        q = split(self.q_n(self.q(x)))
        k = split(self.k_n(self.k(x)))
        v = split(self.v_n(self.v(x)))
        attn = q @ k.transpose(-2, -1)  # [T, B, H, N, N]
        a = self.attn_n(attn)
        self.seen["q"], self.seen["a"] = q.detach().clone(), a.detach().clone()
        return (a @ v).permute(0, 1, 3, 2, 4).reshape(t, b, n, d)


class AttnWrapper(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.attn = SpikingSelfAttention(**kw)

    def forward(self, x):
        return self.attn(x)


def test_attention_matmuls_counted_without_weight_bits():
    """T = 2, B = 3, N = 5, D = 8, 2 heads of 4; q, k, v are 2-bit, the attention map 3-bit.
    Per step per sample: Q K^T = heads * N * N * (D/heads) = 5*5*8 = 200 MACs; A V = 200 MACs;
    each projection N * D * D = 5*8*8 = 320 MACs.
      Q K^T: kind matmul, b_in = b_q = 2, in place of b_w: b_k = 2, S-ACE = 200*2*2*2 = 1600
      A V  : b_in = b_a = 3, b_v = 2, S-ACE = 200*3*2*2 = 2400
    fr of each product is the non-zero fraction of its streamed operand (q, then the attention
    spikes), read here from the tensors the model computed."""
    torch.manual_seed(0)
    model = AttnWrapper(dim=8, heads=2, b_s=2, b_attn=3, bits_w=4)
    x = torch.randn(2, 3, 5, 8)
    p = profile(model, x, time_major=True)
    mm = [r for r in p.layers if r.kind == "matmul"]
    assert len(mm) == 2
    qk, av = mm
    assert qk.macs == 200 and av.macs == 200
    assert qk.t_op == 2 and av.t_op == 2
    assert (qk.b_in, qk.b_w) == (2, 2)
    assert (av.b_in, av.b_w) == (3, 2)
    assert qk.s_ace == 1600
    assert av.s_ace == 2400
    q, a = model.attn.seen["q"], model.attn.seen["a"]
    fr_q = float((q != 0).sum()) / q.numel()
    fr_a = float((a != 0).sum()) / a.numel()
    assert qk.fr == pytest.approx(fr_q, rel=EXACT)
    assert av.fr == pytest.approx(fr_a, rel=EXACT)
    assert qk.sops == pytest.approx(fr_q * 200 * 2 * 2, rel=EXACT)
    assert av.ns_ace == pytest.approx(2 * fr_a * 200 * 3 * 2, rel=EXACT)
    assert qk.params == 0 and av.params == 0
    lin = [r for r in p.layers if r.kind == "linear"]
    assert len(lin) == 3
    for r in lin:
        assert r.macs == 320
        assert r.b_w == 4
        assert r.t_op == 2
    assert p.macs == 3 * 320 + 2 * 200


def test_attention_excluded_under_paper_counting():
    """counting='paper' at 4/2/2 charges only the 3 projections: 3 * 320 * 4*2*2 = 15,360;
    the products are marked counted=False and add nothing to S-ACE."""
    torch.manual_seed(0)
    model = AttnWrapper(dim=8, heads=2, b_s=2, b_attn=3, bits_w=4)
    p = profile(model, torch.randn(2, 3, 5, 8), time_major=True, counting="paper", bits="4/2/2")
    mm = [r for r in p.layers if r.kind == "matmul"]
    assert len(mm) == 2 and not any(r.counted for r in mm)
    assert all(r.counted for r in p.layers if r.kind == "linear")
    assert p.s_ace == 15_360


# -- 5. scaling with T, b_w, b_s; stem t_op; paper counting -----------------------------------
def small_snn(b_w: int, b_s: int, t: int) -> nn.Module:
    """Static encoder with a stem (conv 3->8 k3 p1 + BN, run once), neuron, conv 8->16 k3 p1,
    neuron, global average pool, linear 16->10, time mean. Input [2, 3, 16, 16]."""
    torch.manual_seed(0)
    return nn.Sequential(
        StaticEncoder(t, stem=nn.Sequential(QuantConv2d(3, 8, 3, padding=1, bits_w=b_w),
                                            nn.BatchNorm2d(8))),
        SpikeNeuron(b_s, theta=0.3),
        FoldTime(QuantConv2d(8, 16, 3, padding=1, bits_w=b_w)),
        SpikeNeuron(b_s, theta=0.3),
        FoldTime(nn.AdaptiveAvgPool2d(1)),
        FoldTime(nn.Flatten()),
        FoldTime(QuantLinear(16, 10, bits_w=b_w)),
        TimeMean(),
    )


SNN_INPUT = (2, 3, 16, 16)
STEM, CONV, HEAD = "0.stem.0", "2.module", "6.module"
# MACs per step: stem 3*8*9*256 = 55,296; conv 8*16*9*256 = 294,912; head 16*10 = 160.
SNN_MACS = {STEM: 55_296, CONV: 294_912, HEAD: 160}


def test_stem_runs_once_later_layers_t_times():
    """At 4/2/4: stem t_op = 1, b_in = 8 (raw image): S-ACE = 55,296*4*8*1 = 1,769,472;
    conv t_op = 4, b_in = 2: 294,912*4*2*4 = 9,437,184; head: 160*4*2*4 = 5,120;
    total S-ACE = 11,211,776; total MACs = 350,368."""
    torch.manual_seed(1)
    p = profile(small_snn(4, 2, 4), torch.rand(SNN_INPUT))
    assert [r.name for r in p.layers] == [STEM, CONV, HEAD]
    for name, macs in SNN_MACS.items():
        assert by_name(p, name).macs == macs
    stem, conv, head = (by_name(p, n) for n in (STEM, CONV, HEAD))
    assert (stem.t_op, stem.b_in, stem.b_w) == (1, 8, 4)
    assert (conv.t_op, conv.b_in, conv.b_w) == (4, 2, 4)
    assert (head.t_op, head.b_in, head.b_w) == (4, 2, 4)
    assert stem.s_ace == 1_769_472
    assert conv.s_ace == 9_437_184
    assert head.s_ace == 5_120
    assert p.s_ace == 11_211_776
    assert p.macs == 350_368
    assert not stem.spiking_input and conv.spiking_input and head.spiking_input


@pytest.mark.parametrize(
    ("changed", "ratios"),
    [
        # T 4 -> 8: layers fed by neurons x2, the stem (t_op = 1) unchanged.
        ((4, 2, 8), {STEM: 1, CONV: 2, HEAD: 2}),
        # b_w 4 -> 2: every layer (stem included, it has b_w weights) x1/2.
        ((2, 2, 4), {STEM: 0.5, CONV: 0.5, HEAD: 0.5}),
        # b_w 4 -> 8: x2 everywhere.
        ((8, 2, 4), {STEM: 2, CONV: 2, HEAD: 2}),
        # b_s 2 -> 4: layers fed by neurons x2, the stem (raw 8-bit input) unchanged.
        ((4, 4, 4), {STEM: 1, CONV: 2, HEAD: 2}),
        # b_s 2 -> 1: layers fed by neurons x1/2.
        ((4, 1, 4), {STEM: 1, CONV: 0.5, HEAD: 0.5}),
    ],
)
def test_s_ace_scales_exactly(changed, ratios):
    """Base 4/2/4 (hand values in ``test_stem_runs_once_later_layers_t_times``); changing one
    of T, b_w, b_s scales each layer's S-ACE exactly by the ratio given in the case."""
    base_hand = {STEM: 1_769_472, CONV: 9_437_184, HEAD: 5_120}
    torch.manual_seed(1)
    x = torch.rand(SNN_INPUT)
    base = profile(small_snn(4, 2, 4), x)
    new = profile(small_snn(*changed), x)
    for name, ratio in ratios.items():
        assert by_name(base, name).s_ace == base_hand[name]
        assert by_name(new, name).s_ace == base_hand[name] * ratio, name
    assert new.s_ace == sum(base_hand[n] * r for n, r in ratios.items())


def test_t_op_not_confused_by_spatial_size_equal_to_t():
    """T = 4 and an 4x4 feature map before a global average pool: the head still runs T = 4
    steps of 16*10 = 160 MACs: t_op = 4, macs = 160, S-ACE = 160*4*2*4 = 5,120.
    (A mean over H, W whose size happens to equal T is not a mean over time.)"""
    torch.manual_seed(1)
    p = profile(small_snn(4, 2, 4), torch.rand(2, 3, 4, 4))
    head = by_name(p, HEAD)
    assert head.t_op == 4
    assert head.macs == 160
    assert head.s_ace == 5_120
    conv = by_name(p, CONV)
    assert (conv.t_op, conv.macs) == (4, 8 * 16 * 9 * 16)


@pytest.mark.parametrize(
    ("alloc", "budget"), [("16/1/4", 64), ("1/1/1", 1), ("4/2/2", 16), ("2/4/8", 64)]
)
def test_paper_counting_is_macs_times_budget(alloc, budget):
    """counting='paper': S-ACE = sum(MACs) * b_w * b_s * T = 350,368 * budget, every layer
    (stem included) at the model's allocation; 16/1/4 is 64 x 1/1/1."""
    bits = Bits.parse(alloc)
    torch.manual_seed(1)
    model = small_snn(bits.w, bits.s, bits.t)
    p = profile(model, torch.rand(SNN_INPUT), counting="paper", bits=bits)
    assert p.macs == 350_368
    assert p.s_ace == 350_368 * budget
    for name, macs in SNN_MACS.items():
        r = by_name(p, name)
        assert r.s_ace == macs * budget
        assert r.budget == budget


def test_paper_counting_ratio_16_1_4_over_1_1_1():
    """Same model shape at 16/1/4 and 1/1/1: S-ACE ratio 64 / 1 = 64 exactly."""
    torch.manual_seed(1)
    x = torch.rand(SNN_INPUT)
    hi = profile(small_snn(16, 1, 4), x, counting="paper", bits="16/1/4")
    lo = profile(small_snn(1, 1, 1), x, counting="paper", bits="1/1/1")
    assert hi.s_ace == 64 * lo.s_ace
    assert lo.s_ace == 350_368


def test_paper_counting_reads_model_bits_attribute():
    """A model with a ``bits`` attribute needs no ``bits=``: 2/2/2 -> 350,368 * 8."""
    model = small_snn(2, 2, 2)
    model.bits = Bits(2, 2, 2)
    p = profile(model, torch.rand(SNN_INPUT), counting="paper")
    assert p.s_ace == 350_368 * 8


# -- 6. ResNet-18 -------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (no torchvision needed)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_resnet18_macs_params_and_widths():
    """ResNet-18, 224x224, batch 1. MACs (C_in*C_out*k^2*H_out*W_out):
      conv1 3*64*49*112*112                                          = 118,013,952
      layer1 4 * 64*64*9*56*56                                       = 462,422,016
      layer2 64*128*9*784 + 3*128*128*9*784 + 64*128*784 (downsample) = 411,041,792
      layer3 128*256*9*196 + 3*256*256*9*196 + 128*256*196             = 411,041,792
      layer4 256*512*9*49 + 3*512*512*9*49 + 256*512*49                 = 411,041,792
      fc 512*1000                                                    =     512,000
      total                                                          = 1,814,073,344
    (the quoted 1.82 G, within 1 %). Params: conv1 9,408 + bn1 128 + layer1 147,456 + 512
    + layer2 525,568 + layer3 2,099,712 + layer4 8,393,728 + fc 513,000 = 11,689,512.
    A float ANN: b_w = 16 everywhere, b_in = 16 on every internal layer (conv1 sees the raw
    8-bit image), params_16 == params."""
    torch.manual_seed(0)
    model = ResNet18()
    p = profile(model, torch.randn(1, 3, 224, 224))
    assert p.macs == 1_814_073_344
    assert p.macs == pytest.approx(1.82e9, rel=0.01)
    assert p.params == 11_689_512
    assert p.params_16 == p.params
    assert len(p.layers) == 21  # 1 + 16 convs + 3 downsamples + fc
    assert by_name(p, "conv1").macs == 118_013_952
    assert by_name(p, "conv1").b_in == 8
    assert by_name(p, "fc").macs == 512_000
    for r in p.layers:
        assert r.b_w == 16, r.name
        assert r.t_op == 1, r.name
        if r.name != "conv1":
            assert r.b_in == 16, r.name
            assert not r.spiking_input, r.name
    assert sum(r.params for r in p.layers) == 11_689_512 - 9_600  # minus BN params (4,800 * 2)


# -- 7. firing rates from data -------------------------------------------------------------------
def test_firing_rates_from_data_batches():
    """Levels(1) -> QuantLinear(6 -> 2). Data batches (x, y) of binary spikes:
      batch 1 [T=2, B=3, 6] = 36 entries, 9 ones; batch 2 [2, 2, 6] = 24 entries, 15 ones;
      batch 3 all ones (beyond max_batches=2, not read).
    fr = (9 + 15) / (36 + 24) = 0.4, whatever example_input holds (all zeros here, fr 0).
    MACs = 12, b_w = 2, b_in = 1, T = 2: SOPs = 0.4*12*1*2 = 9.6; events = 9.6;
    NS-ACE = 2*9.6 = 19.2; S-ACE = 12*2*1*2 = 48 (does not depend on the data)."""
    model = nn.Sequential(Levels(1), FoldTime(QuantLinear(6, 2, bits_w=2)))
    data = [
        (level_tensor((2, 3, 6), {1: 9}, seed=1), torch.zeros(3)),
        (level_tensor((2, 2, 6), {1: 15}, seed=2), torch.zeros(2)),
        (torch.ones(2, 4, 6), torch.zeros(4)),
    ]
    example = torch.zeros(2, 5, 6)
    p = profile(model, example, data=data, max_batches=2, time_major=True)
    r = by_name(p, "1.module")
    assert r.fr == pytest.approx(0.4, rel=EXACT)
    assert r.density == pytest.approx(0.4, rel=EXACT)
    assert r.sops == pytest.approx(9.6, rel=EXACT)
    assert r.events == pytest.approx(9.6, rel=EXACT)
    assert r.ns_ace == pytest.approx(19.2, rel=EXACT)
    assert r.s_ace == 48
    assert r.macs == 12
    # independent of example_input: an all-ones example gives the same rates
    p2 = profile(model, torch.ones(2, 5, 6), data=data, max_batches=2, time_major=True)
    assert by_name(p2, "1.module").fr == pytest.approx(0.4, rel=EXACT)
    # without data, the example input is measured: all zeros -> fr 0
    assert by_name(profile(model, example, time_major=True), "1.module").fr == 0.0


def test_firing_rates_from_plain_tensor_batches():
    """Data may also yield bare tensors: 2 batches [1, 4, 6] with 6 and 12 ones of 24:
    fr = 18 / 48 = 0.375."""
    model = nn.Sequential(Levels(1), FoldTime(QuantLinear(6, 2, bits_w=2)))
    data = [level_tensor((1, 4, 6), {1: 6}, seed=3), level_tensor((1, 4, 6), {1: 12}, seed=4)]
    p = profile(model, torch.zeros(1, 4, 6), data=data, time_major=True)
    assert by_name(p, "1.module").fr == pytest.approx(0.375, rel=EXACT)


# -- 8. energy -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("energy", "want"),
    [
        # defaults 4.6 / 0.9 / 0.23/64
        (None, dict(conv1=0.9 * 30, conv2=4.6 * 12 * 4, bits1=(0.23 / 64) * 120,
                    bits2=(0.23 / 64) * 6144)),
        (EnergyModel(e_mac_pj=2.0, e_ac_pj=0.5, e_bit_pj=0.01),
         dict(conv1=0.5 * 30, conv2=2.0 * 12 * 4, bits1=0.01 * 120, bits2=0.01 * 6144)),
    ],
    ids=["default", "custom"],
)
def test_energy_conventional_and_bit_budget(energy, want):
    """Known 1-bit spikes [T=4, B=5, 10]: 10 of the 20 (t, b) rows hold 5 ones each
    (50 of 200: fr = 0.25) -> fc1 QuantLinear(10 -> 3, no bias, b_w 4, weights all -0.5)
    -> fc2 nn.Linear(3 -> 4) (float weights, b_w 16).
      fc1: MACs 30, events = 0.25*30*4 = 30 -> conventional = E_AC * 30;
           NS-ACE = 4 * 0.25*30*1*4 = 120 -> bit budget = e_bit * 120.
      fc2: its input h = -0.5 * (ones in the row) is dense (negative), zero in the 10 empty
           rows: fr = 0.5, b_in 16: conventional = E_MAC * MACs * T_op = E_MAC * 12 * 4;
           NS-ACE = 16 * 0.5*12*16*4 = 6,144 -> bit budget = e_bit * 6,144."""
    rows = torch.zeros(20, 10)
    for i in range(0, 20, 2):
        rows[i, (i // 2) % 5 : (i // 2) % 5 + 5] = 1.0
    x = rows.reshape(4, 5, 10)
    assert float(x.sum()) == 50
    fc1 = QuantLinear(10, 3, bias=False, bits_w=4)
    with torch.no_grad():
        fc1.weight.fill_(-0.5)
    torch.manual_seed(0)
    model = nn.Sequential(Levels(1), FoldTime(fc1), FoldTime(nn.Linear(3, 4)))
    kwargs = {} if energy is None else {"energy": energy}
    p = profile(model, x, time_major=True, **kwargs)
    r1, r2 = by_name(p, "1.module"), by_name(p, "2.module")
    assert r1.spiking_input and not r2.spiking_input
    assert (r2.b_in, r2.b_w, r2.t_op, r2.macs) == (16, 16, 4, 12)
    assert r1.fr == pytest.approx(0.25, rel=EXACT)
    assert r2.fr == pytest.approx(0.5, rel=EXACT)
    assert r1.energy_conventional_pj == pytest.approx(want["conv1"], rel=EXACT)
    assert r2.energy_conventional_pj == pytest.approx(want["conv2"], rel=EXACT)
    assert r1.energy_bits_pj == pytest.approx(want["bits1"], rel=EXACT)
    assert r2.energy_bits_pj == pytest.approx(want["bits2"], rel=EXACT)
    assert p.energy_conventional_pj == pytest.approx(want["conv1"] + want["conv2"], rel=EXACT)
    assert p.energy_bits_pj == pytest.approx(want["bits1"] + want["bits2"], rel=EXACT)


def test_energy_model_rejects_negative():
    with pytest.raises(ValueError):
        EnergyModel(e_mac_pj=-1.0)


# -- 9. invalid arguments ----------------------------------------------------------------------
def test_invalid_arguments_raise_value_error():
    plain = nn.Sequential(nn.Linear(4, 2))
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="counting"):
        profile(plain, x, counting="foo")
    with pytest.raises(ValueError):
        profile(plain, x, counting="paper")  # no bits on a plain model
    with pytest.raises(ValueError, match="input_bits"):
        profile(plain, x, input_bits=0)
    with pytest.raises(ValueError):
        profile(plain, x, bits="9/1/1")  # b_w out of range


# -- 10. a foreign (SpikingJelly-style) model --------------------------------------------------
class SeqToANNContainer(nn.Module):
    """Like SpikingJelly's: run stateless modules on [T*B, ...]."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.module = nn.Sequential(*modules)

    def forward(self, x):
        t, b = x.shape[:2]
        y = self.module(x.flatten(0, 1))
        return y.view(t, b, *y.shape[1:])


class MultiStepIFNode(nn.Module):
    """Integrate-and-fire with a Heaviside, hard reset, {0, 1} spikes; no output_bits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = v + x[t]
            s = (v >= 1.0).float()
            v = v * (1.0 - s)
            out.append(s)
        spikes = torch.stack(out)
        self.seen.append(spikes.detach().clone())
        return spikes


def test_foreign_spiking_model_infers_binary_spikes():
    """[T=3, B=2, 2, 8, 8] input (5-D: time-major): conv1 2->8 k3 p1 (raw 8-bit input,
    MACs 2*8*9*64 = 9,216), IF node, conv2 8->8 k3 s2 p1 (8*8*9*16 = 9,216 MACs),
    IF node, flatten, linear 128->10 (1,280 MACs). Layers after the spikes: b_in = 1, t_op = 3,
    spiking input, float weights (b_w 16): S-ACE conv2 = 9,216*16*1*3 = 442,368;
    linear = 1,280*16*1*3 = 61,440."""
    torch.manual_seed(0)
    n1, n2 = MultiStepIFNode(), MultiStepIFNode()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = SeqToANNContainer(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.sn1 = n1
            self.c2 = SeqToANNContainer(nn.Conv2d(8, 8, 3, stride=2, padding=1))
            self.sn2 = n2
            self.fc = SeqToANNContainer(nn.Linear(128, 10))

        def forward(self, x):
            x = self.sn2(self.c2(self.sn1(self.c1(x))))
            return self.fc(x.flatten(2)).mean(0)

    x = torch.randn(3, 2, 2, 8, 8) * 3
    p = profile(Net(), x)
    c1, c2, fc = (by_name(p, n) for n in ("c1.module.0", "c2.module.0", "fc.module.0"))
    assert (c1.macs, c1.b_in, c1.t_op) == (9_216, 8, 3)
    assert (c2.macs, c2.b_in, c2.t_op, c2.b_w) == (9_216, 1, 3, 16)
    assert (fc.macs, fc.b_in, fc.t_op, fc.b_w) == (1_280, 1, 3, 16)
    assert c2.spiking_input and fc.spiking_input
    assert c2.s_ace == 442_368
    assert fc.s_ace == 61_440
    s1, s2 = n1.seen[-1], n2.seen[-1]
    assert c2.fr == pytest.approx(float((s1 != 0).sum()) / s1.numel(), rel=EXACT)
    assert fc.fr == pytest.approx(float((s2 != 0).sum()) / s2.numel(), rel=EXACT)


class MultiLevelNode(nn.Module):
    """A foreign neuron with 2-bit spikes: floor(clamp(x, 0, 3)) * 0.5, values {0, .5, 1, 1.5};
    declares nothing."""

    def forward(self, x):
        return torch.floor(torch.clamp(x, 0.0, 3.0)) * 0.5


def test_foreign_multilevel_spikes_inferred():
    """Foreign 2-bit spikes (levels 0..3 of scale 0.5) on [T=2, B=3, 6] -> nn.Linear(6 -> 4):
    b_in = 2 inferred from the values, t_op = 2, MACs 24, float weights:
    S-ACE = 24*16*2*2 = 1,536. Input levels by hand: [2, 3, 6] = 36 entries, values
    x = level + 0.25 for 6 x level 1, 6 x level 2, 6 x level 3 (18 non-zero: fr = 0.5);
    1-bits 6 + 6 + 12 = 24 of 72 slots: density = 1/3."""
    lv = level_tensor((2, 3, 6), {1: 6, 2: 6, 3: 6}, seed=5)
    x = torch.where(lv > 0, lv + 0.25, torch.full_like(lv, -1.0))
    model = nn.Sequential(MultiLevelNode(), nn.Linear(6, 4))
    p = profile(model, x, time_major=True)
    r = by_name(p, "1")
    assert (r.b_in, r.t_op, r.macs, r.b_w) == (2, 2, 24, 16)
    assert r.spiking_input
    assert r.s_ace == 1_536
    assert r.fr == pytest.approx(0.5, rel=EXACT)
    assert r.density == pytest.approx(1 / 3, rel=EXACT)


# -- 11. output ------------------------------------------------------------------------------
def test_to_dict_json_round_trip_and_table():
    """to_dict() survives json.dumps/loads unchanged; table() names every layer and has a total
    line; JSON layers carry the same names and S-ACE."""
    torch.manual_seed(1)
    p = profile(small_snn(4, 2, 4), torch.rand(SNN_INPUT))
    d = p.to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back == d
    assert [layer["name"] for layer in back["layers"]] == [STEM, CONV, HEAD]
    assert [layer["s_ace"] for layer in back["layers"]] == [1_769_472, 9_437_184, 5_120]
    assert back["totals"]["s_ace"] == 11_211_776
    assert back["params"] == p.params
    table = p.table()
    for name in (STEM, CONV, HEAD):
        assert name in table
    assert any(line.startswith("total") for line in table.splitlines())
    assert str(p) == table


def test_profile_restores_training_mode():
    """profile runs in eval mode and gives the model back in the mode it had."""
    model = small_snn(4, 2, 2)
    model.train()
    profile(model, torch.rand(SNN_INPUT))
    assert all(m.training for m in model.modules())


def test_a_long_trace_reports_progress(capsys):
    """With the progress interval at 0, every weight layer of a trace writes one line,
    counting up to the model's number of conv/linear layers (small_convnet: 5 convs and a
    head); without ``progress=`` a trace writes nothing."""
    import io

    from qsnn._progress import Progress
    from qsnn.models import create_model

    model = create_model("small_convnet", bits="4/2/2", num_classes=5, img_size=16,
                         widths=(8, 16, 16, 16, 16))  # fmt: skip
    stream = io.StringIO()
    profile(model, torch.rand(2, 3, 16, 16), progress=Progress("profile", stream=stream, every=0))
    lines = [line for line in stream.getvalue().splitlines() if "weight-layer calls" in line]
    assert len(lines) == 6
    assert lines[0].startswith("profile: traced 1 weight-layer calls, the model has 6 weight")
    assert lines[-1].startswith("profile: traced 6 weight-layer calls")
    profile(model, torch.rand(2, 3, 16, 16))
    assert capsys.readouterr().err == ""

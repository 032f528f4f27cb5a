"""Profile-based acceptance of the model zoo (issue 4): MACs, attention rows, paper counting,
and the widths that reach each layer."""

from __future__ import annotations

import pytest
import torch

from qsnn.metrics import profile
from qsnn.models import create_model

EAGER = {"neuron": {"kernel": "eager"}}


@pytest.fixture(scope="module")
def sew34():
    return create_model("sew_resnet34", bits="1/1/1", **EAGER)


def test_sew_resnet18_macs_per_step_at_224() -> None:
    """torchvision's ResNet-18 counts 1.814 G MACs at 224x224 (convs + fc); 1.82 G within 1 %."""
    model = create_model("sew_resnet18", bits="4/2/2", **EAGER)
    p = profile(model, torch.rand(1, 3, 224, 224))
    assert abs(p.macs - 1.82e9) / 1.82e9 < 0.01
    # Every layer after the stem reads b_s = 2-bit spikes (SEW ADD restricted to b_s).
    assert {r.b_in for r in p.layers[1:]} == {2}
    assert p.layers[0].t_op == 1 and {r.t_op for r in p.layers[1:]} == {2}


def test_paper_counting_scales_exactly_with_the_budget(sew34) -> None:
    """counting='paper': S-ACE = sum(MACs) * b_w * b_s * T, so 16/1/4 is 64x 1/1/1 exactly."""
    x = torch.rand(1, 3, 224, 224)
    low = profile(sew34, x, bits="1/1/1", counting="paper")
    sew34.set_bits("16/1/4")
    high = profile(sew34, x, bits="16/1/4", counting="paper")
    assert high.s_ace == 64 * low.s_ace
    assert low.s_ace == sum(r.macs for r in low.layers)  # b_w = b_s = T = 1


def test_spikformer_attention_rows_and_widening_residual_stream() -> None:
    """Q K^T and A V are 'matmul' rows (b_s x b_s, no weight bits); the residual stream
    x + attn(x) + mlp(x) widens: the q projection of block 0 reads SPS output + position
    embedding = two 2-bit spike tensors (max level 3 + 3 = 6: 3 bits), and every block adds
    two more 2-bit terms (max level +6 per block)."""
    model = create_model("spikformer_4_384_cifar", bits="4/2/2", **EAGER)
    p = profile(model, torch.rand(2, 3, 32, 32))
    rows = {r.name: r for r in p.layers}
    attn = [r for r in p.layers if r.kind == "matmul"]
    assert len(attn) == 2 * 4  # Q K^T and A V in each of the 4 blocks
    for r in attn:
        assert (r.b_w, r.b_in) == (2, 2)  # both operands restricted to b_s = 2 bits
        assert r.s_ace == r.macs * 2 * 2 * r.t_op
    linears = [r for r in p.layers if r.kind == "linear"]
    assert linears and all(r.b_w == 4 for r in linears)
    # Largest level of the stream entering block i: 6 + 6 * i; bits = bit_length.
    for block in range(4):
        expected = (6 + 6 * block).bit_length()
        assert rows[f"blocks.{block}.attn.q.linear"].b_in == expected
    assert rows["blocks.0.attn.proj.linear"].b_in == 2  # reads attn_lif spikes

"""Acceptance tests for the time-major helpers: ``FoldTime``, ``StaticEncoder``, ``TimeMean``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qsnn import FoldTime, QuantConv2d, QuantLinear, StaticEncoder, TimeMean


class CountingStem(nn.Module):
    """A stem that records how often and on what shape it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.lin(x)


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Conv2d(3, 5, 3, padding=1), (3, 2, 3, 6, 6)),
        (QuantConv2d(3, 4, 3, stride=2, bits_w=2), (2, 3, 3, 7, 7)),
        (nn.Linear(6, 4), (4, 3, 6)),
        (QuantLinear(6, 4, bits_w=1), (1, 2, 6)),
        (nn.MaxPool2d(2), (3, 2, 3, 4, 4)),
        (nn.Flatten(), (2, 3, 2, 2, 2)),
    ],
)
def test_fold_time_equals_loop_over_t(module, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    out = FoldTime(module)(x)
    ref = torch.stack([module(x[t]) for t in range(shape[0])])
    assert out.shape == ref.shape
    assert out.shape[:2] == shape[:2]
    torch.testing.assert_close(out, ref)


def test_fold_time_batch_norm_eval_equals_loop():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    x = torch.randn(3, 2, 3, 4, 4)
    torch.testing.assert_close(FoldTime(bn)(x), torch.stack([bn(x[t]) for t in range(3)]))


def test_fold_time_gradient_equals_loop():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x = torch.randn(3, 2, 4, requires_grad=True)
    FoldTime(lin)(x).pow(2).sum().backward()
    g_fold, gw_fold = x.grad.clone(), lin.weight.grad.clone()
    x.grad = None
    lin.weight.grad = None
    torch.stack([lin(x[t]) for t in range(3)]).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, g_fold)
    torch.testing.assert_close(lin.weight.grad, gw_fold)


def test_fold_time_registers_submodule():
    lin = nn.Linear(2, 2)
    f = FoldTime(lin)
    assert any(p is lin.weight for p in f.parameters())


@pytest.mark.parametrize("shape", [(5,), ()])
def test_fold_time_rejects_input_without_time(shape):
    with pytest.raises(ValueError):
        FoldTime(nn.Identity())(torch.randn(shape))


@pytest.mark.parametrize("T", [1, 2, 5])
def test_static_encoder_repeats(T):
    x = torch.randn(3, 2, 4, 4)
    out = StaticEncoder(T)(x)
    assert out.shape == (T, 3, 2, 4, 4)
    for t in range(T):
        assert torch.equal(out[t], x)


@pytest.mark.parametrize("T", [1, 4])
def test_static_encoder_stem_runs_once(T):
    stem = CountingStem()
    x = torch.randn(2, 3)
    out = StaticEncoder(T, stem=stem)(x)
    assert stem.calls == [(2, 3)]  # once, on [B, ...] (no time dim)
    assert out.shape == (T, 2, 4)
    ref = stem.lin(x)
    for t in range(T):
        torch.testing.assert_close(out[t], ref)


def test_static_encoder_gradient_sums_over_steps():
    """out[t] = x for every t, so d(sum_t c_t * out[t])/dx = sum_t c_t."""
    x = torch.randn(2, 3, requires_grad=True)
    c = torch.tensor([1.0, 2.0, 3.5]).view(3, 1, 1)
    (StaticEncoder(3)(x) * c).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2, 3), 6.5))


@pytest.mark.parametrize("T", [0, -1, 1.5, True])
def test_static_encoder_bad_time_steps(T):
    with pytest.raises(ValueError):
        StaticEncoder(T)


def test_time_mean_hand_example():
    """x[:, 0] over T = 3 steps = [1, 2, 6] -> mean 3; x[:, 1] = [0, 0, 3] -> 1."""
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [6.0, 3.0]]).view(3, 2, 1)
    assert TimeMean()(x).view(-1).tolist() == [3.0, 1.0]


def test_time_mean_shapes():
    x = torch.randn(4, 2, 5)
    out = TimeMean()(x)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, sum(x[t] for t in range(4)) / 4)


@pytest.mark.parametrize("shape", [(5,), ()])
def test_time_mean_rejects_input_without_time(shape):
    with pytest.raises(ValueError):
        TimeMean()(torch.randn(shape))


def test_pipeline_shapes():
    model = nn.Sequential(
        StaticEncoder(3),
        FoldTime(QuantConv2d(1, 4, 3, padding=1, bits_w=2)),
        FoldTime(nn.Flatten()),
        FoldTime(QuantLinear(4 * 5 * 5, 2, bits_w=2)),
        TimeMean(),
    )
    assert model(torch.randn(6, 1, 5, 5)).shape == (6, 2)

"""The fused (torch.compile) neuron kernel against the eager one and a plain-Python loop.

Both kernels implement the same equations (paper Eq. 6-7); in float64 with theta and beta that
are powers of two every operation is exact, so forward spikes and BPTT gradients must be equal
bit for bit. Skipped where torch.compile cannot build a CPU kernel (no C++ toolchain).
"""

from __future__ import annotations

import math

import pytest
import torch

from qsnn import SpikeNeuron


def _compile_works() -> bool:
    try:
        f = torch.compile(lambda x: torch.floor(x) * 2, dynamic=True)
        return torch.equal(f(torch.tensor([1.5, -0.5])), torch.tensor([2.0, -2.0]))
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _compile_works(), reason="torch.compile unavailable here")


def _python_reference(x: torch.Tensor, bits_s: int, beta: float, theta: float, hard: bool):
    """Per-element loop over t; returns spikes [T, N] (float64)."""
    levels = 2**bits_s - 1
    flat = x.reshape(x.shape[0], -1).tolist()
    out = [[0.0] * len(flat[0]) for _ in flat]
    for n in range(len(flat[0])):
        v = 0.0
        for t in range(len(flat)):
            h = beta * v + flat[t][n]
            k = min(max(math.floor(h / theta), 0), levels)
            out[t][n] = k * theta
            v = (0.0 if k > 0 else h) if hard else h - k * theta
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_fused_equals_eager_and_reference(steps: int, reset: str) -> None:
    torch.manual_seed(steps)
    base = (torch.randn(steps, 4, 3, 6, 6, dtype=torch.float64) * 3).requires_grad_()
    grads, outs = {}, {}
    for kernel in ("eager", "fused"):
        x = base.detach().clone().requires_grad_()
        neuron = SpikeNeuron(2, tau=2.0, theta=0.5, reset=reset, learn_theta=True, kernel=kernel)
        y = neuron(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs[kernel], grads[kernel] = y.detach(), (x.grad, neuron.level.log2_theta.grad)
    ref = _python_reference(base.detach(), 2, 0.5, 0.5, reset == "hard")
    assert torch.equal(outs["eager"], ref)
    assert torch.equal(outs["fused"], ref)
    assert torch.equal(grads["fused"][0], grads["eager"][0])
    assert torch.allclose(grads["fused"][1], grads["eager"][1], rtol=1e-12, atol=1e-12)


def test_fused_keeps_channels_last_and_bf16() -> None:
    conv_out = torch.randn(8, 16, 5, 5).to(memory_format=torch.channels_last).bfloat16()
    x = conv_out.unflatten(0, (2, 4)).requires_grad_()  # [T*B, C, H, W] -> [T, B, C, H, W]
    y = SpikeNeuron(1, kernel="fused")(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16
    assert y[1].is_contiguous(memory_format=torch.channels_last)
    assert x.grad[1].is_contiguous(memory_format=torch.channels_last)
    eager = SpikeNeuron(1, kernel="eager")(x.detach())
    assert torch.equal(y.detach(), eager)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_restricted_add_equals_hand_rule(dtype: torch.dtype) -> None:
    """SEW ADD at b_s = 2, theta = 0.5, on a channels-last [T, B, C, H, W] pair: the fused
    kernel gives clamp(round(2a) + round(2b), 0, 3) / 2, with gradient 1 exactly where the level
    sum lies in [0, 3], like the eager kernel, and keeps the layout."""
    from qsnn import _neuron_kernels as kernels

    torch.manual_seed(0)
    shape = (2, 3, 4, 5, 5)
    a = (torch.randint(0, 4, shape) * 0.5).to(dtype)
    b = (torch.randint(0, 4, shape) * 0.5).to(dtype)
    a = a.flatten(0, 1).to(memory_format=torch.channels_last).view(shape)
    b = b.flatten(0, 1).to(memory_format=torch.channels_last).view(shape)
    levels = (2 * a.double()).round() + (2 * b.double()).round()
    expected = levels.clamp(0, 3) / 2
    theta = torch.tensor(0.5, dtype=kernels.membrane_dtype(dtype))
    for kernel in ("eager", "fused"):
        out, inside = kernels.run("restricted_add", kernel, True, a.numel(), a, b, theta, 3, dtype)
        assert out.dtype == dtype and out.stride() == a.stride()
        assert torch.equal(out.double(), expected)
        assert torch.equal(inside, levels <= 3)


def test_a_new_variant_says_that_it_compiles(caplog) -> None:
    """The first call of a kernel variant compiles for seconds; it says so, once, and how long
    it took (issue 18: the first training steps are no longer silently slow)."""
    import logging

    from qsnn import _neuron_kernels as kernels

    fresh = kernels.FusedKernels()  # a cache of its own: this variant is new to it
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    theta = torch.tensor(0.5, dtype=torch.float64)
    args = (x, x, theta, 3, torch.float64)
    with caplog.at_level(logging.INFO, logger="qsnn._neuron_kernels"):
        first = fresh("restricted_add", args, required=True)
        again = fresh("restricted_add", args, required=True)
    text = [r.getMessage() for r in caplog.records]
    assert sum("compiling the fused restricted_add neuron kernel" in t for t in text) == 1
    assert (
        sum(t.startswith("compiled the fused restricted_add neuron kernel in") for t in text) == 1
    )
    assert torch.equal(first[0], again[0])


def test_a_known_variant_that_recompiles_stays_fused(caplog) -> None:
    """Dynamo specializes sizes of 1, so one variant (same dtypes and constants) holds a graph
    for a ``[1, N]`` input broadcast over ``T`` and another for ``[T, N]``. The second graph is
    made on a call of a variant already compiled; that call must run under qsnn's graph limit
    too, or a process that has met many variants falls back to eager kernels silently
    (measured: a 1/1/4 learned-step model 2.5x slower after eleven other models). Dynamo's own
    limit is set to 1 here, so any recompile outside qsnn's limit would fall back."""
    import logging

    from qsnn import _neuron_kernels as kernels

    fresh = kernels.FusedKernels()
    theta = torch.tensor(0.5)
    broadcast = torch.randn(1, 6)  # one step, broadcast over T = 3
    full = torch.randn(3, 6)
    with torch._dynamo.config.patch(recompile_limit=1), caplog.at_level(logging.WARNING):
        for x in (broadcast, full):
            args = (x, 3, theta, 0.5, 0.0, 3, True, torch.float32)
            fused = fresh("forward", args, required=True)
            assert torch.equal(fused, kernels.forward_kernel(*args))
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage()]
    assert len(fresh.ready) == 1  # one variant, two graphs

"""NIR export: a binary-spike (``b_s = 1``) model as a graph of the Neuromorphic Intermediate
Representation (``nir`` 1.x), for snnTorch, Norse, Sinabs, Lava, SpiNNaker2, Xylo and others.

What the graph holds, built from the model's declared stages (``qsnn.models.stages``, checked
against ``forward`` by ``check_stages`` first):

- ``Conv2d`` / ``Affine`` nodes with the layer's weights as their real values, the ``b_w``-bit
  fake-quantized ``w_q = Delta * q`` (paper Eq. 5). Batch norm in evaluation mode is folded into
  the layer before it, ``g = gamma / sqrt(var + eps)``:

      BN(W x + b) = (g W) x + g (b - mean) + beta,

  checked numerically on random input for every folded layer (a mismatch is an error).
- A neuron node per ``SpikeNeuron``. qsnn's neuron (paper Eq. 1 / Eq. 6-7 at ``b_s = 1``):

      h_t = beta v_{t-1} + I_t,   z_t = [h_t >= theta],   s_t = theta z_t,
      v_t = v_reset where z_t else h_t                     (hard reset, beta = 1/tau)

  NIR's LIF is ``tau_n dv/dt = (v_leak - v) + r I``, fire ``z = [v > v_threshold]``, reset to
  ``v_reset``; its forward-Euler step at ``dt`` is ``v_t = (1 - dt/tau_n) v_{t-1} + (dt/tau_n) r
  I_t``, which is qsnn's update when

      tau_n = dt / (1 - beta),   r = 1 / (1 - beta),   v_leak = 0,   v_threshold = theta.

  ``tau = 1`` (``beta = 1``, integrate-and-fire) is NIR's ``IF`` (``dv/dt = r I``) with
  ``r = 1/dt``. The time step is :data:`DT` (``1e-4`` s, the step snnTorch's importer assumes),
  recorded in the graph's ``metadata["dt"]``. NIR spikes are ``z`` in {0, 1}; qsnn sends
  ``theta z``, so the ``theta`` of the neuron feeding a layer is multiplied into that layer's
  weights (pools and flatten are linear and carry it through).
- ``AvgPool2d`` for average pooling (``AdaptiveAvgPool2d`` when the map divides evenly),
  ``Flatten`` (NIR dims exclude the batch: ``start_dim = 0``). Max pooling of binary spikes
  (``small_convnet``, the ImageNet-stem SEW-ResNets) is the OR of each window: a ``SumPool2d``
  (the window's spike count) into an ``IF`` node with ``v_threshold = 0.5`` and
  ``v_reset = 0``, exact for the same reason as the OR below.
- Residual sums on a membrane (ResNet-19's ``sn(bn(conv(x)) + shortcut(x))``): both branches
  are edges into the neuron node, which NIR sums. An identity shortcut is a 1x1 ``Conv2d`` of
  weight ``theta I`` (the spikes times their step, exactly).
- SEW-ResNet's restricted ADD at ``b_s = 1`` is the logical OR of two spike trains (SPEC §6):
  an ``IF`` node with ``r = 1/dt``, ``v_threshold = 0.5`` and ``v_reset = 0`` computes it
  exactly (its membrane is ``z_a + z_b`` in {0, 1, 2} each step and never keeps a remainder).
- The readout: the ``Output`` node carries the head's per-step logits ``W s_t + b``; qsnn's
  logits are their mean over the ``T`` steps (``metadata["readout"]``), which a consumer takes
  after running ``metadata["time_steps"]`` steps. A static image is presented at every step
  (direct encoding), event frames one per step.

What NIR cannot express is refused with a ``ValueError`` naming the reason: multi-bit spikes
(``b_s > 1``: NIR's neurons emit binary events, it has no multi-level spike node), soft
(subtractive) reset (NIR neurons reset to ``v_reset``), max pooling of anything but binary
spikes (NIR has no max-pooling node), stateless
level quantizers and models without declared stages (Spikformer's spiking self-attention
multiplies two spike tensors; no NIR node computes that).

One difference no parameter can remove: qsnn fires at ``h_t >= theta`` (``floor(h/theta) >= 1``)
and NIR at ``v > v_threshold``, so a membrane exactly equal to the threshold fires in qsnn and
not in NIR. With real-valued folded biases this is rare (none in the digits measurements);
``check_export`` measures the agreement of predictions on the test split. Folding batch norm
rounds currents differently from qsnn's ``bn(conv(x))`` (float32, about 1e-7 relative), which
could flip a spike only for a membrane that close to the threshold.

The independent consumer (:func:`nir_module`) reads the file with ``nir.read`` and builds a
``torch.fx`` module with ``nirtorch.nir_to_torch`` and :func:`node_map`, node modules written
from the NIR node equations above (forward Euler at the graph's ``dt``), not from qsnn's code.
nirtorch 2.6's own ``Affine`` mapping is not used (it leaves the bias unset). snnTorch 1.0's
importer (``snntorch.import_nir.import_from_nir``) reads the LIF graphs correctly, one sample
at a time (it applies NIR's batch-free ``Flatten`` dims to the batched tensor), but maps ``IF``
to a leaky neuron with ``beta = 0.9`` that accepts only ``r = 1``, so it cannot run ``tau = 1``
models or SEW-ResNet's OR nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import require

#: Time step (seconds) of the forward-Euler discretisation the neuron parameters assume.
DT = 1e-4

#: What ``metadata["readout"]`` says about the ``Output`` node.
READOUT = "mean over the time_steps steps of the output (the head's per-step logits)"

__all__ = ["DT", "READOUT", "nir_module", "nir_run", "node_map", "save_nir", "to_nir"]


def _nir() -> Any:
    return require("nir", "NIR export")


@dataclass(frozen=True)
class _Ref:
    """A tensor of the qsnn forward pass inside the graph being built: the node that makes it,
    its shape without the batch, and ``scale`` such that qsnn's value is ``scale * node_output``
    (``theta`` for a neuron's spikes, 1 for currents and logits)."""

    node: str
    shape: tuple[int, ...]
    scale: float = 1.0
    spikes: bool = False


class _Builder:
    """Collects NIR nodes and edges while walking a model's stages."""

    def __init__(self, nir: Any, dt: float) -> None:
        self.nir, self.dt = nir, dt
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self._count = 0

    def add(self, kind: str, node: Any, *inputs: _Ref) -> str:
        name = f"{kind}{self._count}"
        self._count += 1
        self.nodes[name] = node
        self.edges.extend((ref.node, name) for ref in inputs)
        return name

    # -- stateless layers -----------------------------------------------------------------

    def layer(self, x: _Ref, layer: nn.Module, bn: nn.Module | None, where: str) -> _Ref:
        """A ``Conv2d`` or ``Linear`` (quantized or plain) with an optional batch norm folded
        in, reading ``x`` (its ``scale`` multiplied into the weights)."""
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise ValueError(
                    f"NIR export: {where} pads with {layer.padding_mode!r}; NIR's "
                    "Conv2d pads with zeros only"
                )
            if not isinstance(bn, (nn.BatchNorm2d, type(None))):
                raise ValueError(
                    f"NIR export: {where}: a {type(bn).__name__} after a conv has no exact NIR node"
                )
        elif isinstance(layer, nn.Linear):
            if not isinstance(bn, (nn.BatchNorm1d, type(None))):
                raise ValueError(
                    f"NIR export: {where}: a {type(bn).__name__} after a linear "
                    "layer has no exact NIR node"
                )
        else:
            raise ValueError(
                f"NIR export: {where} ({type(layer).__name__}) has no exact NIR "
                "node (Conv2d and Linear layers only)"
            )
        weight, bias = _folded(layer, bn, where)
        _check_folding(layer, bn, weight, bias, x.shape, where)
        weight = weight * x.scale  # the input spikes are theta * z; NIR's are z
        w = weight.detach().cpu().numpy().astype(np.float32)
        b = bias.detach().cpu().numpy().astype(np.float32)
        if isinstance(layer, nn.Conv2d):
            if len(x.shape) != 3:
                raise ValueError(f"NIR export: {where} expects [C, H, W] input, got {x.shape}")
            node = self.nir.Conv2d(
                input_shape=tuple(int(v) for v in x.shape[1:]),
                weight=w,
                stride=tuple(int(v) for v in layer.stride),
                padding=tuple(int(v) for v in layer.padding),
                dilation=tuple(int(v) for v in layer.dilation),
                groups=int(layer.groups),
                bias=b,
            )
            out = _conv_shape(layer, x.shape)
            return _Ref(self.add("conv", node, x), out)
        if len(x.shape) != 1:
            raise ValueError(f"NIR export: {where} expects flat [F] input, got {x.shape}")
        return _Ref(self.add("affine", self.nir.Affine(weight=w, bias=b), x), (w.shape[0],))

    def identity_scale(self, x: _Ref) -> _Ref:
        """``x`` at scale 1: spikes ``theta z`` as a 1x1 conv (or diagonal affine) of weight
        ``theta I``, for a residual sum on a membrane."""
        if x.scale == 1.0:
            return x
        chans = x.shape[0]
        eye = np.eye(chans, dtype=np.float32) * np.float32(x.scale)
        zeros = np.zeros(chans, dtype=np.float32)
        if len(x.shape) == 3:
            node = self.nir.Conv2d(
                input_shape=tuple(x.shape[1:]),
                weight=eye[:, :, None, None],
                stride=(1, 1),
                padding=(0, 0),
                dilation=(1, 1),
                groups=1,
                bias=zeros,
            )
            return _Ref(self.add("conv", node, x), x.shape)
        return _Ref(self.add("affine", self.nir.Affine(weight=eye, bias=zeros), x), x.shape)

    def pool(self, x: _Ref, pool: nn.Module, where: str) -> _Ref:
        """Average pooling as NIR's ``AvgPool2d``; max pooling of binary spikes as their OR
        (:meth:`max_pool`); any other max pool refused."""
        if isinstance(pool, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            return self.max_pool(x, pool, where)
        _, height, width = x.shape
        if isinstance(pool, nn.AdaptiveAvgPool2d):
            oh, ow = (
                (pool.output_size, pool.output_size)
                if isinstance(pool.output_size, int)
                else pool.output_size
            )
            oh, ow = oh or height, ow or width
            if height % oh or width % ow:
                raise ValueError(
                    f"NIR export: {where} adapts {height}x{width} to {oh}x{ow}, "
                    "which no fixed-kernel AvgPool2d computes"
                )
            kernel = stride = (height // oh, width // ow)
            padding = (0, 0)
        elif isinstance(pool, nn.AvgPool2d):
            kernel = _pair(pool.kernel_size)
            stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
            padding = _pair(pool.padding)
            if (
                pool.ceil_mode
                or pool.divisor_override is not None
                or (any(padding) and not pool.count_include_pad)
            ):
                raise ValueError(
                    f"NIR export: {where} ({pool}) averages over a window NIR's "
                    "AvgPool2d does not (ceil_mode, divisor_override or padding "
                    "left out of the count)"
                )
        else:
            raise ValueError(f"NIR export: {where} ({type(pool).__name__}) has no NIR node")
        node = self.nir.AvgPool2d(
            kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding)
        )
        out = _pooled_shape(x.shape, kernel, stride, padding)
        # Linear, so the scale carries through; but a window's mean of spikes is k/n, not a
        # binary spike: a max pool or an OR after it would not be exact.
        return _Ref(self.add("avgpool", node, x), out, x.scale, False)

    def max_pool(self, x: _Ref, pool: nn.Module, where: str) -> _Ref:
        """Max pooling of binary spikes ``theta z`` (``z`` in {0, 1}) is ``theta`` times the OR
        of each window: a ``SumPool2d`` (the window's spike count) into an ``IF`` node with
        threshold 0.5 that resets to 0, so it fires exactly when the count is >= 1 and keeps
        no state. NIR has no max-pooling node, so anything else is refused."""
        if not x.spikes:
            raise ValueError(
                f"NIR export: {where} max-pools values that are not binary spikes; NIR has no "
                "max-pooling node (only the max of binary spikes, an OR, is exact)"
            )
        if isinstance(pool, nn.AdaptiveMaxPool2d) or pool.ceil_mode or _pair(pool.dilation) != (
            1, 1,
        ):  # fmt: skip
            raise ValueError(
                f"NIR export: {where} ({pool}) pools over windows NIR's SumPool2d does not "
                "(adaptive, ceil_mode or dilation)"
            )
        kernel = _pair(pool.kernel_size)
        stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        padding = _pair(pool.padding)  # max pads with -inf, the sum with 0: same OR for z >= 0
        node = self.nir.SumPool2d(
            kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding)
        )
        out = _pooled_shape(x.shape, kernel, stride, padding)
        counts = _Ref(self.add("sumpool", node, x), out)
        return _Ref(self.add("or", self._or_gate(out), counts), out, x.scale, True)

    def _or_gate(self, shape: tuple[int, ...]) -> Any:
        """An ``IF`` node that fires exactly when its integer input (a spike count) is >= 1:
        ``r = 1/dt`` (the membrane is the input), threshold 0.5, reset to 0 (no remainder)."""
        full = np.ones(shape, dtype=np.float64)
        return self.nir.IF(r=full / self.dt, v_threshold=full * 0.5, v_reset=full * 0.0)

    def flatten(self, x: _Ref) -> _Ref:
        node = self.nir.Flatten(input_type={"input": np.array(x.shape)}, start_dim=0, end_dim=-1)
        return _Ref(self.add("flatten", node, x), (int(np.prod(x.shape)),), x.scale, x.spikes)

    # -- neurons --------------------------------------------------------------------------

    def neuron(self, sn: nn.Module, where: str, *inputs: _Ref) -> _Ref:
        """A ``SpikeNeuron`` as NIR ``LIF`` (``tau > 1``) or ``IF`` (``tau = 1``) summing
        ``inputs`` (all at scale 1) on its membrane."""
        from ..models.layers import LevelQuantizer
        from ..neurons import SpikeNeuron

        if isinstance(sn, LevelQuantizer) or not isinstance(sn, SpikeNeuron):
            raise ValueError(
                f"NIR export: {where} ({type(sn).__name__}) is not a spiking "
                "neuron with a membrane; NIR has no node for it"
            )
        if sn.bits_s != 1:
            raise ValueError(
                f"NIR export: {where} fires {sn.bits_s}-bit spikes (b_s = {sn.bits_s}); NIR's "
                "neurons emit binary spikes and NIR has no multi-bit spike node, so only b_s = 1 "
                "models can be exported"
            )
        if sn.reset != "hard":
            raise ValueError(
                f"NIR export: {where} resets by subtraction (reset='soft'); NIR's "
                "IF/LIF neurons reset to v_reset, so only reset='hard' is exact"
            )
        shape = inputs[0].shape
        if any(ref.shape != shape or ref.scale != 1.0 for ref in inputs):
            raise ValueError(f"NIR export: {where} sums inputs of different shapes or scales")
        full = np.ones(shape, dtype=np.float64)
        theta, v_reset, beta = float(sn.theta), float(sn.v_reset), 1.0 / float(sn.tau)
        if beta == 1.0:  # integrate-and-fire: dv/dt = r I, Euler v += dt r I
            node = self.nir.IF(r=full / self.dt, v_threshold=full * theta, v_reset=full * v_reset)
            kind = "if"
        else:  # tau_n dv/dt = -v + r I, Euler v = (1 - dt/tau_n) v + (dt/tau_n) r I
            node = self.nir.LIF(
                tau=full * (self.dt / (1.0 - beta)),
                r=full / (1.0 - beta),
                v_leak=full * 0.0,
                v_threshold=full * theta,
                v_reset=full * v_reset,
            )
            kind = "lif"
        return _Ref(self.add(kind, node, *inputs), shape, theta, True)

    def spike_or(self, a: _Ref, b: _Ref, theta: float, where: str) -> _Ref:
        """The restricted ADD of two binary spike trains on one grid: their OR, as an ``IF``
        node with threshold 0.5 (membrane ``z_a + z_b`` in {0, 1, 2}, reset to 0)."""
        if not (a.spikes and b.spikes) or a.shape != b.shape:
            raise ValueError(
                f"NIR export: {where} adds tensors that are not two spike trains "
                "of one shape; only an OR of binary spikes has an exact NIR node"
            )
        if not np.isclose(a.scale, theta) or not np.isclose(b.scale, theta):
            raise ValueError(
                f"NIR export: {where} adds spikes of steps {a.scale:g} and "
                f"{b.scale:g} on a grid of {theta:g}; not an OR of binary spikes"
            )
        return _Ref(self.add("or", self._or_gate(a.shape), a, b), a.shape, float(theta), True)


def _pooled_shape(
    shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int],
) -> tuple[int, int, int]:  # fmt: skip
    """``[C, H, W]`` after a pooling window (floor mode)."""
    chans, height, width = shape
    return (
        chans,
        (height + 2 * padding[0] - kernel[0]) // stride[0] + 1,
        (width + 2 * padding[1] - kernel[1]) // stride[1] + 1,
    )


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_shape(conv: nn.Conv2d, shape: tuple[int, ...]) -> tuple[int, int, int]:
    with torch.no_grad():
        out = F.conv2d(
            torch.zeros(1, *shape),
            torch.zeros_like(conv.weight, device="cpu"),
            None,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )
    return tuple(int(v) for v in out.shape[1:])  # type: ignore[return-value]


def _weight(layer: nn.Module) -> Tensor:
    """The weight the layer computes with: ``Delta * q`` for a quantized layer (paper Eq. 5)."""
    get = getattr(layer, "quantized_weight", None)
    return (get() if callable(get) else layer.weight).detach().float().cpu()


def _folded(layer: nn.Module, bn: nn.Module | None, where: str) -> tuple[Tensor, Tensor]:
    """``(W', b')`` of ``bn(layer(x))`` as one layer: ``W' = g W``, ``b' = g (b - mean) +
    beta`` with ``g = gamma / sqrt(running_var + eps)`` (evaluation-mode batch norm)."""
    weight = _weight(layer)
    bias = (
        layer.bias.detach().float().cpu()
        if layer.bias is not None
        else torch.zeros(weight.shape[0])
    )
    if bn is None:
        return weight, bias
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"NIR export: the batch norm after {where} keeps no running statistics "
            "(it normalises with each batch's), so it folds into no fixed weight"
        )
    mean, var = bn.running_mean.detach().float().cpu(), bn.running_var.detach().float().cpu()
    gamma = bn.weight.detach().float().cpu() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().float().cpu() if bn.bias is not None else torch.zeros_like(mean)
    g = gamma / torch.sqrt(var + bn.eps)
    return weight * g.view(-1, *([1] * (weight.dim() - 1))), g * (bias - mean) + beta


@torch.no_grad()
def _check_folding(
    layer: nn.Module,
    bn: nn.Module | None,
    weight: Tensor,
    bias: Tensor,
    shape: tuple[int, ...],
    where: str,
) -> None:
    """Compare ``bn(layer(x))`` (the model's own modules, eval mode) with the folded layer on
    random input; raise if they differ beyond float32 rounding."""
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    device = next(layer.parameters()).device
    was = (layer.training, bn.training if bn is not None else False)
    layer.eval()
    if bn is not None:
        bn.eval()
    try:
        ref = layer(x.to(device)).float()
        ref = (bn(ref) if bn is not None else ref).cpu()
    finally:
        layer.train(was[0])
        if bn is not None:
            bn.train(was[1])
    if isinstance(layer, nn.Conv2d):
        got = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        got = F.linear(x, weight, bias)
    tol = 1e-4 * (1.0 + float(ref.abs().max()))
    if not torch.allclose(got, ref, rtol=0, atol=tol):
        raise ValueError(
            f"NIR export: folding the batch norm into {where} changed its output "
            f"by {float((got - ref).abs().max()):.3g}; not exported"
        )


def _chain(b: _Builder, x: _Ref, module: nn.Module, where: str) -> _Ref:
    """A stateless first layer (a stem's ``conv_bn``): a ``ConvBN``, a conv/linear, a batch
    norm after one, a flatten, or an ``nn.Sequential`` of those."""
    from ..models.layers import ConvBN

    if isinstance(module, ConvBN):
        return b.layer(x, module.conv, module.bn, f"{where}.conv")
    parts = list(module.named_children()) if isinstance(module, nn.Sequential) else [("", module)]
    i = 0
    while i < len(parts):
        name, part = parts[i]
        label = f"{where}.{name}" if name else where
        if isinstance(part, (nn.Conv2d, nn.Linear)):
            nxt = parts[i + 1][1] if i + 1 < len(parts) else None
            bn = nxt if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) else None
            x = b.layer(x, part, bn, label)
            i += 2 if bn is not None else 1
            continue
        if isinstance(part, nn.Flatten):
            if part.start_dim != 1 or part.end_dim != -1:
                raise ValueError(
                    f"NIR export: {label} flattens dims {part.start_dim}.."
                    f"{part.end_dim}; only a flatten of every non-batch dim"
                )
            x = b.flatten(x)
        elif isinstance(part, ConvBN):
            x = b.layer(x, part.conv, part.bn, label)
        elif isinstance(part, nn.Identity):
            pass
        else:
            raise ValueError(f"NIR export: {label} ({type(part).__name__}) has no exact NIR node")
        i += 1
    return x


def _stages(b: _Builder, x: _Ref, stages: Sequence[Any], where: str) -> _Ref:
    """Emit NIR nodes for the declared ``stages`` reading ``x``; returns the last tensor."""
    from ..models import stages as st

    for i, stage in enumerate(stages):
        label = f"{where}[{i}] {type(stage).__name__}"
        if isinstance(stage, st.Stem):
            stem = stage.module
            x = (
                _chain(b, x, stem.encoder.stem, f"{label}.stem")
                if stem.encoder.stem is not None
                else x
            )
            x = b.neuron(stem.sn, f"{label}.sn", b.identity_scale(x))
            if stem.pool is not None:
                x = b.pool(x, stem.pool.module, f"{label}.pool")
        elif isinstance(stage, st.ConvSpike):
            m = stage.module
            x = b.neuron(m.sn, f"{label}.sn", b.layer(x, m.conv, m.bn, f"{label}.conv"))
        elif isinstance(stage, st.Pool):
            x = b.pool(x, stage.module.module, label)
        elif isinstance(stage, st.Flatten):
            x = b.flatten(x)
        elif isinstance(stage, st.LinearSpike):
            x = b.neuron(
                stage.sn, f"{label}.sn", b.layer(x, stage.linear, stage.bn, f"{label}.linear")
            )
        elif isinstance(stage, st.MembraneResidual):
            body = _stages(b, x, stage.body, f"{label}.body")
            main = b.layer(body, stage.conv.conv, stage.conv.bn, f"{label}.conv")
            short = (
                b.identity_scale(x)
                if stage.shortcut is None
                else b.layer(x, stage.shortcut.conv, stage.shortcut.bn, f"{label}.shortcut")
            )
            x = b.neuron(stage.sn, f"{label}.sn", main, short)  # NIR sums the two edges
        elif isinstance(stage, st.SEWResidual):
            if stage.add.bits_s != 1:
                raise ValueError(
                    f"NIR export: {label} is a {stage.add.bits_s}-bit restricted ADD (b_s = "
                    f"{stage.add.bits_s}); NIR has no multi-bit spike node, so only b_s = 1 "
                    "models can be exported"
                )
            body = _stages(b, x, stage.body, f"{label}.body")
            short = _stages(b, x, stage.shortcut, f"{label}.shortcut") if stage.shortcut else x
            x = b.spike_or(body, short, float(stage.add.theta), label)
        elif isinstance(stage, st.Head):
            x = b.layer(x, stage.linear, None, f"{label}.linear")
        else:
            raise ValueError(f"NIR export: {label} has no exact NIR node")
    return x


def _declared_stages(model: nn.Module) -> tuple[Any, ...]:
    from ..models.stages import check_stages

    name = type(model).__name__
    try:
        stages = model.stages()  # type: ignore[operator]
    except (AttributeError, TypeError, ValueError) as err:
        why = (
            "its spiking self-attention multiplies two spike tensors (Q K^T, attention "
            "times V), which no NIR node computes"
            if "Spikformer" in name
            else "it declares no stages (qsnn.models.stages) to read its layers from"
        )
        raise ValueError(f"NIR export: {name} cannot be exported to NIR: {why}") from err
    check_stages(model)  # the declaration must be what forward computes
    return stages


@torch.no_grad()
def to_nir(
    model: nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    dt: float = DT,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """The ``nir.NIRGraph`` of a ``b_s = 1`` qsnn model (see the module docstring for the
    mapping); ``ValueError`` naming the reason for anything NIR cannot express exactly.

    ``input_shape`` is one sample ``(C, H, W)`` (default ``model.input_size``); ``metadata``
    is added to the graph's (``producer``, ``dt``, ``time_steps``, ``readout``)."""
    nir = _nir()
    was_training = model.training
    model.eval()
    try:
        stages = _declared_stages(model)
        shape = tuple(int(v) for v in (input_shape or model.input_size))  # type: ignore[attr-defined]
        b = _Builder(nir, float(dt))
        b.nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
        x = _stages(b, _Ref("input", shape), stages, "stages")
    finally:
        model.train(was_training)
    if x.spikes:
        raise ValueError("NIR export: the model ends in spikes, not the head's logits")
    b.nodes["output"] = nir.Output(output_type={"output": np.array(x.shape)})
    b.edges.append((x.node, "output"))
    meta = {
        "producer": "qsnn",
        "dt": float(dt),
        "time_steps": int(getattr(model, "time_steps", 1)),
        "readout": READOUT,
        **(metadata or {}),
    }
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=meta)


def save_nir(model: nn.Module, info: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the model's NIR graph (``to_nir``) to ``path`` (HDF5, ``nir.write``), with the
    run's allocation and input normalization in its metadata."""
    import json

    nir = _nir()
    args = info.get("model_args", {})
    meta = {
        "model": str(args.get("name", type(model).__name__)),
        "bits": str(args.get("bits", "")),
        "input": json.dumps(info.get("input", {})),
    }
    sample = info.get("input", {}).get("sample_shape")
    shape = sample[-3:] if sample else None
    graph = to_nir(model, input_shape=shape, metadata=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, graph)
    return path


# -- the independent consumer: NIR node equations -> torch modules ----------------------------


class _NIRAffine(nn.Module):
    """NIR ``Affine``: ``y = W x + b``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.as_tensor(np.asarray(weight, np.float32)), requires_grad=False
        )
        b = None if bias is None else torch.as_tensor(np.asarray(bias, np.float32))
        self.bias = None if b is None else nn.Parameter(b, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class _NIRConv2d(nn.Module):
    """NIR ``Conv2d``: 2-d cross-correlation with zero padding, plus bias."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.as_tensor(np.asarray(node.weight, np.float32)), requires_grad=False
        )
        self.bias = nn.Parameter(
            torch.as_tensor(np.asarray(node.bias, np.float32)), requires_grad=False
        )
        pad = node.padding
        self.padding = pad if isinstance(pad, str) else tuple(int(v) for v in np.ravel(pad))
        self.stride = tuple(int(v) for v in np.ravel(node.stride))
        self.dilation = tuple(int(v) for v in np.ravel(node.dilation))
        self.groups = int(node.groups)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def _pool_args(node: Any) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding)`` of a NIR pooling node, each as two ints."""
    return tuple(
        tuple(int(v) for v in np.broadcast_to(np.ravel(a), (2,)))
        for a in (node.kernel_size, node.stride, node.padding)
    )


class _NIRAvgPool2d(nn.Module):
    """NIR ``AvgPool2d``: the mean over each window."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.args = _pool_args(node)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, *self.args)


class _NIRSumPool2d(nn.Module):
    """NIR ``SumPool2d``: the sum over each window (zero padding)."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.args = _pool_args(node)

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride, padding = self.args
        ones = x.new_ones(x.shape[1], 1, *kernel)
        return F.conv2d(x, ones, None, stride, padding, 1, x.shape[1])


class _NIRFlatten(nn.Module):
    """NIR ``Flatten`` (dims counted without the batch, which comes first here)."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
        self.end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(x, self.start, self.end)


class _NIRSpiking(nn.Module):
    """NIR ``IF`` (``dv/dt = r I``) or ``LIF`` (``tau dv/dt = (v_leak - v) + r I``), one
    forward-Euler step of ``dt`` per call, then ``z = [v > v_threshold]`` and ``v = v_reset``
    where ``z``. The membrane starts at 0; ``state`` carries it between steps."""

    def __init__(self, node: Any, dt: float, leaky: bool) -> None:
        super().__init__()

        def t(a: Any) -> Tensor:
            return torch.as_tensor(np.asarray(a, np.float64))

        if leaky:
            k = dt / t(node.tau)  # v += (dt/tau) (v_leak - v + r I)
            self.register_buffer("decay", (1.0 - k).float())
            self.register_buffer("gain", (k * t(node.r)).float())
            self.register_buffer("bias", (k * t(node.v_leak)).float())
        else:  # v += dt r I
            self.register_buffer("decay", torch.ones_like(t(node.r)).float())
            self.register_buffer("gain", (dt * t(node.r)).float())
            self.register_buffer("bias", torch.zeros_like(t(node.r)).float())
        self.register_buffer("threshold", t(node.v_threshold).float())
        self.register_buffer("v_reset", t(node.v_reset).float())

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(x) if state is None else state
        v = self.decay * v + self.gain * x + self.bias
        z = v > self.threshold
        return z.to(x.dtype), torch.where(z, self.v_reset, v)


def node_map(dt: float = DT) -> dict[type, Callable[[Any], nn.Module]]:
    """nirtorch node map for the nodes :func:`to_nir` writes, from the NIR node equations."""
    nir = _nir()
    return {
        nir.Input: lambda n: nn.Identity(),
        nir.Output: lambda n: nn.Identity(),
        nir.Affine: lambda n: _NIRAffine(n.weight, n.bias),
        nir.Linear: lambda n: _NIRAffine(n.weight, None),
        nir.Conv2d: _NIRConv2d,
        nir.AvgPool2d: _NIRAvgPool2d,
        nir.SumPool2d: _NIRSumPool2d,
        nir.Flatten: _NIRFlatten,
        nir.IF: lambda n: _NIRSpiking(n, dt, leaky=False),
        nir.LIF: lambda n: _NIRSpiking(n, dt, leaky=True),
    }


def nir_module(path: str | os.PathLike | Any) -> tuple[nn.Module, dict[str, Any]]:
    """``(module, metadata)`` of a NIR file (or graph) as a ``torch.fx`` module built by
    ``nirtorch.nir_to_torch`` with :func:`node_map`: ``module(x, state) -> (output, state)``
    per time step."""
    nir = _nir()
    nirtorch = require("nirtorch", "NIR import (nirtorch)")
    graph = path if isinstance(path, nir.NIRGraph) else nir.read(path)
    meta = dict(graph.metadata or {})
    dt = float(meta.get("dt", DT))
    module = nirtorch.nir_to_torch(graph, node_map(dt), default_map={})
    return module.eval(), meta


def nir_run(
    path: str | os.PathLike | Any, time_steps: int | None = None
) -> Callable[[Tensor], Tensor]:
    """A function ``x -> logits`` running the NIR file with :func:`nir_module`: a static image
    ``[B, C, H, W]`` is presented for ``T`` steps (``metadata["time_steps"]`` unless given),
    event frames ``[T, B, C, H, W]`` one per step; the logits are the mean of the per-step
    outputs (``metadata["readout"]``). The membrane state starts at zero for every call."""
    module, meta = nir_module(path)
    steps = int(time_steps or meta.get("time_steps", 1))

    @torch.no_grad()
    def run(x: Tensor) -> Tensor:
        frames = [x[t] for t in range(x.shape[0])] if x.dim() == 5 else [x] * steps
        state = None
        total = None
        for frame in frames:
            out, state = module(frame.float(), state)
            total = out if total is None else total + out
        assert total is not None
        return total / len(frames)

    return run

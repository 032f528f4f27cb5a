"""Convert a trained qsnn model into an ``IntegerProgram``.

Supported: every model that declares its forward pass as stages (``model.stages()``,
``qsnn.models.stages``: small_convnet, ResNet-19, SEW-ResNet-18/34/50 with either stem), read
stage by stage after ``check_stages`` has confirmed that the declaration computes what
``model.forward`` computes; and ``nn.Sequential`` models built from ``SpikingStem`` /
``StaticEncoder`` (a static image, stem computed once), ``QuantConv2d`` / ``QuantLinear``
(``b_w <= 8``), ``BatchNorm1d/2d`` (eval statistics), ``SpikeNeuron`` (``tau = 2**m``),
``ConvBN``, ``ConvBNNeuron``, ``LinearBNNeuron``, ``MaxPool2d``, ``AvgPool2d`` /
``AdaptiveAvgPool2d`` (window sums), ``Flatten``, ``FoldTime``, ``TimeMean``, ``Identity``,
``Dropout``. Anything else raises ``ValueError`` naming the module (Spikformer: why its
attention cannot be deployed yet).

Residual stages: a SEW block (``SEWResidual``) stores its input, runs the body, runs the
downsample on the stored input if there is one, and adds the two level tensors with the
restricted ADD (both must lie on the ADD's grid: same level value, checked). A ResNet-19 block
(``MembraneResidual``) becomes a ``residual`` spiking layer whose neuron integrates the folded
``conv2 + bn2`` and the folded shortcut ``conv1x1 + bn`` (or the identity levels times their
level value) in one membrane.

Folding, per output channel ``c`` of a layer fed levels ``k`` of scale ``s_in`` (spikes
``k * theta_in``; ``theta_in / n`` after an ``n``-window average pool, ``/ T`` after a time mean):

    conv(k * s_in, Delta_c * q) + bias_c = A_c * acc + B_c,   A_c = Delta_c * s_in,  B_c = bias_c
    batch norm: A_c <- g_c * A_c,  B_c <- g_c * (B_c - mu_c) + beta_c,  g_c = gamma_c / sigma_c

then ``qsnn.deploy.fixedpoint`` turns ``a = A / theta``, ``b = B / theta`` into the integer
neuron (a negative ``g_c`` flips the threshold comparison).

The first layer sees the normalized image ``x_n = g_ci * x - o_ci`` (``x`` uint8,
``g_ci = 1 / (255 std_ci)``, ``o_ci = mean_ci / std_ci``) with zero padding in the normalized
domain. It runs exactly on the uint8 image, one accumulator per input channel:

    conv(x_n, q)[c, p] = sum_ci g_ci acc_ci[c, p] - sum_ci o_ci cnt_ci[c, p]

where ``cnt_ci[c, p]`` is the sum of the weight codes whose taps fall inside the image at output
position ``p`` (border positions see fewer). In integers, with ``g_max = max g_ci``:
``acc = sum_ci G_ci acc_ci - O[c, p]``, ``G_ci = round(2**24 g_ci / g_max)``,
``O = round(2**24 / g_max * sum_ci o_ci cnt_ci)``, ``A_c = Delta_c * g_max * 2**-24``. With one
input channel (or equal stds) the gains are exact and only ``O`` is rounded (1/2 unit of
``2**-24 g_max``); the remaining error is part of the layer's ``membrane_bound``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._progress import Progress, resolve
from ..level_scale import LevelScale
from ..neurons import QuantActivation, SpikeNeuron
from ..quant import QuantConv2d, QuantLinear, weight_qmax
from ..temporal import FoldTime, StaticEncoder, TimeMean
from .fixedpoint import (
    GAIN_FRAC_BITS,
    fold_batch_norm,
    leak_shift,
    neuron_fixed_point,
    output_fixed_point,
)
from .program import (
    AddLayer,
    FlattenLayer,
    IntegerProgram,
    LoadLayer,
    MaxPoolLayer,
    OutputLayer,
    ResidualSpikingLayer,
    SpikingLayer,
    StoreLayer,
    SumPoolLayer,
    TimeSumLayer,
)

__all__ = ["SUPPORTED", "convert"]

SUPPORTED = (
    "models that declare stages() (small_convnet, resnet19, sew_resnet*), nn.Sequential of: "
    "SpikingStem, StaticEncoder, QuantConv2d, QuantLinear, "
    "BatchNorm1d/2d, SpikeNeuron, ConvBN, ConvBNNeuron, LinearBNNeuron, MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d, Flatten, FoldTime, TimeMean, Identity, Dropout"
)


class _Repeat(nn.Module):
    """Marker: a static tensor is presented for ``steps`` steps (``StaticEncoder``)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps


@dataclass
class _Leaf:
    name: str
    module: nn.Module
    folded: bool  # inside FoldTime: the module sees [T*B, ...]


def _unsupported(name: str, module: nn.Module, why: str = "") -> ValueError:
    detail = f" ({why})" if why else ""
    return ValueError(
        f"qsnn.deploy cannot convert layer '{name}' ({type(module).__name__}){detail}; "
        f"supported: {SUPPORTED}"
    )


def _sequential_leaves(model: nn.Module) -> list[_Leaf]:
    """An ``nn.Sequential`` as the primitive layers it runs; anything else without declared
    stages raises ``ValueError`` naming the first module it cannot read."""
    if isinstance(model, nn.Sequential):
        return [leaf for name, m in model.named_children() for leaf in _expand(name, m)]
    known = (nn.Sequential, SpikeNeuron, QuantConv2d, QuantLinear, nn.BatchNorm1d,
             nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
             FoldTime, StaticEncoder, TimeMean, nn.Identity, nn.Dropout, LevelScale)
    from ..models import ConvBN, ConvBNNeuron, LinearBNNeuron, SpikingStem

    known += (ConvBN, ConvBNNeuron, LinearBNNeuron, SpikingStem)
    for name, module in model.named_modules():
        if name and not isinstance(module, known):
            raise _unsupported(name, module, f"inside {type(model).__name__}")
    raise ValueError(
        f"qsnn.deploy converts models that declare stages() and nn.Sequential models; got "
        f"{type(model).__name__}, whose forward pass it cannot read (supported: {SUPPORTED})"
    )


def _expand(name: str, module: nn.Module, folded: bool = False) -> list[_Leaf]:
    """Composite modules -> the primitive layers they run, in order."""
    from ..models import ConvBN, ConvBNNeuron, LinearBNNeuron, SpikingStem

    if isinstance(module, FoldTime):
        return _expand(f"{name}.module", module.module, True)
    if isinstance(module, SpikingStem):
        out = _expand(f"{name}.encoder", module.encoder)
        out += _expand(f"{name}.sn", module.sn)
        if module.pool is not None:
            out += _expand(f"{name}.pool", module.pool)
        return out
    if isinstance(module, StaticEncoder):
        out = _expand(f"{name}.stem", module.stem, True) if module.stem is not None else []
        return [*out, _Leaf(name, _Repeat(module.time_steps), False)]
    if isinstance(module, (ConvBNNeuron, LinearBNNeuron)):
        return [_Leaf(f"{name}.conv" if isinstance(module, ConvBNNeuron) else f"{name}.linear",
                      module.conv if isinstance(module, ConvBNNeuron) else module.linear, True),
                _Leaf(f"{name}.bn", module.bn, True), _Leaf(f"{name}.sn", module.sn, False)]
    if isinstance(module, ConvBN):
        return [_Leaf(f"{name}.conv", module.conv, folded), _Leaf(f"{name}.bn", module.bn, folded)]
    if isinstance(module, nn.Sequential):
        return [leaf for n, m in module.named_children() for leaf in _expand(f"{name}.{n}", m,
                                                                              folded)]
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return []
    return [_Leaf(name, module, folded)]


@dataclass
class _State:
    """What flows between layers during conversion."""

    kind: str = "image"  # "image", "levels", "pending" (a linear op waiting for its neuron)
    shape: tuple[int, ...] = ()  # per sample and step: (C, H, W) or (F,)
    bits: int = 8
    scale: float = 1.0  # value of one level
    static: bool = True
    steps: int = 1
    timeless: bool = False  # after a time mean: the model's tensor has no time axis
    pending: dict[str, Any] = field(default_factory=dict)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _linear_op(leaf: _Leaf, state: _State, mean, std) -> dict[str, Any]:
    module = leaf.module
    if not isinstance(module, (QuantConv2d, QuantLinear)):
        raise _unsupported(leaf.name, module, "float weights: use QuantConv2d/QuantLinear")
    if module.bits_w > 8:
        raise _unsupported(leaf.name, module, f"b_w={module.bits_w} is float; need b_w <= 8")
    q, delta = module.weight_codes()
    q_np = q.cpu().numpy()
    out_ch = q_np.shape[0]
    delta = np.broadcast_to(_np(delta).reshape(-1), (out_ch,)).copy()
    bias = _np(module.bias) if module.bias is not None else np.zeros(out_ch)
    op = {"name": leaf.name, "weight": q_np.astype(np.int8), "bits_w": module.bits_w,
          "bits_in": state.bits, "delta": delta, "bias_f": bias.copy(),
          "static": state.static, "steps": state.steps, "in_scale": state.scale}
    if isinstance(module, QuantConv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise _unsupported(leaf.name, module, "only numeric zero padding")
        if len(state.shape) != 3:
            raise _unsupported(leaf.name, module, f"conv input must be [C, H, W]; "
                                                  f"got {state.shape}")
        op.update(op="conv", stride=_pair(module.stride), padding=_pair(module.padding),
                  dilation=_pair(module.dilation), groups=int(module.groups))
        out_shape = tuple(F.conv2d(torch.zeros(1, *state.shape), module.weight.detach().cpu(),
                                   None, module.stride, module.padding, module.dilation,
                                   module.groups).shape[1:])
    else:
        if not state.shape or state.shape[-1] != module.in_features:
            raise _unsupported(leaf.name, module, f"expects {module.in_features} features; "
                                                  f"input is {state.shape}")
        op.update(op="linear", stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
        out_shape = (*state.shape[:-1], module.out_features)
    fan_in = int(np.prod(q_np.shape[1:]))
    qmax = weight_qmax(module.bits_w)
    if state.kind == "image":
        if op["op"] != "conv" or op["groups"] != 1:
            raise _unsupported(leaf.name, module, "the first layer must be an ungrouped conv")
        op.update(_image_terms(q_np, op, state.shape, mean, std))
        op["max_acc"] = float(sum(int(g) for g in op["gain"]) * fan_in * qmax * 255
                              + np.abs(op["offset"]).max())
        op["scale"] = delta * op["unit"]
    else:
        op["max_acc"] = float(fan_in * qmax * ((1 << state.bits) - 1))
        op["acc_error"] = 0.0
        op["scale"] = delta * state.scale
    op["shift"] = bias.copy()
    op["out_shape"] = out_shape
    return op


def _image_terms(q: np.ndarray, op: dict, shape: tuple[int, ...], mean, std) -> dict[str, Any]:
    """Gains ``G``, offset map ``O`` and accumulator unit of the first layer (module doc)."""
    chans = shape[0]
    mean = np.asarray(mean if mean is not None else (0.0,) * chans, dtype=np.float64)
    std = np.asarray(std if std is not None else (1.0,) * chans, dtype=np.float64)
    if mean.shape != (chans,) or std.shape != (chans,) or (std <= 0).any():
        raise ValueError(
            f"input normalization needs {chans} means and {chans} positive stds; got "
            f"mean={tuple(mean)}, std={tuple(std)}"
        )
    g = 1.0 / (255.0 * std)
    o = mean / std
    g_max = float(g.max())
    gain = np.round(np.ldexp(g / g_max, GAIN_FRAC_BITS)).astype(np.int64)
    ones = torch.ones(1, 1, *shape[1:], dtype=torch.float64)
    cnt = []
    for ci in range(chans):  # cnt_ci[c, p] = sum of the codes whose taps land inside the image
        w = torch.from_numpy(q[:, ci:ci + 1].astype(np.float64))
        cnt.append(F.conv2d(ones, w, None, op["stride"], op["padding"], op["dilation"])[0]
                   .numpy())
    offset_real = np.ldexp(sum(o[ci] * cnt[ci] for ci in range(chans)), GAIN_FRAC_BITS) / g_max
    offset = np.round(offset_real).astype(np.int64)
    gain_exact = np.ldexp(g / g_max, GAIN_FRAC_BITS)
    fan_in = int(np.prod(q.shape[2:]))
    qmax = int(np.abs(q).max()) if q.size else 0
    acc_error = float(np.abs(gain - gain_exact).sum() * fan_in * qmax * 255
                      + np.abs(offset - offset_real).max())
    return {"gain": gain, "offset": offset, "unit": np.ldexp(g_max, -GAIN_FRAC_BITS),
            "acc_error": acc_error}


def _neuron_layer(leaf: _Leaf, state: _State, short: dict[str, Any] | None = None,
                  slot: str = "") -> SpikingLayer:
    """The neuron ``leaf`` fed by the pending op; with ``short`` (a ResNet-19 block) its
    membrane also integrates that shortcut term, read from the stored ``slot``."""
    sn = leaf.module
    if isinstance(sn, QuantActivation) or type(sn).forward is not SpikeNeuron.forward:
        raise _unsupported(leaf.name, sn, "only the multi-step SpikeNeuron")
    p = state.pending
    theta = float(sn.theta)
    shift = leak_shift(sn.tau, leaf.name)
    levels = (1 << sn.bits_s) - 1
    a, b = p["scale"] / theta, p["shift"] / theta
    extra = ()
    if short is not None:
        b = b + short["shift"] / theta
        extra = ((short["scale"] / theta, short["max_acc"]),)
    fx = neuron_fixed_point(
        a, b, levels=levels, steps=state.steps, shift=shift, hard=sn.reset == "hard",
        u_reset=sn.v_reset / theta, max_acc=p["max_acc"], acc_error=p["acc_error"],
        where=leaf.name, extra=extra,
    )
    common = dict(
        name=leaf.name, op=p["op"], weight=p["weight"], bits_w=p["bits_w"],
        bits_in=p["bits_in"], stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
        groups=p["groups"], bits_s=sn.bits_s, steps=state.steps, leak_shift=shift,
        reset=sn.reset, direction=fx.direction, threshold=fx.threshold, frac_bits=fx.frac_bits,
        bias=fx.bias, v_reset=fx.v_reset, const_levels=fx.const_levels, theta=theta,
        membrane_bound=fx.bound,
    )
    if short is None:
        return SpikingLayer(**common, image_input="gain" in p, gain=p.get("gain"),
                            offset=p.get("offset"))
    if "gain" in p:
        raise _unsupported(leaf.name, sn, "a residual sum on the layer that reads the image")
    conv = short["op"] == "conv"
    return ResidualSpikingLayer(
        **common, shortcut=slot, shortcut_op=short["op"],
        shortcut_weight=short["weight"] if conv else np.zeros(0, np.int8),
        shortcut_bits_w=short["bits_w"] if conv else 0, shortcut_bits_in=short["bits_in"],
        shortcut_stride=short["stride"] if conv else (1, 1),
        shortcut_padding=short["padding"] if conv else (0, 0),
        multipliers=fx.multipliers,
    )


def _output_layer(name: str, state: _State, time_mean: bool) -> OutputLayer:
    p = state.pending
    if "gain" in p:
        raise ValueError(f"'{p['name']}': a model whose only layer reads the image is not "
                         "supported (the first conv must be followed by a neuron)")
    steps = state.steps if time_mean else 1
    a, b = p["scale"] / steps, p["shift"]
    max_acc = p["max_acc"] * state.steps
    fx = output_fixed_point(a, b, max_acc, where=name)
    return OutputLayer(
        name=p["name"], op=p["op"], weight=p["weight"], bits_w=p["bits_w"],
        bits_in=p["bits_in"], stride=p["stride"], padding=p["padding"],
        dilation=p["dilation"], groups=p["groups"], time_mean=time_mean,
        multiplier=fx.multiplier, bias=fx.bias, shift=fx.shift,
        weight_scale=p["delta"], float_bias=p["bias_f"], input_scale=p["in_scale"],
    )


def _pool_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(module(torch.zeros(1, *shape)).shape[1:])


class _Converter:
    """Walks the primitive layers (and residual stages) of a model, emitting program layers."""

    def __init__(self, size: tuple[int, ...], mean, std, names: dict[int, str]) -> None:
        self.state = _State(shape=size)
        self.layers: list = []
        self.done = False
        self.mean, self.std = mean, std
        self.names = names

    def name(self, module: nn.Module) -> str:
        """The module's name in the model (what ``verify`` hooks)."""
        return self.names.get(id(module), type(module).__name__)

    def leaves(self, leaves: list[_Leaf]) -> None:
        for leaf in leaves:
            self.leaf(leaf)

    def leaf(self, leaf: _Leaf) -> None:
        """One primitive layer: the state machine image -> pending -> levels."""
        module, state, layers = leaf.module, self.state, self.layers
        if self.done:
            raise _unsupported(leaf.name, module, "nothing may follow the readout")
        if isinstance(module, (QuantConv2d, QuantLinear, nn.Conv2d, nn.Linear)):
            if state.kind == "pending":
                raise _unsupported(leaf.name, module, "two linear layers need a neuron "
                                                      "between them")
            state.pending = _linear_op(leaf, state, self.mean, self.std)
            state.kind, state.shape = "pending", state.pending["out_shape"]
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if state.kind != "pending":
                raise _unsupported(leaf.name, module, "batch norm must follow a conv/linear")
            _fold_bn(leaf, state.pending)
        elif isinstance(module, _Repeat):
            state.steps = module.steps
        elif isinstance(module, SpikeNeuron):
            if state.kind != "pending":
                raise _unsupported(leaf.name, module, "a neuron must follow a conv/linear")
            layers.append(_neuron_layer(leaf, state))
            self.state = _State("levels", state.shape, module.bits_s, float(module.theta),
                                False, state.steps)
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            layers.append(_pool(leaf, state))
        elif isinstance(module, nn.Flatten):
            if state.kind != "levels":
                raise _unsupported(leaf.name, module, "flatten spike levels only")
            # In program coordinates [T', B, ...]: a folded or time-less tensor lacks T.
            start = module.start_dim + (1 if leaf.folded or state.timeless else 0)
            if start < 2 or module.end_dim != -1:
                raise _unsupported(leaf.name, module, "flatten only the feature dims")
            layers.append(FlattenLayer(name=leaf.name, start_dim=start))
            state.shape = (*state.shape[:start - 2], math.prod(state.shape[start - 2:]))
        elif isinstance(module, TimeMean):
            if state.kind == "pending":
                layers.append(_output_layer(leaf.name, state, time_mean=True))
                self.done = True
            elif state.kind == "levels":
                bits = state.bits + math.ceil(math.log2(state.steps)) if state.steps > 1 \
                    else state.bits
                layers.append(TimeSumLayer(name=leaf.name, bits_out=bits))
                self.state = _State("levels", state.shape, bits, state.scale / state.steps,
                                    True, 1, timeless=True)
            else:
                raise _unsupported(leaf.name, module, "time mean of the raw image")
        else:
            raise _unsupported(leaf.name, module)

    # -- declared stages -------------------------------------------------------------------
    def stage(self, stage: Any) -> None:
        """One declared stage (``qsnn.models.stages``)."""
        from ..models import stages as st

        if isinstance(stage, (st.Stem, st.ConvSpike, st.Pool)):
            self.leaves(_expand(self.name(stage.module), stage.module))
        elif isinstance(stage, st.Flatten):
            self.leaf(_Leaf("flatten", nn.Flatten(2), False))
        elif isinstance(stage, st.LinearSpike):
            parts = [stage.linear] + ([stage.bn] if stage.bn is not None else []) + [stage.sn]
            self.leaves([_Leaf(self.name(m), m, False) for m in parts])
        elif isinstance(stage, st.Head):
            self.leaves([_Leaf(self.name(m), m, False) for m in (stage.linear, stage.readout)])
        elif isinstance(stage, st.SEWResidual):
            self._sew(stage)
        elif isinstance(stage, st.MembraneResidual):
            self._membrane_residual(stage)
        else:
            raise ValueError(f"qsnn.deploy cannot convert the stage {type(stage).__name__}")

    def _store(self, block: str, what: str) -> str:
        slot = f"{block}.{what}"
        self.layers.append(StoreLayer(name=slot, slot=slot))
        return slot

    def _enter_block(self, module: nn.Module, body: tuple) -> tuple[str, str, _State, str]:
        """Start a residual block ending in ``module``: store its input, convert its body.
        Returns the module's name, the block's, the input state and its slot."""
        name = self.name(module)
        block = name.rsplit(".", 1)[0]
        if self.state.kind != "levels" or len(self.state.shape) != 3:
            raise _unsupported(block, module, "a residual block needs spike levels [C, H, W]")
        x, slot = dataclasses.replace(self.state), self._store(block, "input")
        for sub in body:
            self.stage(sub)
        return name, block, x, slot

    def _sew(self, stage: Any) -> None:
        add = stage.add
        name, block, x, slot_in = self._enter_block(add, stage.body)
        if stage.shortcut:  # the ADD of the downsample's levels and the stored body's
            body, other_slot = dataclasses.replace(self.state), self._store(block, "body")
            self.layers.append(LoadLayer(name=f"{block}.shortcut", slot=slot_in))
            self.state = dataclasses.replace(x)
            for sub in stage.shortcut:
                self.stage(sub)
            inputs = (("body", body), ("shortcut", self.state))
        else:  # the ADD of the body's levels and the stored block input
            other_slot = slot_in
            inputs = (("body", self.state), ("identity", x))
        theta = float(add.theta)
        shape = inputs[0][1].shape
        for what, st in inputs:
            if st.kind != "levels" or st.shape != shape:
                raise _unsupported(name, add, f"its {what} input is not spike levels of shape "
                                              f"{shape}")
            if not math.isclose(st.scale, theta, rel_tol=1e-12):
                raise _unsupported(name, add, f"its {what} input has level value {st.scale:g}, "
                                              f"the ADD's grid {theta:g}; both must share it")
        self.layers.append(AddLayer(name=name, slot=other_slot, bits_s=add.bits_s))
        self.state = _State("levels", shape, add.bits_s, theta, False, self.state.steps)

    def _membrane_residual(self, stage: Any) -> None:
        sn = stage.sn
        name, _, x, slot = self._enter_block(sn, stage.body)
        conv = stage.conv
        self.leaves([_Leaf(self.name(conv.conv), conv.conv, True),
                     _Leaf(self.name(conv.bn), conv.bn, True)])
        main = self.state
        out_ch = main.pending["scale"].shape[0]
        if stage.shortcut is not None:
            short = _linear_op(_Leaf(self.name(stage.shortcut.conv), stage.shortcut.conv, True),
                               x, self.mean, self.std)
            _fold_bn(_Leaf(self.name(stage.shortcut.bn), stage.shortcut.bn, True), short)
            if short["groups"] != 1 or short["dilation"] != (1, 1):
                raise _unsupported(name, sn, "a grouped or dilated shortcut conv")
            if short["out_shape"] != main.shape:
                raise _unsupported(name, sn, f"shortcut gives {short['out_shape']}, the body "
                                             f"{main.shape}")
        else:
            if x.shape != main.shape:
                raise _unsupported(name, sn, f"identity shortcut {x.shape} != body {main.shape}")
            short = {"op": "identity", "scale": np.full(out_ch, x.scale), "shift":
                     np.zeros(out_ch), "max_acc": float((1 << x.bits) - 1), "bits_in": x.bits}
        self.layers.append(_neuron_layer(_Leaf(name, sn, False), main, short, slot))
        self.state = _State("levels", main.shape, sn.bits_s, float(sn.theta), False,
                            main.steps)

    def finish(self) -> list:
        if not self.done:
            if self.state.kind != "pending":
                raise ValueError(
                    "the model must end in a conv/linear layer producing the logits (optionally "
                    "followed by TimeMean); it ends in " + ("spikes" if self.layers
                                                             else "the input")
                )
            # After a time mean the logits have no time axis: "summing" the single step drops it.
            self.layers.append(_output_layer("output", self.state, time_mean=self.state.timeless))
        if not any(isinstance(layer, SpikingLayer) for layer in self.layers):
            raise ValueError("the model has no spiking layer to deploy")
        return self.layers


def _fold_bn(leaf: _Leaf, p: dict[str, Any]) -> None:
    """Fold an eval-mode batch norm into the pending op's per-channel scale and shift."""
    module = leaf.module
    if module.running_mean is None or module.running_var is None:
        raise _unsupported(leaf.name, module, "needs running statistics")
    if module.num_features != p["scale"].shape[0]:
        raise _unsupported(leaf.name, module, f"{module.num_features} features "
                                              f"after {p['scale'].shape[0]} channels")
    p["scale"], p["shift"] = fold_batch_norm(
        p["scale"], p["shift"],
        None if module.weight is None else _np(module.weight),
        None if module.bias is None else _np(module.bias),
        _np(module.running_mean), _np(module.running_var), float(module.eps))


def _check_finite(model: nn.Module) -> None:
    """Refuse a model with a NaN or infinite parameter or buffer (a diverged training run): its
    integer program would be cast from non-finite values. Names the first such tensor."""
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor.detach())
        if bool(finite.all()):
            continue
        bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(tensor.detach()).any()) else "inf"
        raise ValueError(
            f"{name} has {kind} ({bad} of {tensor.numel()} values are not finite): a model "
            f"with non-finite weights or statistics (a diverged training run?) cannot be "
            f"converted to an integer program"
        )


def convert(
    model: nn.Module,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: tuple[int, int, int] | None = None,
    check: bool = True,
    progress: Progress | bool | None = None,
) -> IntegerProgram:
    """The integer program of a trained ``model`` (evaluation semantics: batch-norm running
    statistics).

    Args:
        model: a model that declares ``stages()`` (the zoo's CNNs) or an ``nn.Sequential`` of
            supported layers (module doc).
        mean, std: the per-channel normalization the model was trained with, ``(x/255 - mean)
            / std`` (``TensorData.mean``/``.std``); default: ``x / 255``.
        input_size: ``(C, H, W)`` of the uint8 input (default ``model.input_size``).
        check: first confirm with ``qsnn.models.stages.check_stages`` (two random images)
            that the declared stages compute what ``model.forward`` computes.
        progress: a ``qsnn._progress.Progress`` (or ``True``) to say on stderr that the
            conversion runs, once the model is known to be convertible; default: quiet.

    Raises ``ValueError`` for a model that cannot be deployed, naming the layer, and for a
    model with a non-finite parameter or buffer, naming the first (e.g.
    ``features.0.bn.running_var has inf``).
    """
    _check_finite(model)
    size = input_size or getattr(model, "input_size", None)
    if size is None or len(size) != 3:
        raise ValueError(f"convert needs input_size (C, H, W); got {size!r}")
    size = tuple(int(v) for v in size)
    names = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    conv = _Converter(size, mean, std, names)
    report = resolve(progress, "convert")
    what = f"converting {type(model).__name__} into an integer program"
    with torch.no_grad():
        declared = getattr(model, "stages", None)
        if callable(declared):
            stages = declared()  # a model that cannot be deployed raises ValueError here
            # Said after the checks above: bad input is one error line, with no stage before it.
            report.stage(f"{what} ({len(stages)} stages)")
            if check:
                from ..models.stages import check_stages

                device = next((q.device for q in model.parameters()), torch.device("cpu"))
                gen = torch.Generator().manual_seed(0)
                check_stages(model, torch.randn(2, *size, generator=gen).to(device))
            for stage in stages:
                conv.stage(stage)
        else:
            report.stage(what)
            conv.leaves(_sequential_leaves(model))
    layers = conv.finish()
    channels = int(size[0])
    bits = getattr(model, "bits", None)
    return IntegerProgram(
        layers, size,
        tuple(float(v) for v in (mean if mean is not None else (0.0,) * channels)),
        tuple(float(v) for v in (std if std is not None else (1.0,) * channels)),
        time_steps=max(getattr(layer, "steps", 1) for layer in layers),
        source={"model": type(model).__name__, "bits": str(bits) if bits is not None else None},
    )


def _pool(leaf: _Leaf, state: _State):
    module = leaf.module
    if state.kind != "levels":
        raise _unsupported(leaf.name, module, "pooling works on spike levels (after a neuron)")
    if len(state.shape) != 3:
        raise _unsupported(leaf.name, module, f"expects [C, H, W]; got {state.shape}")
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise _unsupported(leaf.name, module, "return_indices")
        stride = module.stride if module.stride is not None else module.kernel_size
        layer = MaxPoolLayer(name=leaf.name, kernel=_pair(module.kernel_size),
                             stride=_pair(stride), padding=_pair(module.padding),
                             dilation=_pair(module.dilation), ceil_mode=bool(module.ceil_mode))
        state.shape = _pool_shape(module, state.shape)
        return layer
    if isinstance(module, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(module.output_size)
        _, h, w = state.shape
        if h % oh or w % ow:
            raise _unsupported(leaf.name, module, f"output {(oh, ow)} must divide {(h, w)}")
        kernel = stride = (h // oh, w // ow)
    else:
        if _pair(module.padding) != (0, 0) or module.ceil_mode or module.divisor_override:
            raise _unsupported(leaf.name, module, "only padding=0, ceil_mode=False, "
                                                  "no divisor_override")
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    n = kernel[0] * kernel[1]
    bits = state.bits + math.ceil(math.log2(n)) if n > 1 else state.bits
    state.shape = _pool_shape(module, state.shape)
    state.bits, state.scale = bits, state.scale / n
    return SumPoolLayer(name=leaf.name, kernel=kernel, stride=stride, bits_out=bits)

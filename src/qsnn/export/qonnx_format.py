"""QONNX export of ``T = 1`` allocations: a quantized ANN with ``Quant`` nodes.

At ``T = 1`` qsnn's neuron is the quantized activation ``clamp(floor(x / theta), 0, L) * theta``
(paper Eq. 2, ``L = 2**b_s - 1``), which is exactly QONNX's ``Quant`` node with
``scale = theta``, ``zeropt = 0``, ``bitwidth = b_s``, ``signed = 0``, ``narrow = 0``,
``rounding_mode = "FLOOR"``. A ``b_w``-bit weight ``clamp(round(w / Delta), -q, q) * Delta``
(``q = 2**(b_w-1) - 1``; a sign for ``b_w = 1``) is ``Quant`` with the per-channel ``scale =
Delta``, ``bitwidth = b_w``, ``signed = 1``, ``narrow = 1``, ``rounding_mode = "ROUND"``
(``bitwidth = 1`` signed is QONNX's bipolar ``{-Delta, +Delta}``). The graph (domain
``qonnx.custom_op.general``, opset 18 otherwise) takes the normalized image ``[B, C, H, W]`` and
returns the logits; convolutions, batch norm, pooling and the classifier are standard ONNX
nodes between the ``Quant`` nodes, so FINN's flow (streamlining, then hardware layers) can take
it toward an FPGA. Layers whose weights are float (``b_w = 16``) get no weight ``Quant`` node.

Limits: ``T = 1`` only (``T > 1`` is a spiking network with membrane state: use ``--format
onnx``); static image datasets; the raw image into the stem is not quantized (qsnn's stem reads
it as float); executing the graph needs ``qonnx`` (its executor runs the ``Quant`` nodes in
numpy and the rest in onnxruntime).
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._common import require

#: QONNX's custom-op domain.
DOMAIN = "qonnx.custom_op.general"


@torch.library.custom_op("qsnn_export::quant", mutates_args=())
def _quant(
    x: Tensor,
    scale: Tensor,
    zeropt: Tensor,
    bitwidth: Tensor,
    signed: int,
    narrow: int,
    rounding_mode: str,
) -> Tensor:
    """QONNX ``Quant`` in torch (the reference semantics: scale, clamp, round, rescale)."""
    y = x / scale + zeropt
    bits = int(bitwidth)
    if bits == 1 and signed:
        y = torch.where(y >= 0, 1.0, -1.0).to(y.dtype)
    else:
        if signed:
            lo, hi = -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
        else:
            lo, hi = 0, 2**bits - 1 - (1 if narrow else 0)
        y = torch.clamp(y, lo, hi)
        y = torch.floor(y) if rounding_mode == "FLOOR" else torch.round(y)
    return (y - zeropt) * scale


@_quant.register_fake
def _(x, scale, zeropt, bitwidth, signed, narrow, rounding_mode):
    return torch.empty_like(x)


def _register_quant_schema() -> None:
    """Tell onnx (and so onnxscript) the signature of QONNX's ``Quant``, once per process."""
    from onnx import defs

    if defs.has("Quant", DOMAIN):
        return
    ts = defs.OpSchema.FormalParameter
    attr = defs.OpSchema.Attribute
    kind = defs.OpSchema.AttrType
    schema = defs.OpSchema(
        "Quant",
        DOMAIN,
        1,
        inputs=[ts(name, "tensor(float)") for name in ("X", "scale", "zeropt", "bitwidth")],
        outputs=[ts("Y", "tensor(float)")],
        attributes=[
            attr("signed", kind.INT, "signed integers"),
            attr("narrow", kind.INT, "narrow range"),
            attr("rounding_mode", kind.STRING, "ROUND, FLOOR or CEIL"),
        ],
    )
    defs.register_schema(schema)


def _quant_translation():
    from onnxscript import values

    _register_quant_schema()
    qonnx = values.Opset(DOMAIN, 1)

    def quant(x, scale, zeropt, bitwidth, signed: int, narrow: int, rounding_mode: str):
        return qonnx.Quant(
            x, scale, zeropt, bitwidth, signed=signed, narrow=narrow, rounding_mode=rounding_mode
        )

    return quant


def _const(value: float | Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float32).detach().clone()


def _activation_forward(self, x: Tensor) -> Tensor:
    theta = self.level.step(self.bits_s, x[0, 0].numel())
    y = _quant(x[0], _const(theta), _const(0.0), _const(self.bits_s), 0, 0, "FLOOR")
    return y.unsqueeze(0)


def _weight_method(m: nn.Module):
    """``quantized_weight`` for the export: the float weight through a ``Quant`` node whose
    scale is the layer's ``Delta`` (max-abs or learned), computed once, a constant."""
    weight = m.weight.detach().float().clone()
    if m.bits_w >= 16:
        return lambda: weight
    with torch.no_grad():
        _, delta = m.weight_codes()
    delta = delta.detach().float().clone()
    bits = _const(m.bits_w)

    def quantized_weight() -> Tensor:
        return _quant(weight, delta, _const(0.0), bits, 1, 1, "ROUND")

    return quantized_weight


@contextlib.contextmanager
def qonnx_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s neurons run as QONNX ``Quant`` activations (``T = 1``
    only) and its quantized layers' weights pass through ``Quant`` nodes; same values."""
    from ..models.layers import LevelQuantizer
    from ..neurons import QuantActivation, SpikeNeuron
    from ..quant import QuantConv2d, QuantLinear
    from ..temporal import StaticEncoder
    from .onnx_format import _eager_encoder_forward

    patched: list[tuple[nn.Module, str]] = []
    try:
        for m in model.modules():
            if isinstance(m, (QuantActivation, LevelQuantizer)):
                raise ValueError(
                    f"QONNX export does not support {type(m).__name__} modules yet "
                    "(Spikformer's attention quantizer, or a bare activation); use --format onnx"
                )
            if isinstance(m, SpikeNeuron):
                name, fn = "forward", _activation_forward
            elif isinstance(m, StaticEncoder):
                name, fn = "forward", _eager_encoder_forward
            elif isinstance(m, (QuantConv2d, QuantLinear)):
                if "quantized_weight" not in vars(m):
                    m.quantized_weight = _weight_method(m)
                    patched.append((m, "quantized_weight"))
                continue
            else:
                continue
            if name in vars(m):
                continue
            setattr(m, name, types.MethodType(fn, m))
            patched.append((m, name))
        yield model
    finally:
        for m, name in patched:
            vars(m).pop(name, None)


def save_qonnx(
    model: nn.Module, info: dict[str, Any], path: str | os.PathLike, *, batch_size: int = 1
) -> Path:
    """Write ``model`` (a ``T = 1`` allocation of a static-image run) as a QONNX graph (module
    doc) to ``path``; ``info`` as :func:`qsnn.export.export_run` builds it. Returns the path.

    Shapes are static (qonnx's executor and FINN need them): the graph takes batches of
    exactly ``batch_size`` images (FINN's convention is 1)."""
    onnx = require("onnx", "QONNX export")
    require("onnxscript", "QONNX export")
    from ..neurons import SpikeNeuron
    from ..temporal import StaticEncoder
    from .onnx_format import add_metadata, capture_onnx

    spec = info["input"]
    if spec["kind"] != "static":
        raise ValueError(
            f"QONNX export supports models of static image datasets; this run's dataset is "
            f"{spec['kind']} ({info['config'].get('dataset')})"
        )
    steps = {m.time_steps for m in model.modules() if isinstance(m, StaticEncoder)}
    if steps != {1}:
        raise ValueError(
            f"QONNX export needs a T = 1 allocation (a quantized ANN); this run has "
            f"T = {', '.join(map(str, sorted(steps))) or '?'} ({info['model_args'].get('bits')}): "
            "T > 1 is a spiking network with membrane state, which QONNX has no node for; "
            "use --format onnx for the time-unrolled float graph"
        )
    if not any(isinstance(m, SpikeNeuron) for m in model.modules()):
        raise ValueError("QONNX export found no qsnn neuron in the model")
    model = model.to("cpu", torch.float32).eval()
    dummy = torch.zeros(batch_size, *spec["sample_shape"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with qonnx_friendly(model):
        proto = capture_onnx(
            model,
            dummy,
            18,
            dynamic_batch=False,
            translations={torch.ops.qsnn_export.quant.default: _quant_translation()},
        )
    if not any(op.domain == DOMAIN for op in proto.opset_import):
        proto.opset_import.add(domain=DOMAIN, version=1)
    add_metadata(proto, info)
    onnx.save(proto, str(path))
    return path


def qonnx_run(path: str | os.PathLike) -> Any:
    """A function ``x (numpy [B, C, H, W]) -> logits (numpy)`` that executes ``path`` with
    qonnx's executor (``qonnx.core.onnx_exec.execute_onnx``)."""
    require("qonnx", "running a QONNX export")
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    wrapper = ModelWrapper(str(path))
    batch = wrapper.get_tensor_shape("input")[0]

    def run(x):
        n = x.shape[0]
        out = []
        for i in range(0, n, batch):  # the graph's fixed batch; the last one padded
            chunk = x[i : i + batch]
            pad = batch - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out.append(execute_onnx(wrapper, {"input": chunk})["logits"][: batch - pad])
        return np.concatenate(out)

    return run

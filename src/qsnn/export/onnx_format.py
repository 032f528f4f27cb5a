"""Plain ONNX export: the fake-quantized float graph, time unrolled, for onnxruntime.

The graph takes what the qsnn model takes (a static image batch ``[B, C, H, W]``, normalized as
the run's data were: ``(x / 255 - mean) / std`` per channel; the values are in the model's
``metadata_props``) and returns the logits ``[B, classes]``. Every one of the ``T`` time steps is
written out: the neurons' charge / fire / reset (paper Eq. 6-7: ``floor``, ``clip``, ``where``)
step by step, the weights as their ``b_w``-bit fake-quantized float values (folded into
constants), batch norm (which the exporter's optimizer folds into the convolutions), pooling
and the time-mean readout as ordinary ONNX ops. The batch axis
is dynamic; ``T``, the allocation and the input size are fixed at export.

Why ``torch.onnx.export(model, dynamo=False)`` fails on qsnn models: the neuron runs its time
loop inside a ``torch.autograd.Function`` that views its input as ``[T, N]`` rows with
``as_strided`` (``qsnn._neuron_kernels.as_time_rows``); the TorchScript exporter records the
Function as a ``prim::PythonOp`` whose inlined body holds those ``as_strided`` views, and its
peephole pass then fails (``IndexError: Argument passed to at() was not in the map``). The fused
``torch.compile`` kernel is not involved: ``kernel="eager"`` fails the same way, and a Function
without the views exports. qsnn therefore exports through :func:`export_friendly`, which swaps,
for the duration of the export only, each neuron's and each static encoder's ``forward`` for the
same arithmetic in plain tensor ops (``qsnn._neuron_kernels.membrane_step``, the one place the
step is written) and each quantized layer's weight for its ``Delta * q`` constant; training
code and the modules' classes are untouched. The graph is captured with ``torch.export``
(torch.onnx's ``dynamo=True`` exporter, which needs ``onnxscript``): the TorchScript exporter,
even on the plain path, wrote a graph that gave wrong logits at batch sizes other than the
traced one.

Limits: static image datasets only (event models take ``[T, B, ...]`` frames; not exported);
float32 only; exporting takes about 10 s of CPU even for ``small_convnet``; the graph is float
(weights are quantized values stored as floats, spikes are ``k * theta`` floats), not an
integer or QONNX graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ._common import require

#: The ONNX opset the graph is written in.
OPSET = 18


def _eager_neuron_forward(self, x: Tensor) -> Tensor:
    """``SpikeNeuron.forward`` in plain tensor ops (eval only): the same ``membrane_step`` per
    step, in the same dtype, with the same 0-dim ``theta`` tensor."""
    from .. import _neuron_kernels as kernels

    acc = kernels.membrane_dtype(x.dtype)
    step = self.level.step(self.bits_s, x[0, 0].numel())
    theta = (
        step.detach().to(x.device, acc)
        if isinstance(step, Tensor)
        else torch.tensor(float(step), dtype=acc, device=x.device)
    )
    v = None
    spikes = []
    for t in range(x.shape[0]):
        _, k, v = kernels.membrane_step(
            x[t].to(acc),
            v,
            theta,
            1.0 / self.tau,
            self.v_reset,
            self.levels,
            self.reset == "hard",
        )
        spikes.append((k * theta).to(x.dtype))
    return torch.stack(spikes)


def _eager_level_quantizer_forward(
    self, x: Tensor, theta: float | Tensor | None = None, exact_theta: float | None = None
) -> Tensor:
    """``LevelQuantizer.forward`` (Spikformer's attention quantizer: every step quantized on
    its own, no membrane) in plain tensor ops."""
    from .. import _neuron_kernels as kernels

    if theta is None:
        step = self.level.step(self.bits_s)
    else:
        step = theta.detach() if isinstance(theta, Tensor) else float(theta)
    acc = kernels.membrane_dtype(x.dtype)
    theta_t = (
        step.detach().to(x.device, acc)
        if isinstance(step, Tensor)
        else torch.tensor(float(step), dtype=acc, device=x.device)
    )
    _, k, _ = kernels.membrane_step(x.to(acc), None, theta_t, 1.0, 0.0, self.levels, True)
    return (k * theta_t).to(x.dtype)


def _eager_activation_forward(self, x: Tensor) -> Tensor:
    return _eager_neuron_forward(self, x.unsqueeze(0)).squeeze(0)


def _eager_encoder_forward(self, x: Tensor) -> Tensor:
    if self.stem is not None:
        x = self.stem(x)
    return torch.stack([x] * self.time_steps)  # [B, ...] -> [T, B, ...], the stem run once


@contextlib.contextmanager
def export_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s neurons and static encoders run their forward in plain,
    traceable tensor ops (same values; no autograd Function, no ``as_strided``, no fused
    kernel), and its quantized layers use their ``Delta * q`` weights computed once on entry
    (constants in a traced graph); afterwards the modules' own methods are back. For inference
    and export only: the plain path has no surrogate gradient, and weights changed inside the
    block are not seen."""
    from ..models.layers import LevelQuantizer
    from ..neurons import QuantActivation, SpikeNeuron
    from ..quant import QuantConv2d, QuantLinear
    from ..temporal import StaticEncoder

    patched: list[tuple[nn.Module, str]] = []
    try:
        for m in model.modules():
            if isinstance(m, (QuantConv2d, QuantLinear)) and "quantized_weight" not in vars(m):
                with torch.no_grad():
                    weight = m.quantized_weight().detach().clone()  # Delta * q, computed once
                m.quantized_weight = lambda w=weight: w
                patched.append((m, "quantized_weight"))
                continue
            if isinstance(m, QuantActivation):
                fn = _eager_activation_forward
            elif isinstance(m, LevelQuantizer):
                fn = _eager_level_quantizer_forward
            elif isinstance(m, SpikeNeuron):
                fn = _eager_neuron_forward
            elif isinstance(m, StaticEncoder):
                fn = _eager_encoder_forward
            else:
                continue
            if "forward" in vars(m):  # already patched (a nested block) or the user's own
                continue
            m.forward = types.MethodType(fn, m)  # an instance attribute shadows the method
            patched.append((m, "forward"))
        yield model
    finally:
        for m, name in patched:
            vars(m).pop(name, None)


def save_onnx(
    model: nn.Module, info: dict[str, Any], path: str | os.PathLike, *, opset: int = OPSET
) -> Path:
    """Write ``model`` (in eval mode, float32, on the CPU) as a plain ONNX graph (module doc) to
    ``path``; ``info`` as :func:`qsnn.export.export_run` builds it. Returns the path."""
    onnx = require("onnx", "ONNX export")
    spec = info["input"]
    if spec["kind"] != "static":
        raise ValueError(
            f"ONNX export supports models of static image datasets; this run's dataset is "
            f"{spec['kind']} ({info['config'].get('dataset')})"
        )
    model = model.to("cpu", torch.float32).eval()
    dummy = torch.zeros(2, *spec["sample_shape"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    require("onnxscript", "ONNX export")  # torch.onnx's exporter writes through it
    with export_friendly(model):
        proto = capture_onnx(model, dummy, opset, dynamic_batch=True)
    add_metadata(proto, info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def capture_onnx(
    model: nn.Module,
    dummy: torch.Tensor,
    opset: int,
    *,
    dynamic_batch: bool,
    translations: dict | None = None,
) -> Any:
    """The ``onnx.ModelProto`` of ``model(dummy)`` captured by ``torch.export`` (torch.onnx's
    ``dynamo=True`` exporter, optimized, quiet); input ``input``, output ``logits``, the batch
    dimension dynamic when ``dynamic_batch``; ``translations`` maps custom ops to onnxscript."""
    extra: dict[str, Any] = {}
    if dynamic_batch:
        extra["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    if translations:
        extra["custom_translation_table"] = translations
    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (dummy,), None, input_names=["input"],
                                    output_names=["logits"], opset_version=opset, dynamo=True,
                                    optimize=True, verbose=False, **extra)  # fmt: skip
    return program.model_proto


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its optimizer's notes (logged at INFO and
    WARNING by torch.onnx, onnxscript and onnx_ir; errors still show)."""
    import io
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def add_metadata(proto: Any, info: dict[str, Any]) -> None:
    """Record the run (model, allocation, ``create_model`` arguments, input normalization) in
    an ONNX model's ``metadata_props``."""
    args = info["model_args"]
    meta = {
        "qsnn.model": str(args.get("name")),
        "qsnn.bits": str(args.get("bits")),
        "qsnn.model_args": json.dumps(args),
        "qsnn.input": json.dumps(info["input"]),
        "qsnn.weights": str(info.get("which", "")),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "qsnn"


def onnx_session(path: str | os.PathLike) -> Any:
    """An onnxruntime CPU ``InferenceSession`` of ``path``."""
    ort = require("onnxruntime", "running an ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

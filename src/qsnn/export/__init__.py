"""Export a trained run for other tools: ``safetensors`` (weights + the config to rebuild the
model with :func:`qsnn.create_model`, no pickles), ``onnx`` (the fake-quantized float graph,
time unrolled, for onnxruntime), ``qonnx`` (``T = 1`` allocations as a quantized ANN with
QONNX ``Quant`` nodes, for qonnx and FINN) and ``nir`` (binary-spike models as a NIR graph of
conv/affine and IF/LIF nodes, for snnTorch, Norse, Sinabs, Lava and other NIR consumers).

>>> from qsnn.export import export_run, load_safetensors, check_export
>>> path = export_run("runs/tour", "safetensors")            # runs/tour/export/model.safetensors
>>> model = load_safetensors(path)                           # the same model, rebuilt
>>> check_export("runs/tour", export_run("runs/tour", "onnx"), "onnx")["agreement"]

The optional packages (``safetensors``; ``onnx``, ``onnxscript``, ``onnxruntime``; ``qonnx``;
``nir``, ``nirtorch``) are the ``export`` extra, imported only when a format needs them:
``pip install 'qsnn[export]'``. Each format's module says what its file holds and what it
cannot express.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from .._progress import resolve
from ._common import INSTALL_LINE, default_out, run_description
from .onnx_format import export_friendly, onnx_session, save_onnx
from .safetensors_format import load_safetensors, safetensors_metadata, save_safetensors

Format = Literal["safetensors", "onnx", "qonnx", "nir"]

#: Formats :func:`export_run` writes, with their file suffix.
FORMATS: dict[str, str] = {
    "safetensors": ".safetensors", "onnx": ".onnx", "qonnx": ".qonnx.onnx", "nir": ".nir",
}

__all__ = [
    "FORMATS",
    "INSTALL_LINE",
    "check_export",
    "export_friendly",
    "export_run",
    "load_safetensors",
    "safetensors_metadata",
]


def _check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def export_run(
    run_dir: str | os.PathLike,
    format: Format | str,
    out: str | os.PathLike | None = None,
    *,
    which: Literal["best", "last"] = "best",
    data_root: str | os.PathLike | None = None,
    batch_size: int = 1,
) -> Path:
    """Export the run in ``run_dir`` (its ``best.pt`` or ``checkpoint.pt`` per ``which``) as
    ``format`` to ``out`` (default ``RUN_DIR/export/model.<suffix>``); returns the path.

    - ``safetensors``: the ``state_dict`` plus, as JSON metadata, the ``create_model``
      arguments, the run's config and the input normalization; rebuilt by
      :func:`load_safetensors`.
    - ``onnx``: the float graph of the fake-quantized model, ``T`` steps unrolled, batch axis
      dynamic; static image datasets only (``qsnn.export.onnx_format``).
    - ``qonnx``: ``T = 1`` allocations only, ``Quant`` nodes for weights (``b_w``) and
      activations (``b_s``), a fixed batch of ``batch_size`` (``qsnn.export.qonnx_format``).
    - ``nir``: ``b_s = 1`` models only, a NIR graph (HDF5) of ``Conv2d``/``Affine`` nodes with
      the quantized weights (batch norm folded in), ``LIF``/``IF`` nodes reproducing the neuron,
      ``AvgPool2d``/``Flatten`` and the head's per-step logits as the output, whose mean over
      ``T`` is the readout (``qsnn.export.nir_format``). Multi-bit spikes, soft reset and max
      pooling are refused, naming the reason.

    ``data_root`` reads the run's dataset from another place (only its normalization and
    sample shape are used). A format this build cannot write is a ``ValueError``; a missing
    optional package an ``ImportError`` naming ``pip install 'qsnn[export]'``.
    """
    _check_format(format)
    from ._common import require

    # Fail on a missing package before loading anything.
    if format == "safetensors":
        require("safetensors.torch", "safetensors export")
    elif format == "nir":
        require("nir", "NIR export")
    else:
        require("onnx", f"{'QONNX' if format == 'qonnx' else 'ONNX'} export")
        require("onnxscript", f"{'QONNX' if format == 'qonnx' else 'ONNX'} export")
    model, info = run_description(run_dir, which=which, data_root=data_root)
    path = Path(out) if out is not None else default_out(run_dir, FORMATS[format])
    if format == "safetensors":
        return save_safetensors(model, info, path)
    if format == "qonnx":
        from .qonnx_format import save_qonnx

        return save_qonnx(model, info, path, batch_size=batch_size)
    if format == "nir":
        from .nir_format import save_nir

        return save_nir(model, info, path)
    return save_onnx(model, info, path)


@torch.no_grad()
def check_export(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    format: Format | str,
    *,
    which: Literal["best", "last"] = "best",
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    progress: Any = None,
) -> dict[str, Any]:
    """Run an exported file on the run's test split and compare it with qsnn's own model.

    ``safetensors`` files are rebuilt with :func:`load_safetensors`, ``onnx`` files run in
    onnxruntime (CPU), ``qonnx`` files in qonnx's executor, ``nir`` files read back with
    ``nir.read`` and run by ``nirtorch.nir_to_torch`` with node modules written from the NIR
    node equations (``qsnn.export.nir_format.nir_run``: ``T`` steps, mean of the outputs).
    Returns ``{"agreement", "n", "max_abs_diff", "acc_qsnn", "acc_export"}``: the fraction of
    samples whose predicted class is the same, the largest logit difference, and both
    accuracies. ``limit`` takes the first ``limit`` test samples only. ``progress`` (``True`` or a
    ``qsnn._progress.Progress``) writes a stage line and, every 10 s, how far the check is.
    """
    from ..train import load_run

    _check_format(format)
    model, _, data = load_run(run_dir, which=which, data_root=data_root)
    model = model.to("cpu", torch.float32).eval()
    test = data.test
    if limit is not None:
        test = test.subset(range(min(limit, len(test))))
    if format == "safetensors":
        other = load_safetensors(path)

        def run_export(x: torch.Tensor) -> torch.Tensor:
            return other(x)
    elif format == "nir":
        from .nir_format import nir_run

        run_nir = nir_run(path)

        def run_export(x: torch.Tensor) -> torch.Tensor:
            return run_nir(x)
    elif format == "qonnx":
        from .qonnx_format import qonnx_run

        run_qonnx = qonnx_run(path)

        def run_export(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(run_qonnx(x.numpy()))
    else:
        session = onnx_session(path)

        def run_export(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])

    same = correct_q = correct_e = n = 0
    max_diff = 0.0
    shown = resolve(progress, "export")
    shown.stage(f"checking {path} on {len(test)} test samples ({format})")
    with shown.counter(len(test), "samples", "compared") as count:
        for x, y in test.batches(batch_size, device="cpu"):
            x = x.float()
            ref, got = model(x), run_export(x)
            max_diff = max(max_diff, float((ref - got).abs().max()))
            p, q = ref.argmax(1), got.argmax(1)
            same += int((p == q).sum())
            correct_q += int((p == y).sum())
            correct_e += int((q == y).sum())
            n += y.numel()
            count.advance(y.numel(), f"{100 * same / n:.2f}% agree so far")
    return {
        "agreement": same / max(1, n),
        "n": n,
        "max_abs_diff": max_diff,
        "acc_qsnn": correct_q / max(1, n),
        "acc_export": correct_e / max(1, n),
    }

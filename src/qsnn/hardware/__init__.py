"""A model of the paper's bit-serial accelerator (SPEC §9; paper Sec. 4.4 and Appendix B).

``T`` steps of ``b_s``-bit spikes run as ``T * b_s`` binary slices on a systolic array of
binary-input PEs holding ``b_w``-bit weights, so a layer's work is proportional to its bit
budget. This package costs that::

    from qsnn.hardware import Accelerator, estimate_model
    report = estimate_model("sew_resnet18_cifar", "8/2/2", accel=Accelerator().with_array("32x16"))
    print(report.table())           # per layer: GEMM, slices, tiles, cycles, bound, utilisation
    report.fps, report.totals["energy_pj"]

- ``Accelerator`` / ``DEFAULT_ACCELERATOR`` / ``XCK26``: the device description.
- ``GemmShape`` + ``layer_cost`` -> ``LayerCost``: the per-layer cycle, DMA and energy model.
- ``estimate(model)`` / ``estimate_model(name, bits)`` -> ``HardwareReport``.
"""

from .cost import GemmShape, LayerCost, layer_cost
from .device import DEFAULT_ACCELERATOR, XCK26, Accelerator, DeviceResources, parse_array
from .report import HardwareReport, estimate, estimate_model, gemms_from_model

__all__ = [
    "DEFAULT_ACCELERATOR",
    "XCK26",
    "Accelerator",
    "DeviceResources",
    "GemmShape",
    "HardwareReport",
    "LayerCost",
    "estimate",
    "estimate_model",
    "gemms_from_model",
    "layer_cost",
    "parse_array",
]

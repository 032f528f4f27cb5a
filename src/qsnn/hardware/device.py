"""The accelerator description: PE array, clock, buffers, DMA, per-PE cost, energy per bit.

The paper (Shen et al., CVPR 2024, Sec. 4.4 and Appendix B) backs the bit budget with an FPGA
accelerator on a Xilinx xck26 (Kria K26): a multi-bit spike train of ``T`` steps and ``b_s``
bits is split into ``T * b_s`` binary slices that stream through a systolic array of
binary-input processing elements (PEs) holding ``b_w``-bit weights. A binary-input PE never
multiplies: it adds its stationary weight into the partial sum that flows down its column when
its input bit is 1, so its cost is an adder of ``b_w + ceil(log2(rows))`` bits.

``Accelerator()`` is the default configuration. Which default comes from where is listed in
``docs/hardware.md``; in short, the device totals are the xck26's and every other number
(array shape, clock, buffers, DMA width, energies) is a stated assumption, because the paper
prints no array size and its Table 6 could not be checked here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ..allocation import check_weight_bits
from ..metrics.energy import DEFAULT_ENERGY

__all__ = [
    "DEFAULT_ACCELERATOR",
    "XCK26",
    "Accelerator",
    "DeviceResources",
    "parse_array",
]

PEKind = Literal["dsp", "lut"]


@dataclass(frozen=True)
class DeviceResources:
    """Programmable-logic totals of an FPGA device (what a design may use)."""

    name: str
    luts: int
    ffs: int
    dsps: int
    bram_36k: int
    uram_288k: int

    @property
    def on_chip_bytes(self) -> int:
        """Block RAM plus UltraRAM capacity in bytes."""
        return (self.bram_36k * 36 * 1024 + self.uram_288k * 288 * 1024) // 8

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: Xilinx xck26 (Zynq UltraScale+ MPSoC of the Kria K26 SOM), device totals from AMD's K26
#: data sheet (the same programmable logic as the XCZU5EV). Assumption: recalled, not checked
#: against the paper's Table 6, which reports the design's utilisation of this device.
XCK26 = DeviceResources(
    name="xck26", luts=117_120, ffs=234_240, dsps=1_248, bram_36k=144, uram_288k=64
)


def parse_array(text: str) -> tuple[int, int]:
    """``"32x16"`` -> ``(rows, cols)``; raises ``ValueError`` for anything else."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        rows, cols = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--array must look like ROWSxCOLS, e.g. 32x16; got {text!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"--array needs at least one row and one column; got {text!r}")
    return rows, cols


def _positive(name: str, value: object, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if ok and integer:
        ok = isinstance(value, int) or float(value).is_integer()
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"Accelerator.{name} must be {kind} > 0; got {value!r}")


@dataclass(frozen=True)
class Accelerator:
    """A bit-serial systolic accelerator (see ``qsnn.hardware.cost`` for the cycle model).

    Args:
        rows: PE rows; the reduction dimension ``K`` of a GEMM is tiled over them (assumption).
        cols: PE columns; output channels ``M`` are tiled over them (assumption).
        clock_hz: clock of the array, the DMA and the post-processing unit (assumption).
        weight_buffer_bytes, input_buffer_bytes: on-chip buffers (assumption; 768 KiB together,
            about half of the xck26's block and ultra RAM).
        dma_bytes_per_cycle: DRAM bandwidth per clock (assumption: one 128-bit AXI port, 16 B).
        weight_load_rows_per_cycle: rows of the shadow weight registers filled per cycle from
            the weight buffer (assumption: 1, so a new weight tile takes ``rows`` cycles).
        post_lanes: outputs the post-processing unit (partial-sum aggregation, batch-norm-folded
            threshold, neuron) handles per cycle; ``None`` means one per column (assumption).
        pe_kind: ``"dsp"`` (PE adders packed into DSP48E2 SIMD lanes) or ``"lut"`` (adders in
            fabric) for the resource estimate (assumption: DSP, as FPGA SNN arrays do).
        device: the FPGA whose totals the resource estimate is checked against (xck26).
        e_bit_pj: energy of one bit-operation (one binary input times one weight bit), the
            ``e_bit`` of ``qsnn.metrics`` (assumption: (int8 mult + int8 add) / 64 at 45 nm).
        e_dram_pj_per_byte: energy of one byte moved from or to DRAM (assumption: 160 pJ,
            about 20 pJ/bit, Horowitz 2014).
        name: a label for tables.
    """

    rows: int = 32
    cols: int = 16
    clock_hz: float = 200e6
    weight_buffer_bytes: int = 512 * 1024
    input_buffer_bytes: int = 256 * 1024
    dma_bytes_per_cycle: float = 16.0
    weight_load_rows_per_cycle: int = 1
    post_lanes: int | None = None
    pe_kind: PEKind = "dsp"
    device: DeviceResources = field(default=XCK26)
    e_bit_pj: float = DEFAULT_ENERGY.e_bit_pj
    e_dram_pj_per_byte: float = 160.0
    name: str = "xck26 bit-serial array"

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "weight_buffer_bytes", "input_buffer_bytes",
                     "weight_load_rows_per_cycle"):
            _positive(name, getattr(self, name), integer=True)
        for name in ("clock_hz", "dma_bytes_per_cycle"):
            _positive(name, getattr(self, name))
        if self.post_lanes is not None:
            _positive("post_lanes", self.post_lanes, integer=True)
        if self.pe_kind not in ("dsp", "lut"):
            raise ValueError(f"Accelerator.pe_kind must be 'dsp' or 'lut'; got {self.pe_kind!r}")
        for name in ("e_bit_pj", "e_dram_pj_per_byte"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Accelerator.{name} must be a number >= 0; got {value!r}")

    # -- derived figures -----------------------------------------------------------------------
    @property
    def pes(self) -> int:
        """Number of processing elements ``rows * cols``."""
        return self.rows * self.cols

    @property
    def lanes(self) -> int:
        """Outputs the post-processing unit handles per cycle."""
        return self.post_lanes if self.post_lanes is not None else self.cols

    @property
    def dma_bytes_per_s(self) -> float:
        return self.dma_bytes_per_cycle * self.clock_hz

    def with_array(self, array: str | tuple[int, int]) -> Accelerator:
        """A copy with another PE array shape (``"32x16"`` or ``(32, 16)``)."""
        rows, cols = parse_array(array) if isinstance(array, str) else array
        return replace(self, rows=rows, cols=cols)

    def replace(self, **changes: object) -> Accelerator:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def accumulator_bits(self, bits_w: int) -> int:
        """Width of a column partial sum: ``b_w + ceil(log2(rows))`` (a sum of ``rows``
        ``b_w``-bit weights)."""
        return min(bits_w, 16) + max(1, math.ceil(math.log2(self.rows)))

    def pe_cost(self, bits_w: int) -> dict[str, float]:
        """LUTs, flip-flops and DSP slices of one binary-input PE with ``b_w``-bit weights.

        A PE gates its weight with its input bit and adds it to the incoming partial sum of
        ``A = b_w + ceil(log2 rows)`` bits; it holds two weights (double-buffered) and one
        pipeline register. ``"lut"``: ``b_w + A`` LUTs (gate and ripple adder), no DSP.
        ``"dsp"``: the adder runs in a DSP48E2 ALU in SIMD mode (four 12-bit, two 24-bit or one
        48-bit lane), so a PE costs ``1 / lanes`` DSP and ``b_w`` LUTs of gating. Assumption.
        """
        check_weight_bits(bits_w, "bits_w")
        acc = self.accumulator_bits(bits_w)
        w = min(bits_w, 16)
        ffs = 2 * w + acc
        if self.pe_kind == "lut":
            return {"luts": float(w + acc), "ffs": float(ffs), "dsps": 0.0}
        simd = 4 if acc <= 12 else 2 if acc <= 24 else 1
        return {"luts": float(w), "ffs": float(ffs), "dsps": 1.0 / simd}

    def resources(self, bits_w: int) -> dict[str, object]:
        """Estimated use of the device at ``b_w``: PE array, post-processing lanes, buffers.

        Post-processing lane (assumption): a 32-bit shift-add accumulator, a membrane register
        and a threshold comparator, about 150 LUTs and 100 flip-flops, no DSP.
        """
        pe = self.pe_cost(bits_w)
        luts = self.pes * pe["luts"] + 150 * self.lanes
        ffs = self.pes * pe["ffs"] + 100 * self.lanes
        dsps = math.ceil(self.pes * pe["dsps"])
        buffer_bytes = self.weight_buffer_bytes + self.input_buffer_bytes
        d = self.device
        used = {"luts": luts, "ffs": ffs, "dsps": dsps, "buffer_bytes": buffer_bytes}
        fits = {
            "luts": luts <= d.luts,
            "ffs": ffs <= d.ffs,
            "dsps": dsps <= d.dsps,
            "buffer_bytes": buffer_bytes <= d.on_chip_bytes,
        }
        return {"bits_w": bits_w, "per_pe": pe, "used": used, "fits": fits,
                "device": d.to_dict(), "fits_all": all(fits.values())}

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["pes"] = self.pes
        out["lanes"] = self.lanes
        return out

    def describe(self) -> str:
        """One line: array, clock, buffers, DMA."""
        return (
            f"{self.name}: {self.rows}x{self.cols} binary-input PEs at "
            f"{self.clock_hz / 1e6:g} MHz, weight buffer {self.weight_buffer_bytes // 1024} KiB, "
            f"input buffer {self.input_buffer_bytes // 1024} KiB, DMA "
            f"{self.dma_bytes_per_cycle:g} B/cycle ({self.dma_bytes_per_s / 1e9:.2f} GB/s), "
            f"{self.lanes} post-processing lanes"
        )


#: The default configuration (every field's origin is listed in ``docs/hardware.md``).
DEFAULT_ACCELERATOR = Accelerator()

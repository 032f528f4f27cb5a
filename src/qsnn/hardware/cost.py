"""Per-layer cost model of the bit-serial systolic accelerator (paper Sec. 4.4, Appendix B).

A conv or linear layer is a GEMM per sample and per binary slice: ``Y[M, N] = W[M, K] X[K, N]``
with ``M`` output channels, ``K = C_in * k_h * k_w / groups`` inputs per output and ``N`` output
positions (``H_out * W_out`` for a conv, tokens for a linear layer), repeated for ``G = groups``
independent groups. The input is ``T_op`` steps of ``b_in``-bit levels, i.e.
``S = T_op * b_in`` binary slices (SPEC §4), each a ``K x N`` bit matrix.

Mapping (weight stationary): ``K`` is tiled over the ``R`` array rows and ``M`` over the ``C``
columns, so a layer has ``G * ceil(M / C) * ceil(K / R)`` weight tiles. For each tile the array
streams one ``R``-bit input column per cycle, ``N * S`` of them (every position of every slice),
while the next tile's weights fill shadow registers (``ceil(R / rows_per_cycle)`` cycles; the
array stalls when that is longer than the stream). Filling and draining the pipeline costs
``R + C - 2`` cycles once per layer (double-buffered weights keep it streaming between tiles)::

    compute = tiles * max(N * S, load) + load + (R + C - 2)

DMA (DRAM <-> chip), overlapped with compute by double buffering:

    weights = G * M * K * b_w / 8 bytes                              (each weight read once)
    inputs  = in_elems * S / 8 bytes, times ceil(M / C) when neither the input feature map
              fits the input buffer nor the weights fit the weight buffer (then the input is
              streamed again for every column tile)
    outputs = out_elems * out_steps * out_bits / 8 bytes              (b_s-bit levels, T steps;
              32-bit logits for the last layer)
    dma     = (weights + inputs + outputs) / bytes_per_cycle

Post-processing: partial sums of the ``ceil(K / R)`` row tiles and of the ``S`` slices
(``sum_k 2**k``) are aggregated in the column accumulators as they stream out; then each output
goes once per time step through the batch-norm-folded threshold and the neuron, ``lanes`` per
cycle. It overlaps the next column tile, so only the last tile's pass (the tail) adds::

    post = ceil(out_elems * out_steps / lanes),   tail = ceil(min(M, C) * N * out_steps / lanes)
    cycles = max(compute, dma, post) + tail

The verdict ``bound`` names the largest of ``compute``, ``dma`` and ``post``. Utilisation is
useful binary multiply-accumulates over PE-cycles, ``G * M * K * N * S / (R * C * cycles)``.
Energy: ``e_bit * G*M*K*N * S * b_w`` (the S-ACE bit-operations, paper Eq. 8) plus
``e_dram * bytes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .device import Accelerator

__all__ = ["GemmShape", "LayerCost", "layer_cost"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class GemmShape:
    """One layer as the accelerator sees it (per sample).

    Args:
        name, kind: layer name and ``"conv"``, ``"linear"`` or ``"matmul"``.
        m, k, n: output channels, inputs per output, output positions (per group).
        groups: independent GEMMs of that shape (conv groups; heads/batches of a matmul).
        t_op: time steps the layer runs (1 for a stem computed once on a static image).
        b_in: bits of the streamed input levels (8 for the raw image, ``b_s`` for spikes).
        b_w: bits of the stationary operand (weights; the second operand of a matmul).
        in_elems: input feature-map elements per step (``C_in * H_in * W_in``).
        out_steps: steps each output goes through the neuron (``T``; 1 for the logits).
        out_bits: bits written per output per step (``b_s``; 32 for the logits).
    """

    name: str
    kind: str
    m: int
    k: int
    n: int
    groups: int = 1
    t_op: int = 1
    b_in: int = 1
    b_w: int = 8
    in_elems: int = 0
    out_steps: int = 1
    out_bits: int = 1

    def __post_init__(self) -> None:
        for name in ("m", "k", "n", "groups", "t_op", "b_in", "b_w", "out_steps", "out_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GemmShape.{name} must be an integer >= 1; got {value!r}")
        if isinstance(self.in_elems, bool) or not isinstance(self.in_elems, int) or (
            self.in_elems < 0
        ):
            raise ValueError(f"GemmShape.in_elems must be an integer >= 0; got {self.in_elems!r}")

    @property
    def slices(self) -> int:
        """Binary slices ``S = T_op * b_in`` (SPEC §4)."""
        return self.t_op * self.b_in

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one step: ``G * M * K * N``."""
        return self.groups * self.m * self.k * self.n

    @property
    def binary_macs(self) -> int:
        """Binary-input accumulates the array performs: ``macs * S``."""
        return self.macs * self.slices

    @property
    def bit_ops(self) -> int:
        """Bit-operations ``macs * b_w * b_in * T_op`` (the layer's S-ACE, paper Eq. 8)."""
        return self.binary_macs * self.b_w

    @property
    def out_elems(self) -> int:
        """Output elements per step ``G * M * N``."""
        return self.groups * self.m * self.n

    def label(self) -> str:
        """``MxKxN`` (with ``xG`` when grouped)."""
        base = f"{self.m}x{self.k}x{self.n}"
        return base if self.groups == 1 else f"{base}x{self.groups}g"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LayerCost:
    """Cycles, bytes, utilisation and energy of one layer (see the module docstring)."""

    gemm: GemmShape
    m_tiles: int
    k_tiles: int
    tiles: int
    stream_cycles: int  # per tile: N * S
    load_cycles: int  # per tile: ceil(R / rows_per_cycle)
    compute_cycles: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int
    input_refetch: int
    dma_cycles: int
    post_cycles: int
    tail_cycles: int
    cycles: int
    bound: str
    weight_load_limited: bool
    utilization: float
    energy_compute_pj: float
    energy_dram_pj: float

    @property
    def name(self) -> str:
        return self.gemm.name

    @property
    def bytes_moved(self) -> int:
        return self.weight_bytes + self.input_bytes + self.output_bytes

    @property
    def energy_pj(self) -> float:
        return self.energy_compute_pj + self.energy_dram_pj

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["gemm"] = self.gemm.to_dict()
        out.update(name=self.name, bytes_moved=self.bytes_moved, energy_pj=self.energy_pj,
                   slices=self.gemm.slices, macs=self.gemm.macs)
        return out


def layer_cost(gemm: GemmShape, accel: Accelerator) -> LayerCost:
    """The cost of ``gemm`` on ``accel`` (formulas in the module docstring)."""
    rows, cols = accel.rows, accel.cols
    slices = gemm.slices
    m_tiles = _ceil_div(gemm.m, cols)
    k_tiles = _ceil_div(gemm.k, rows)
    tiles = gemm.groups * m_tiles * k_tiles
    stream = gemm.n * slices
    load = _ceil_div(rows, accel.weight_load_rows_per_cycle)
    fill = rows + cols - 2
    compute = tiles * max(stream, load) + load + fill

    weight_bytes = _ceil_div(gemm.groups * gemm.m * gemm.k * gemm.b_w, 8)
    input_once = _ceil_div(gemm.in_elems * slices, 8)
    resident = (
        input_once <= accel.input_buffer_bytes or weight_bytes <= accel.weight_buffer_bytes
    )
    refetch = 1 if resident else m_tiles
    input_bytes = input_once * refetch
    output_bytes = _ceil_div(gemm.out_elems * gemm.out_steps * gemm.out_bits, 8)
    moved = weight_bytes + input_bytes + output_bytes
    dma = math.ceil(moved / accel.dma_bytes_per_cycle)

    lanes = accel.lanes
    post = _ceil_div(gemm.out_elems * gemm.out_steps, lanes)
    tail = _ceil_div(min(gemm.m, cols) * gemm.n * gemm.out_steps, lanes)
    stages = {"compute": compute, "dma": dma, "post": post}
    bound = max(stages, key=lambda key: stages[key])  # ties: compute first
    cycles = stages[bound] + tail
    return LayerCost(
        gemm=gemm,
        m_tiles=m_tiles,
        k_tiles=k_tiles,
        tiles=tiles,
        stream_cycles=stream,
        load_cycles=load,
        compute_cycles=compute,
        weight_bytes=weight_bytes,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        input_refetch=refetch,
        dma_cycles=dma,
        post_cycles=post,
        tail_cycles=tail,
        cycles=cycles,
        bound=bound,
        weight_load_limited=load > stream,
        utilization=gemm.binary_macs / (accel.pes * cycles),
        energy_compute_pj=accel.e_bit_pj * gemm.bit_ops,
        energy_dram_pj=accel.e_dram_pj_per_byte * moved,
    )

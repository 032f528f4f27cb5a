"""Tests of the bit-serial accelerator model (SPEC §9; paper Sec. 4.4, Table 4, Appendix B).

Cycle, byte and verdict figures are checked against hand computations written out in each
test's docstring, with the formulas of ``qsnn.hardware.cost``:

    S = T_op * b_in,  tiles = G * ceil(M / C) * ceil(K / R),  load = ceil(R / rows_per_cycle)
    compute = tiles * max(N * S, load) + load + (R + C - 2)
    dma = ceil((G*M*K*b_w/8 + in_elems*S/8 * refetch + out_elems*out_steps*out_bits/8) / B)
    post = ceil(out_elems * out_steps / lanes),  tail = ceil(min(M, C) * N * out_steps / lanes)
    cycles = max(compute, dma, post) + tail
"""

from __future__ import annotations

import json

import pytest

from qsnn.cli import main
from qsnn.hardware import (
    DEFAULT_ACCELERATOR,
    XCK26,
    Accelerator,
    GemmShape,
    estimate_model,
    gemms_from_model,
    layer_cost,
    parse_array,
)
from qsnn.models import create_model

# --------------------------------------------------------------------------------------------
# Hand-computed layers
# --------------------------------------------------------------------------------------------


def test_conv_that_tiles_evenly():
    """3x3 conv 32 -> 32 channels on an 8x8 map, 4/2/2 spikes, 8-bit weights, 32x16 array.

    GEMM: M = 32, K = 32*3*3 = 288, N = 8*8 = 64; S = T_op*b_in = 2*2 = 4.
    Tiles: ceil(32/16) = 2 column tiles, 288/32 = 9 row tiles (both exact), 18 tiles.
    Per tile the array streams N*S = 256 input columns; a weight tile loads in 32 cycles
    (hidden behind 256). compute = 18*256 + 32 + (32+16-2) = 4608 + 32 + 46 = 4686.
    DMA: weights 32*288*8/8 = 9216 B; input 32*64 elements * 4 bits / 8 = 1024 B (fits the
    input buffer, read once); output 32*64 elements * 2 steps * 2 bits / 8 = 1024 B;
    11264 B / 16 B per cycle = 704 cycles.
    Post: 2048 outputs * 2 steps / 16 lanes = 256; tail = 16*64*2/16 = 128.
    cycles = max(4686, 704, 256) + 128 = 4814, compute-bound;
    utilisation = 32*288*64*4 / (512 * 4814) = 2359296 / 2464768.
    """
    g = GemmShape("conv", "conv", m=32, k=288, n=64, t_op=2, b_in=2, b_w=8, in_elems=32 * 64,
                  out_steps=2, out_bits=2)
    r = layer_cost(g, DEFAULT_ACCELERATOR)
    assert (r.m_tiles, r.k_tiles, r.tiles) == (2, 9, 18)
    assert (r.stream_cycles, r.load_cycles, r.compute_cycles) == (256, 32, 4686)
    assert (r.weight_bytes, r.input_bytes, r.output_bytes) == (9216, 1024, 1024)
    assert r.bytes_moved == 11264 and r.dma_cycles == 704
    assert (r.post_cycles, r.tail_cycles, r.cycles) == (256, 128, 4814)
    assert r.bound == "compute" and not r.weight_load_limited
    assert r.utilization == pytest.approx(2359296 / 2464768)


def test_conv_with_partial_tiles():
    """A stem-like 3x3 conv, 3 -> 20 channels on a 10x10 image (padding 1), 8-bit raw input
    computed once (T_op = 1, b_in = 8), 4-bit weights, T = 4 steps of 1-bit spikes out.

    GEMM: M = 20, K = 27, N = 100; S = 1*8 = 8.
    Tiles: ceil(20/16) = 2 column tiles (16 + a partial 4), ceil(27/32) = 1 partial row tile:
    2 tiles that use 27*20 = 540 of their 2*512 PE slots.
    compute = 2 * max(100*8, 32) + 32 + 46 = 1600 + 78 = 1678.
    DMA: weights 20*27*4/8 = 270 B; input 3*10*10 * 8 bits / 8 = 300 B; output 2000 elements
    * 4 steps * 1 bit / 8 = 1000 B; 1570 B / 16 = 98.1 -> 99 cycles.
    Post: 2000 * 4 / 16 = 500; tail = 16*100*4/16 = 400.
    cycles = max(1678, 99, 500) + 400 = 2078, compute-bound;
    utilisation = 20*27*100*8 / (512 * 2078) = 432000 / 1063936 (about 41 %).
    """
    g = GemmShape("stem", "conv", m=20, k=27, n=100, t_op=1, b_in=8, b_w=4, in_elems=300,
                  out_steps=4, out_bits=1)
    r = layer_cost(g, DEFAULT_ACCELERATOR)
    assert (r.m_tiles, r.k_tiles, r.tiles) == (2, 1, 2)
    assert r.compute_cycles == 1678
    assert (r.weight_bytes, r.input_bytes, r.output_bytes) == (270, 300, 1000)
    assert r.dma_cycles == 99
    assert (r.post_cycles, r.tail_cycles, r.cycles) == (500, 400, 2078)
    assert r.bound == "compute"
    assert r.utilization == pytest.approx(432000 / 1063936)


def test_linear_limited_by_dma():
    """A 1024 -> 1024 linear layer fed one binary slice (1/1/1), 8-bit weights, on a 32x16
    array whose weight registers load 8 rows per cycle.

    GEMM: M = 1024, K = 1024, N = 1, S = 1. Tiles: 64 column x 32 row = 2048. Each tile
    streams one input column but needs ceil(32/8) = 4 cycles to load its weights, so the
    array waits on weight loads: compute = 2048*4 + 4 + 46 = 8242.
    DMA: weights 1024*1024*8/8 = 1048576 B, input 1024*1/8 = 128 B, output 1024*1*1/8 = 128 B:
    1048832 / 16 = 65552 cycles.
    Post: 1024/16 = 64; tail = 16*1*1/16 = 1. cycles = 65552 + 1 = 65553: DMA-bound (every
    weight is used once, for one binary input column).
    """
    accel = Accelerator(weight_load_rows_per_cycle=8)
    g = GemmShape("fc", "linear", m=1024, k=1024, n=1, t_op=1, b_in=1, b_w=8, in_elems=1024,
                  out_steps=1, out_bits=1)
    r = layer_cost(g, accel)
    assert r.tiles == 2048 and r.load_cycles == 4 and r.weight_load_limited
    assert r.compute_cycles == 8242
    assert (r.weight_bytes, r.input_bytes, r.output_bytes) == (1048576, 128, 128)
    assert r.dma_cycles == 65552
    assert (r.post_cycles, r.tail_cycles, r.cycles) == (64, 1, 65553)
    assert r.bound == "dma"


def test_input_refetched_when_no_buffer_holds_it():
    """The even conv above on an accelerator with 512-byte buffers: the 1024-byte input does
    not fit the input buffer and the 9216-byte weights do not fit the weight buffer, so the
    input streams once per column tile: 2 * 1024 = 2048 B. DMA = (9216 + 2048 + 1024) / 16 =
    768 cycles; compute is unchanged (4686)."""
    accel = Accelerator(weight_buffer_bytes=512, input_buffer_bytes=512)
    g = GemmShape("conv", "conv", m=32, k=288, n=64, t_op=2, b_in=2, b_w=8, in_elems=32 * 64,
                  out_steps=2, out_bits=2)
    r = layer_cost(g, accel)
    assert r.input_refetch == 2 and r.input_bytes == 2048
    assert r.dma_cycles == 768 and r.compute_cycles == 4686


def test_energy_is_bit_operations_plus_dram_bytes():
    g = GemmShape("conv", "conv", m=32, k=288, n=64, t_op=2, b_in=2, b_w=8, in_elems=32 * 64,
                  out_steps=2, out_bits=2)
    accel = Accelerator(e_bit_pj=0.5, e_dram_pj_per_byte=10.0)
    r = layer_cost(g, accel)
    assert g.bit_ops == 32 * 288 * 64 * 8 * 2 * 2  # MACs * b_w * b_in * T_op (S-ACE)
    assert r.energy_compute_pj == pytest.approx(0.5 * g.bit_ops)
    assert r.energy_dram_pj == pytest.approx(10.0 * 11264)


# --------------------------------------------------------------------------------------------
# GEMM shapes observed from a model
# --------------------------------------------------------------------------------------------


def test_gemm_shapes_from_small_convnet():
    """small_convnet on 1x8x8 at 4/2/2: the stem conv runs once on the 8-bit image
    (M = 32, K = 1*3*3, N = 64, T_op = 1, b_in = 8); the next conv M = 64, K = 32*9 = 288,
    N = 64 for 2 steps of 2-bit spikes; the head is 10 x 128 (128 channels x 1 x 1), N = 1,
    writing 32-bit logits once."""
    model = create_model("small_convnet", bits="4/2/2", in_channels=1, img_size=8)
    import torch

    gemms = gemms_from_model(model, torch.rand(2, 1, 8, 8))
    stem, first, head = gemms[0], gemms[1], gemms[-1]
    assert (stem.m, stem.k, stem.n, stem.t_op, stem.b_in, stem.b_w) == (32, 9, 64, 1, 8, 4)
    assert (stem.in_elems, stem.out_steps, stem.out_bits) == (64, 2, 2)
    assert (first.m, first.k, first.n, first.t_op, first.b_in) == (64, 288, 64, 2, 2)
    assert first.in_elems == 32 * 64
    assert (head.kind, head.m, head.k, head.n, head.out_bits, head.out_steps) == (
        "linear", 10, 128, 1, 32, 1)
    assert len(gemms) == 6


# --------------------------------------------------------------------------------------------
# Paper Table 4, by ratios
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sew_reports():
    return {b: estimate_model("sew_resnet18_cifar", b)
            for b in ("8/1/4", "8/2/2", "8/4/1", "8/8/1", "8/2/4")}


def test_same_slices_same_cycles(sew_reports):
    """At b_w = 8 the allocations 8/1/4, 8/2/2 and 8/4/1 all stream T*b_s = 4 slices per
    layer: their cycles agree within 2 %. What differs is the neuron tail of each layer
    (``out_steps = T`` passes), so more time steps cost slightly more."""
    base = sew_reports["8/4/1"].cycles
    for b in ("8/1/4", "8/2/2"):
        assert abs(sew_reports[b].cycles / base - 1) < 0.02
    assert sew_reports["8/1/4"].cycles >= sew_reports["8/2/2"].cycles >= base


def test_doubling_slices_doubles_cycles(sew_reports):
    """Doubling T*b_s (4 -> 8: 8/8/1, and 8/2/4, the paper's "8/2/3" read as a typo) multiplies
    cycles by 1.8x-2.3x. It stays just under 2x: the stem runs once on the 8-bit image
    (8 slices whatever the allocation), and the pipeline fill, weight loads and neuron tail
    of every layer do not scale with the slices."""
    base = sew_reports["8/4/1"].cycles
    for b in ("8/8/1", "8/2/4"):
        ratio = sew_reports[b].cycles / base
        assert 1.8 <= ratio <= 2.3
        assert ratio < 2.0
    stem = sew_reports["8/4/1"].layers[0]
    assert stem.gemm.slices == 8 and sew_reports["8/8/1"].layers[0].gemm.slices == 8


def test_report_totals_and_table(sew_reports):
    r = sew_reports["8/2/2"]
    assert r.fps == pytest.approx(r.accel.clock_hz / r.cycles)
    assert r.latency_s == pytest.approx(r.cycles / r.accel.clock_hz)
    assert r.cycles == sum(layer.cycles for layer in r.layers)
    assert r.totals["bit_ops"] == pytest.approx(sum(x.gemm.bit_ops for x in r.layers))
    table = r.table()
    assert "fps" in table and "layer4.1.conv2.conv" in table and "compute" in table
    data = json.loads(r.to_json())
    assert data["bits"] == "8/2/2" and len(data["layers"]) == len(r.layers)


# --------------------------------------------------------------------------------------------
# The device description
# --------------------------------------------------------------------------------------------


def test_default_device_and_resources():
    accel = Accelerator()
    assert (accel.rows, accel.cols, accel.pes) == (32, 16, 512)
    assert accel.device is XCK26 and XCK26.dsps == 1248
    cost = accel.pe_cost(8)  # 8 + log2(32) = 13-bit adder: two 24-bit SIMD lanes per DSP
    assert accel.accumulator_bits(8) == 13 and cost["dsps"] == 0.5
    assert accel.pe_cost(4)["dsps"] == 0.25  # 9-bit adder: four 12-bit lanes
    res = accel.resources(8)
    assert res["used"]["dsps"] == 256 and res["fits_all"]
    assert not Accelerator(rows=128, cols=128).resources(8)["fits"]["dsps"]


def test_array_parsing_and_validation():
    assert parse_array("32x16") == (32, 16)
    assert Accelerator().with_array("64x8").pes == 512
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        parse_array("32by16")
    with pytest.raises(ValueError, match="rows"):
        Accelerator(rows=0)
    with pytest.raises(ValueError, match="clock_hz"):
        Accelerator(clock_hz=-1.0)
    with pytest.raises(ValueError, match=r"GemmShape\.k"):
        GemmShape("x", "conv", m=1, k=0, n=1)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_hw_table_and_json(capsys):
    assert main(["hw", "--model", "small_convnet", "--bits", "4/2/2,4/4/1",
                 "--input-size", "1x8x8", "--array", "16x16", "--clock", "100e6"]) == 0
    out = capsys.readouterr().out
    assert "16x16 binary-input PEs at 100 MHz" in out and "fps" in out and "x cycles" in out
    assert main(["hw", "--model", "small_convnet", "--bits", "4/2/2", "--input-size", "1x8x8",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bits"] == "4/2/2" and data["totals"]["fps"] > 0


def test_cli_hw_errors(capsys):
    assert main(["hw", "--model", "small_convnet", "--bits", "4/2/9x"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["hw", "--model", "small_convnet", "--bits", "4/2/2", "--array", "4-4"]) == 2
    assert "--array" in capsys.readouterr().err


def test_profile_and_hw_share_the_model_shape_flags(tmp_path, capsys):
    """``--input-size`` and ``--num-classes`` shape the model the same way in ``qsnn profile``
    and ``qsnn hw``: small_convnet at 16x16 ends in 128 channels at 2x2 (three 2x pools), so
    the head is 512 -> 5."""
    from qsnn import cli

    flags = ["--model", "small_convnet", "--bits", "4/2/2", "--input-size", "3x16x16",
             "--num-classes", "5"]
    assert cli.main(["profile", *flags, "--json", str(tmp_path / "p.json")]) == 0
    assert "input (2, 3, 16, 16)" in capsys.readouterr().out
    head = [r for r in json.loads((tmp_path / "p.json").read_text())["layers"]
            if r["name"] == "head"]
    assert len(head) == 1 and head[0]["macs"] == 512 * 5
    assert cli.main(["hw", *flags, "--json", str(tmp_path / "h.json")]) == 0
    gemm = json.loads((tmp_path / "h.json").read_text())["layers"][-1]["gemm"]
    assert (gemm["name"], gemm["m"], gemm["k"]) == ("head", 5, 512)

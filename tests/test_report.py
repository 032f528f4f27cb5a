"""Sweep report summaries and findings from hand-made run rows (no training needed)."""

from __future__ import annotations

import math

from qsnn import Bits
from qsnn.sweep.report import Report


def _row(bits: str, seed: int, acc: float) -> dict:
    b = Bits.parse(bits)
    return {
        "bits": bits, "b_w": b.w, "b_s": b.s, "T": b.t, "budget": b.budget, "seed": seed,
        "params": 1e5, "params_16": 1e4, "macs": 1e6, "s_ace": 4e6, "ns_ace": 1e6,
        "sops": 1e5, "events": 1e5, "energy_conventional_uj": 1.0, "energy_bits_uj": 0.01,
        "val_acc_best": acc, "test_acc_best": acc, "test_acc_last": acc, "best_epoch": 1,
        "epochs": 1, "wall_time_s": 1.0, "train_images_per_s": 1.0, "fps": None,
        "_firing_rates": [("conv", 0.5)],
    }


def test_two_seeds_give_mean_std_and_a_verdict_beyond_the_spread() -> None:
    """1/4/1 at 0.70/0.72 (mean 0.71, sample std 0.01414) vs 1/1/4 at 0.60/0.61 (mean 0.605,
    std 0.00707): gap 10.50 points > 2 x 1.41, worst 1/4/1 seed 70.00 > best 1/1/4 seed 61.00."""
    rows = [_row("1/4/1", 0, 0.70), _row("1/4/1", 1, 0.72), _row("1/1/4", 0, 0.60),
            _row("1/1/4", 1, 0.61), _row("1/2/2", 0, 0.65), _row("1/2/2", 1, 0.66)]
    report = Report(rows)
    first = report.summary[0]
    assert first["bits"] == "1/4/1" and math.isclose(first["acc"], 0.71)
    assert math.isclose(first["acc_std"], math.sqrt(2) * 0.01, rel_tol=1e-9)
    text = "\n".join(report.findings())
    assert "71.00 ± 1.41" in text
    # All spike bits (1/4/1) against all time steps (1/1/4); the rows' equal firing rates
    # (0.5 in every run) give F2 no direction.
    f1, f2 = report.paper_findings()
    assert f1.key == "F1" and f2.key == "F2" and f2.verdict.startswith("mixed")
    assert f1.verdict == "supported: 1/4/1 ahead by 10.50 points, beyond the seed spread"
    # 2 vs 2 seeds, fully separated: 2 of the C(4, 2) = 6 relabellings reach the gap.
    assert "1/4/1 (71.00 ± 1.41 %) vs 1/1/4 (60.50 ± 0.71 %)" in f1.measured
    assert "largest std 1.41; exact permutation p = 0.33, 2 vs 2 seeds" in f1.measured
    md = report.markdown()
    assert "## The paper's findings, measured" in md and f1.verdict in md


def test_overlapping_seeds_are_within_the_spread() -> None:
    rows = [_row("1/4/1", 0, 0.70), _row("1/4/1", 1, 0.64), _row("1/1/4", 0, 0.66),
            _row("1/1/4", 1, 0.65)]
    f1 = Report(rows).paper_findings()[0]
    assert f1.verdict == "within the seed spread (1/4/1 ahead by 1.50 points)"


def test_one_seed_prints_no_deviation_and_no_verdict() -> None:
    rows = [_row("1/1/4", 0, 0.62), _row("1/4/1", 0, 0.60)]
    report = Report(rows)
    assert math.isnan(report.summary[0]["acc_std"])
    text = "\n".join(report.findings())
    assert "±" not in text
    f1 = report.paper_findings()[0]
    assert f1.verdict == "not resolved: one seed, no spread to judge"
    assert "1/1/4 ahead by 2.00 points (one seed: no seed spread measured" in f1.measured
    md = report.markdown([])
    assert "| 62.00 |" in md and "±" not in md.split("## Findings")[0].split("|---")[1]


def test_a_tie_on_validation_is_named_and_test_accuracy_decides() -> None:
    """4/1/2 and 8/1/1 both reach 100 % validation; 4/1/2 has the higher test accuracy
    (0.98 vs 0.97), so it is the best, and the finding says the tie was broken by test."""
    rows = [_row("4/1/2", 0, 0.98), _row("8/1/1", 0, 0.97), _row("2/2/2", 0, 0.99)]
    for row in rows:
        row["val_acc_best"] = 1.0 if row["bits"] != "2/2/2" else 0.99
    report = Report(rows, {"allocations": ["4/1/2", "8/1/1", "2/2/2", "1/1/8"], "seeds": 2})
    assert report.best()["bits"] == "4/1/2"
    first = report.findings()[0]
    assert "**4/1/2** (100.00 % validation; tied with 8/1/1, so test accuracy decides)" in first
    sweep_line = dict(report.header())["sweep"]
    assert "not finished: 4/1/2 (1 of 2 seeds), 8/1/1 (1 of 2 seeds), 2/2/2 (1 of 2 seeds), " \
        "1/1/8 (no finished run)" in sweep_line
    table = report.markdown()
    head = next(line for line in table.splitlines() if line.startswith("| b_w/b_s/T"))
    assert "| val. acc. (%) | test acc. (%) |" in head
    assert "| **4/1/2** |" in table  # the best row is bold, though 2/2/2 tops the test column


def test_event_sweep_gives_f4_with_the_test_splits_wilson_intervals(tmp_path) -> None:
    """N-MNIST-like rows (100 test recordings): F4, not F1, with Wilson intervals computed for
    n = 100 (0.91 -> [83.8, 95.2] by hand: centre (0.91 + 0.0192) / 1.0384 = 0.8948, half-width
    1.96 * sqrt(0.91 * 0.09 / 100 + 0.000096) / 1.0384 = 0.0571), in
    findings.json and the page."""
    rows = [_row("1/1/16", s, a) for s, a in enumerate((0.90, 0.91, 0.92))]
    rows += [_row("1/16/1", s, a) for s, a in enumerate((0.50, 0.52, 0.51))]
    for row in rows:
        row["samples"] = {"train": 900, "val": 100, "test": 100}
        row["_firing_rates"] = []
    report = Report(rows, {"base": {"model": "small_convnet", "dataset": "nmnist", "epochs": 4}})
    (f4,) = report.paper_findings()
    assert f4.key == "F4" and f4.verdict.startswith("supported: 1/1/16 ahead by 40.00 points")
    assert "1/1/16 [83.8, 95.2]" in f4.measured
    assert f4.setting.startswith("small_convnet, nmnist, 4 epochs; budget 16, b_w = 1")
    report.write(tmp_path)
    import json

    assert json.loads((tmp_path / "findings.json").read_text())[0]["verdict"] == f4.verdict
    page = (tmp_path / "report.html").read_text()
    assert "F4: event data needs time steps" in page and "1/1/16 [83.8, 95.2]" in page


def test_header_names_the_level_step_and_batch_norm_statistics() -> None:
    rows = [_row("1/4/1", 0, 0.70)]
    old = {"model": "small_convnet", "dataset": "cifar10", "bits": "1/4/1"}  # before issue 12
    header = dict(Report(rows, {"base": old}).header())
    assert header["neuron"].startswith("level step fixed, θ = 1.0, θ not learned")
    assert header["batch norm"] == "training's running averages (no re-estimation)"
    new = {**old, "precise_bn": 2048,
           "model_options": {"neuron": {"level_scale": "data", "learn_theta": True}}}  # fmt: skip
    header = dict(Report(rows, {"base": new}).header())
    assert header["neuron"] == "level step data, θ = 1.0, learned θ, pow2_theta = True"
    assert header["batch norm"] == "re-estimated on 2048 training images before each evaluation"


def test_cli_summary_table_over_sweeps(tmp_path, capsys) -> None:
    """`qsnn report A B --summary`: one table of the findings each sweep's rows speak to."""
    import json

    from qsnn import cli

    f1 = tmp_path / "f1"
    f1.mkdir()
    rows = [_row("1/4/1", s, a) for s, a in enumerate((0.75, 0.76, 0.77))]
    rows += [_row("1/1/4", s, a) for s, a in enumerate((0.70, 0.71, 0.72))]
    (f1 / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "results.jsonl").write_text(json.dumps(_row("4/4/1", 0, 0.7)) + "\n")
    assert cli.main(["report", str(f1), str(empty), "--summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| finding | paper |") and len(out) == 3
    assert out[2].startswith("| F1: spike bits beat time steps") and f"({f1}/report.md)" in out[2]
    assert "supported: 1/4/1 ahead by 5.00 points, beyond the seed spread" in out[2]
    assert cli.main(["report", str(empty), "--summary"]) == 2
    assert "none of these sweeps has rows for the paper's findings" in capsys.readouterr().err


def test_per_layer_firing_rates_table_leaves_the_raw_input_out(tmp_path) -> None:
    """F2's per-layer numbers: a table of seed-mean rates per spiking layer (0.4 and 0.2 for
    conv1 of 1/2/2 over two seeds -> 0.300), in report.md and the page."""
    rows = [_row("1/2/2", 0, 0.7), _row("1/2/2", 1, 0.7), _row("1/4/1", 0, 0.7)]
    rows[0]["_firing_rates"] = [("conv1", 0.4), ("conv2", 0.1)]
    rows[1]["_firing_rates"] = [("conv1", 0.2), ("conv2", 0.3)]
    rows[2]["_firing_rates"] = [("conv1", 0.5), ("conv2", 0.25)]
    for row in rows:
        row["raw_input_layers"] = ["stem.conv"]
    report = Report(rows)
    head, body = report.firing_rate_table()
    assert head == ["b_w/b_s/T", "conv1", "conv2", "mean"]
    assert body == [["1/2/2", "0.300", "0.200", "0.250"], ["1/4/1", "0.500", "0.250", "0.375"]]
    report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 1/2/2 | 0.300 | 0.200 | 0.250 |" in md and "stem.conv |" not in md
    assert "<td class=\"num\">0.375</td>" in (tmp_path / "report.html").read_text()


def test_rows_name_their_dataset_when_sweep_json_is_gone() -> None:
    """Rebuilt from results.jsonl alone (no settings), event rows still give F4, not F1."""
    rows = [_row("1/1/16", s, a) for s, a in enumerate((0.90, 0.91, 0.92))]
    rows += [_row("1/16/1", s, a) for s, a in enumerate((0.50, 0.52, 0.51))]
    for row in rows:
        row["dataset"] = "nmnist"
        row["samples"] = {"train": 900, "val": 100, "test": 100}
    assert [f.key for f in Report(rows).paper_findings()] == ["F4", "F2"]

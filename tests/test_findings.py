"""The paper's findings as verdicts from hand-made rows (qsnn.sweep.findings)."""

from __future__ import annotations

import pytest

from qsnn.allocation import Bits
from qsnn.sweep.findings import (
    compare_seeds,
    firing_rate_trend,
    paper_findings,
    permutation_p,
    summary_markdown,
    wilson_interval,
)


def rows(accuracies: dict[str, list[float]]) -> list[dict]:
    out = []
    for bits, values in accuracies.items():
        b = Bits.parse(bits)
        for seed, acc in enumerate(values):
            out.append({"bits": bits, "b_w": b.w, "b_s": b.s, "T": b.t, "budget": b.budget,
                        "seed": seed, "test_acc_best": acc})  # fmt: skip
    return out


def test_permutation_p_by_enumeration() -> None:
    # 3 vs 3 fully separated: of the C(6, 3) = 20 splits only the observed one and its mirror
    # reach |mean difference| = 3, so p = 2/20.
    assert permutation_p([3, 4, 5], [0, 1, 2]) == pytest.approx(0.1)
    assert permutation_p([1, 2], [1, 2]) == 1.0
    # 2 vs 2, values 0 1 | 2 3: splits {0,1},{2,3} give |diff| 2; {0,2},{1,3} and their
    # mirrors give 1 or 0... of the 6 splits, 2 reach 2 -> p = 1/3.
    assert permutation_p([0, 1], [2, 3]) == pytest.approx(1 / 3)


def test_wilson_interval_matches_hand_computation() -> None:
    # 90 of 100: centre (0.9 + 1.96^2/200) / (1 + 1.96^2/100), half-width
    # 1.96 * sqrt(0.0009 + 1.96^2/40000) / (1 + 1.96^2/100): [0.8256, 0.9448].
    lo, hi = wilson_interval(0.9, 100)
    assert lo == pytest.approx(0.82565, abs=2e-5) and hi == pytest.approx(0.94478, abs=2e-5)
    lo, hi = wilson_interval(1.0, 100)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(100 / (100 + 1.959964**2), abs=1e-6)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)


def test_seed_spread_rule() -> None:
    apart = compare_seeds("1/4/1", [0.75, 0.76, 0.77], "1/1/4", [0.70, 0.71, 0.72])
    assert apart.gap == pytest.approx(5.0) and apart.beyond_spread
    assert "beyond the seed spread" in apart.text() and "p = 0.10" in apart.text()
    # Overlapping seeds: within, whatever the means.
    overlap = compare_seeds("a", [0.75, 0.70, 0.77], "b", [0.71, 0.72, 0.73])
    assert not overlap.beyond_spread and "within the seed spread" in overlap.text()
    # Separated but the gap (71.05 - 70.33 = 0.72) is not above twice the larger std (1.0).
    close = compare_seeds("a", [0.7055, 0.7105, 0.7155], "b", [0.700, 0.705, 0.705])
    assert min(close.a_values) > max(close.b_values) and not close.beyond_spread
    one = compare_seeds("a", [0.8], "b", [0.7])
    assert not one.measured and "no verdict" in one.text()


def test_f1_supported_contradicted_and_unresolved() -> None:
    spikes_win = rows({"1/4/1": [0.75, 0.76, 0.77], "1/2/2": [0.73, 0.74, 0.735],
                       "1/1/4": [0.70, 0.71, 0.72]})  # fmt: skip
    (f1,) = paper_findings(spikes_win)
    assert f1.key == "F1" and f1.verdict.startswith("supported")
    assert "1/4/1 76.00 ± 1.00 > 1/2/2 73.50 ± 0.50 > 1/1/4 71.00 ± 1.00" in f1.measured
    steps_win = rows({"1/4/1": [0.70, 0.71, 0.72], "1/1/4": [0.75, 0.76, 0.77]})
    assert paper_findings(steps_win)[0].verdict.startswith("contradicted: 1/1/4 ahead by 5.00")
    tied = rows({"1/4/1": [0.70, 0.75, 0.72], "1/1/4": [0.71, 0.74, 0.73]})
    assert paper_findings(tied)[0].verdict.startswith("within the seed spread")
    assert paper_findings(rows({"1/4/1": [0.7], "1/1/4": [0.6]}))[0].verdict.startswith(
        "not resolved"
    )


def test_f4_gives_wilson_intervals_and_says_what_100_recordings_cannot_tell() -> None:
    far = rows({"1/16/1": [0.50, 0.52, 0.51], "1/1/16": [0.90, 0.91, 0.92]})
    (f4,) = paper_findings(far, events=True, test_size=100)
    assert f4.key == "F4" and f4.verdict.startswith("supported: 1/1/16 ahead by 40.00")
    lo, hi = wilson_interval(0.91, 100)
    assert f"1/1/16 [{100 * lo:.1f}, {100 * hi:.1f}]" in f4.measured
    assert "overlap" not in f4.verdict and "100-sample test split" in f4.caveats[0]
    near = rows({"1/16/1": [0.90, 0.91, 0.92], "1/1/16": [0.93, 0.94, 0.95]})
    (f4,) = paper_findings(near, events=True, test_size=100)
    # 3 points apart beyond the seed spread, but the 100-recording intervals overlap.
    assert "beyond the seed spread" in f4.verdict and "cannot tell them apart" in f4.verdict


def test_f2_firing_rate_trend_of_the_spiking_layers() -> None:
    assert firing_rate_trend({1: {"a": 0.3, "b": 0.2}, 2: {"a": 0.2, "b": 0.3},
                              4: {"a": 0.1, "b": 0.4}}) == {"a": "falls", "b": "rises"}  # fmt: skip
    assert firing_rate_trend({1: {"a": 0.3}, 2: {"a": 0.1}, 4: {"a": 0.2}}) == {"a": "mixed"}
    data = rows({"1/4/1": [0.75], "1/2/2": [0.74], "1/1/4": [0.73]})
    rates = {"1/4/1": {"c1": 0.48, "c2": 0.63}, "1/2/2": {"c1": 0.34, "c2": 0.45},
             "1/1/4": {"c1": 0.20, "c2": 0.30}}  # fmt: skip
    _, f2 = paper_findings(data, spiking_rates=rates)
    assert f2.key == "F2" and f2.verdict.startswith("contradicted: the rate rises")
    assert "0.250 at b_s = 1" in f2.measured and "0.555 at b_s = 4" in f2.measured


def test_f3_needs_three_weight_widths_at_one_spike_split() -> None:
    data = rows({"1/4/1": [0.70, 0.71, 0.72], "4/4/1": [0.74, 0.75, 0.76],
                 "16/4/1": [0.75, 0.76, 0.77]})  # fmt: skip
    (f3,) = paper_findings(data)
    assert f3.key == "F3" and "1/4/1 is 5.00 points behind 16/4/1" in f3.verdict
    close = rows({"1/4/1": [0.74, 0.76, 0.75], "4/4/1": [0.75, 0.76, 0.74],
                  "16/4/1": [0.75, 0.77, 0.74]})  # fmt: skip
    assert paper_findings(close)[0].verdict.startswith("supported")
    # A budget sweep (2/2/1 and 1/2/2 are not the same split): no F3.
    assert [f.key for f in paper_findings(rows({"2/2/1": [0.7], "4/1/1": [0.7]}))] == []


def test_summary_table_round_trips_findings() -> None:
    data = rows({"1/4/1": [0.75, 0.76, 0.77], "1/1/4": [0.70, 0.71, 0.72]})
    (f1,) = paper_findings(data, context="small_convnet, CIFAR-10, 4 epochs")
    again = type(f1).from_dict(f1.as_dict())
    assert again == f1
    table = summary_markdown([("docs/sweeps/f1/report.md", again)])
    assert table.splitlines()[2].startswith("| F1: spike bits beat time steps")
    assert "small_convnet, CIFAR-10, 4 epochs; budget 4, b_w = 1, 3 seeds" in table
    assert "[docs/sweeps/f1/report.md](docs/sweeps/f1/report.md)" in table
    assert table.count("\n") == 3 and f1.verdict in table


def test_f3_one_seed_gives_the_sign_of_low_against_high() -> None:
    # 1/4/1 is 5 points *behind* 16/4/1: the unresolved verdict must say -5.00, not +5.00.
    data = rows({"1/4/1": [0.70], "4/4/1": [0.74], "16/4/1": [0.75]})
    (f3,) = paper_findings(data)
    assert f3.verdict == "not resolved: one seed (1/4/1 -5.00 points against 16/4/1)"


def test_f4_overlapping_intervals_are_not_a_verdict_and_the_caveat_matches_the_rule() -> None:
    near = rows({"1/16/1": [0.90, 0.91, 0.92], "1/1/16": [0.93, 0.94, 0.95]})
    (f4,) = paper_findings(near, events=True, test_size=100)
    # Beyond the seed spread, but the module's rule: overlapping test-split intervals do not
    # tell the two apart, so the verdict cannot be "supported".
    assert not f4.verdict.startswith(("supported", "contradicted"))
    assert f4.verdict.startswith("not resolved by the 100-sample test split")
    # Intervals stop overlapping once the gap exceeds about their width (~11 points at 91 %),
    # not their half-width (~6 points).
    lo, hi = wilson_interval(0.91, 100)
    assert f"about {100 * (hi - lo):.0f} points" in f4.caveats[0]
    a, b = wilson_interval(0.85, 100), wilson_interval(0.85 + (hi - lo) / 2, 100)
    assert b[0] <= a[1]  # a half-width apart the intervals still overlap


def test_setting_counts_the_seeds_of_its_own_allocations() -> None:
    data = rows({"1/4/1": [0.75, 0.76, 0.77], "1/1/4": [0.70, 0.71, 0.72],
                 "1/8/1": [0.8], "1/1/8": [0.7]})  # fmt: skip
    by_setting = {f.setting.split(",")[0]: f for f in paper_findings(data)}
    assert by_setting["budget 4"].setting.endswith("3 seeds")
    assert by_setting["budget 8"].setting.endswith("1 seed")


def test_f2_on_event_data_too() -> None:
    """Paper Fig. 6 covers DVS-Gesture: an event sweep gives F4 and F2."""
    data = rows({"1/16/1": [0.5], "1/1/16": [0.9]})
    rates = {"1/16/1": {"c1": 0.1}, "1/1/16": {"c1": 0.3}}
    keys = [f.key for f in paper_findings(data, events=True, test_size=100, spiking_rates=rates)]
    assert keys == ["F4", "F2"]


def test_permutation_p_draws_when_enumeration_is_too_large() -> None:
    """16 vs 16 seeds (C(32, 16) = 6e8 relabellings): drawn, reproducibly. Fully separated
    groups: no random relabelling reaches the observed gap, so p = 1 / (DRAWS + 1)."""
    from qsnn.sweep.findings import DRAWS, permutation_exact

    a, b = [0.8 + 0.001 * i for i in range(16)], [0.7 + 0.001 * i for i in range(16)]
    assert not permutation_exact(16, 16) and permutation_exact(3, 3)
    assert permutation_p(a, b) == pytest.approx(1 / (DRAWS + 1))
    same = [0.7 + 0.001 * (i % 4) for i in range(16)]
    assert permutation_p(same, same) == 1.0  # every relabelling ties the observed 0 gap
    text = compare_seeds("a", a, "b", b).text()
    assert "sampled permutation p = 0.00" in text


def test_f3_for_every_spike_split_with_three_weight_widths() -> None:
    data = rows({"1/4/1": [0.70], "4/4/1": [0.74], "16/4/1": [0.75],
                 "1/2/2": [0.60], "4/2/2": [0.65], "16/2/2": [0.66]})  # fmt: skip
    f3s = [f for f in paper_findings(data) if f.key == "F3"]
    assert [f.setting.split(",")[0] for f in f3s] == ["b_s = 2", "b_s = 4"]

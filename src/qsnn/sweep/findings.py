"""The paper's findings as verdicts computed from a sweep's per-run rows.

Each finding compares allocations of one sweep over seeds. The rules are fixed here, not
chosen per sweep, so a verdict is never typed by hand:

- **Beyond the seed spread** (:func:`compare_seeds`): every seed of the leader scores above
  every seed of the other *and* the gap of the means exceeds twice the larger sample standard
  deviation. The exact two-sided permutation p-value of the mean difference is given next to it
  (with 3 seeds each its smallest possible value is 2/20 = 0.1, so 3 seeds can only ever show a
  gap, not test it at 5 %).
- **Test-split intervals** (:func:`wilson_interval`): a small test split (N-MNIST's 100
  recordings) bounds what any number of seeds can show. Each accuracy gets the Wilson score 95 %
  interval for its test-split size; two allocations whose intervals overlap are not told apart by
  that split.
- **Firing rate against spike bits** (:func:`firing_rate_trend`): per spiking layer, whether the
  seed-mean firing rate falls at every step up in ``b_s`` (paper Fig. 6), rises at every step, or
  neither.

The findings (:func:`paper_findings`): F1 spike bits beat time steps on static images (Table 2),
F2 firing rate falls as ``b_s`` rises (Fig. 6), F3 low-bit weights stay competitive (Table 2),
F4 event data needs time steps (Table 3). A sweep yields the findings its rows can speak to.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Comparison",
    "Finding",
    "compare_seeds",
    "firing_rate_trend",
    "paper_findings",
    "permutation_p",
    "summary_markdown",
    "wilson_interval",
]

#: z for a two-sided 95 % interval (the normal quantile 0.975).
Z95 = 1.959963984540054

#: What the paper reports for each finding (PAPER.md), quoted next to qsnn's figure.
PAPER = {
    "F1": "Table 2, CIFAR-10, Spikformer-4-384: 1/4/1 95.00 > 1/2/2 94.43 > 1/1/4 93.91 "
    "(spike bits ahead by 1.09 points)",
    "F2": "Fig. 6 (CIFAR-100, DVS-Gesture, b_w = 1): firing rates fall as b_s rises and T falls",
    "F3": "Table 2, CIFAR-10: 1/4/1 95.00 vs 4/4/1 96.84 (1.84 points behind); 16/4/1 not "
    "reported (16/1/4: 95.51)",
    "F4": "Table 3, DVS-CIFAR10: 1/1/16 79.8 vs 1/16/1 35.8 (time steps ahead by 44.0 points); "
    "DVS-Gesture best at 1/2/8 (98.48), 1/16/1 95.45",
}


#: Relabellings :func:`permutation_p` enumerates; beyond this (about 10 seeds per side) it draws.
MAX_EXACT = 200_000
#: Random relabellings drawn when the exact count is larger than :data:`MAX_EXACT`.
DRAWS = 100_000


def permutation_exact(n_a: int, n_b: int) -> bool:
    """Whether :func:`permutation_p` enumerates every relabelling of ``n_a`` vs ``n_b`` values."""
    return math.comb(n_a + n_b, n_a) <= MAX_EXACT


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided permutation p-value of ``mean(a) - mean(b)``: the fraction of the
    ``C(n_a + n_b, n_a)`` relabellings of the pooled values whose absolute mean difference is at
    least the observed one (ties counted, so the observed split always counts). Exact up to
    :data:`MAX_EXACT` relabellings; beyond, ``(hits + 1) / (DRAWS + 1)`` over :data:`DRAWS`
    random ones (a fixed seed, so a report is reproducible)."""
    pooled = list(a) + list(b)
    n_a, total = len(a), sum(pooled)
    if not a or not b:
        raise ValueError("both groups need at least one value")

    def diff(sum_a: float) -> float:
        return abs(sum_a / n_a - (total - sum_a) / len(b))

    observed = diff(sum(a)) - 1e-12
    if permutation_exact(n_a, len(b)):
        splits = list(itertools.combinations(range(len(pooled)), n_a))
        return sum(diff(sum(pooled[i] for i in idx)) >= observed for idx in splits) / len(splits)
    rng = random.Random(0)
    hits = sum(diff(sum(rng.sample(pooled, n_a))) >= observed for _ in range(DRAWS))
    return (hits + 1) / (DRAWS + 1)


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``accuracy`` measured on ``n`` samples:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``."""
    if n < 1:
        raise ValueError(f"the interval needs n >= 1 samples; got {n}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1]; got {accuracy}")
    z2 = z * z
    centre = accuracy + z2 / (2 * n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    return (centre - half) / (1 + z2 / n), (centre + half) / (1 + z2 / n)


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _pm(values: Sequence[float]) -> str:
    """``mean ± std`` in percent (``mean`` alone for one seed)."""
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {100 * _std(values):.2f}"


@dataclass(frozen=True)
class Comparison:
    """Allocation ``a`` against ``b`` over seeds (accuracies as fractions)."""

    a: str
    b: str
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]

    @property
    def gap(self) -> float:
        """``mean(a) - mean(b)`` in points (percent)."""
        return 100 * (statistics.fmean(self.a_values) - statistics.fmean(self.b_values))

    @property
    def leader(self) -> str:
        return self.a if self.gap >= 0 else self.b

    @property
    def measured(self) -> bool:
        """Whether both sides have a seed spread (two seeds or more)."""
        return min(len(self.a_values), len(self.b_values)) >= 2

    @property
    def beyond_spread(self) -> bool:
        """Every seed of the leader above every seed of the other, and the gap larger than
        twice the larger standard deviation."""
        if not self.measured:
            return False
        hi, lo = (self.a_values, self.b_values) if self.gap >= 0 else (self.b_values, self.a_values)
        spread = 100 * max(_std(self.a_values), _std(self.b_values))
        return min(hi) > max(lo) and abs(self.gap) > 2 * spread

    @property
    def p_value(self) -> float:
        return permutation_p(self.a_values, self.b_values)

    def text(self) -> str:
        """``a (x ± s %) vs b (y ± s %): LEADER ahead by g points, beyond/within ...``."""
        head = (
            f"{self.a} ({_pm(self.a_values)} %) vs {self.b} ({_pm(self.b_values)} %): "
            f"{self.leader} ahead by {abs(self.gap):.2f} points"
        )
        if not self.measured:
            return head + " (one seed: no seed spread measured, so no verdict)"
        return head + (
            f", {'beyond' if self.beyond_spread else 'within'} the seed spread "
            f"(largest std {100 * max(_std(self.a_values), _std(self.b_values)):.2f}; "
            f"{'exact' if permutation_exact(len(self.a_values), len(self.b_values)) else 'sampled'}"
            f" permutation p = {self.p_value:.2f}, "
            f"{len(self.a_values)} vs {len(self.b_values)} seeds)"
        )


def compare_seeds(
    a: str, a_values: Iterable[float], b: str, b_values: Iterable[float]
) -> Comparison:
    """Compare two allocations' per-seed accuracies (fractions in [0, 1])."""
    a_values, b_values = tuple(float(v) for v in a_values), tuple(float(v) for v in b_values)
    if not a_values or not b_values:
        raise ValueError(f"{a if not a_values else b} has no measured accuracy")
    return Comparison(a, b, a_values, b_values)


def firing_rate_trend(rates: dict[int, dict[str, float]]) -> dict[str, str]:
    """Per layer, how the firing rate moves as ``b_s`` rises: ``rates[b_s][layer]`` is the
    seed-mean firing rate. Returns ``"falls"`` (lower at every step up in ``b_s``), ``"rises"``
    (higher at every step) or ``"mixed"`` for each layer present at every ``b_s``."""
    levels = sorted(rates)
    if len(levels) < 2:
        return {}
    layers = [name for name in rates[levels[0]] if all(name in rates[s] for s in levels)]
    out = {}
    for name in layers:
        steps = [rates[hi][name] - rates[lo][name] for lo, hi in itertools.pairwise(levels)]
        out[name] = "falls" if all(d < 0 for d in steps) else (
            "rises" if all(d > 0 for d in steps) else "mixed"
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings as measured by a sweep."""

    key: str
    claim: str
    setting: str
    paper: str
    measured: str
    verdict: str
    caveats: tuple[str, ...] = field(default=())

    def markdown(self) -> str:
        lines = [
            f"**{self.key}: {self.claim}** ({self.setting})",
            f"- Paper: {self.paper}.",
            f"- qsnn: {self.measured}.",
            f"- Verdict: **{self.verdict}**.",
        ]
        lines += [f"- Caveat: {c.rstrip('.')}." for c in self.caveats]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "claim": self.claim, "setting": self.setting, "paper": self.paper,
            "measured": self.measured, "verdict": self.verdict, "caveats": list(self.caveats),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{**data, "caveats": tuple(data.get("caveats", ()))})


def summary_markdown(entries: Sequence[tuple[str, Finding]]) -> str:
    """One table over several reports: ``(link, finding)`` pairs, in finding order."""
    lines = [
        "| finding | paper | qsnn (mean ± std over seeds) | verdict | report |",
        "|---|---|---|---|---|",
    ]
    for link, f in sorted(entries, key=lambda e: e[1].key):
        cells = [f"{f.key}: {f.claim} ({f.setting})", f.paper, f.measured, f.verdict,
                 f"[{link}]({link})"]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _accuracies(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    by_bits: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.get("test_acc_best") is not None and not math.isnan(r["test_acc_best"]):
            by_bits[r["bits"]].append(float(r["test_acc_best"]))
    return by_bits


def _fields(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
    return {r["bits"]: (r["b_w"], r["b_s"], r["T"], r["budget"]) for r in rows}


def _split_groups(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Allocations of one budget and one ``b_w`` that split the rest between ``b_s`` and
    ``T`` (at least two of them), largest ``b_s`` first."""
    fields, groups = _fields(rows), defaultdict(list)
    for bits, (w, _, _, budget) in fields.items():
        groups[(budget, w)].append(bits)
    out = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda b: -fields[b][1])
        if len({fields[b][1] for b in members}) >= 2:
            out.append(members)
    return out


def _spikes_vs_steps(
    rows: Sequence[dict[str, Any]], test_size: int | None
) -> list[tuple[str, Comparison, list[str], dict[str, tuple[float, float]]]]:
    """Per (budget, b_w): the all-spike-bits end against the all-time-steps end, the ranking of
    every split, and each split's Wilson interval when ``test_size`` is known."""
    acc, fields, out = _accuracies(rows), _fields(rows), []
    for members in _split_groups(rows):
        members = [b for b in members if acc.get(b)]
        if len(members) < 2:
            continue
        spikes, steps = members[0], members[-1]  # largest b_s (T smallest) / b_s smallest
        w, _, _, budget = fields[spikes]
        ranking = sorted(members, key=lambda b: -statistics.fmean(acc[b]))
        intervals = (
            {b: wilson_interval(statistics.fmean(acc[b]), test_size) for b in members}
            if test_size
            else {}
        )
        setting = f"budget {budget}, b_w = {w}"
        out.append((setting, compare_seeds(spikes, acc[spikes], steps, acc[steps]), ranking,
                    intervals))  # fmt: skip
    return out


def _ranking_text(ranking: list[str], acc: dict[str, list[float]]) -> str:
    return " > ".join(f"{b} {_pm(acc[b])}" for b in ranking)


def _seeds_text(acc: dict[str, list[float]], members: Iterable[str]) -> str:
    """The seed counts of ``members`` (the allocations a finding compares), e.g. ``3 seeds``."""
    counts = sorted({len(acc[b]) for b in members})
    return "/".join(str(c) for c in counts) + (" seed" if counts == [1] else " seeds")


def paper_findings(
    rows: Sequence[dict[str, Any]],
    *,
    events: bool = False,
    test_size: int | None = None,
    spiking_rates: dict[str, dict[str, float]] | None = None,
    context: str = "",
) -> list[Finding]:
    """The findings ``rows`` (one per run: ``bits``, ``b_w``, ``b_s``, ``T``, ``budget``,
    ``test_acc_best``) can speak to. ``events``: the data are event recordings (F4 instead of
    F1). ``test_size``: the test split's size, for the Wilson intervals (always given for F4).
    ``spiking_rates[bits][layer]``: seed-mean firing rates of the spiking layers only (F2).
    ``context``: the model/data/epochs, added to each finding's setting."""
    acc, fields, found = _accuracies(rows), _fields(rows), []
    where = f"{context}; " if context else ""
    for setting, cmp, ranking, intervals in _spikes_vs_steps(rows, test_size if events else None):
        spikes_won = cmp.gap > 0
        if events:
            key, claim = "F4", "event data needs time steps"
            supported = not spikes_won
        else:
            key, claim = "F1", "spike bits beat time steps at equal budget (static images)"
            supported = spikes_won
        measured = _ranking_text(ranking, acc) + "; " + cmp.text()
        caveats = []
        if not cmp.measured or not cmp.beyond_spread:
            verdict = (
                "not resolved: one seed, no spread to judge"
                if not cmp.measured
                else f"within the seed spread ({cmp.leader} ahead by {abs(cmp.gap):.2f} points)"
            )
        else:
            verdict = ("supported" if supported else "contradicted") + (
                f": {cmp.leader} ahead by {abs(cmp.gap):.2f} points, beyond the seed spread"
            )
        if intervals:
            lo_hi = {b: f"[{100 * lo:.1f}, {100 * hi:.1f}]" for b, (lo, hi) in intervals.items()}
            measured += (
                "; Wilson 95 % intervals for the "
                + f"{test_size}-sample test split: "
                + (", ".join(f"{b} {lo_hi[b]}" for b in ranking))
            )
            (a_lo, a_hi), (b_lo, b_hi) = intervals[cmp.a], intervals[cmp.b]
            if a_lo <= b_hi and b_lo <= a_hi:
                if cmp.measured and cmp.beyond_spread:
                    # Beyond the seed spread, but by the rule above overlapping intervals do
                    # not tell the two apart: no "supported"/"contradicted".
                    verdict = (
                        f"not resolved by the {test_size}-sample test split: {cmp.leader} "
                        f"ahead by {abs(cmp.gap):.2f} points, beyond the seed spread"
                    )
                verdict += "; the two ends' test-split intervals overlap, so this split cannot "
                verdict += "tell them apart"
            # Two intervals stop overlapping once the gap exceeds about their width (the two
            # half-widths together), not one half-width.
            width = max(hi - lo for lo, hi in intervals.values())
            caveats.append(
                f"a {test_size}-sample test split resolves differences of about "
                f"{100 * width:.0f} points or more at these accuracies, whatever the seeds"
            )
        seeds = _seeds_text(acc, ranking)
        found.append(Finding(key, claim, where + setting + f", {seeds}",
                             PAPER[key], measured, verdict, tuple(caveats)))  # fmt: skip
        if spiking_rates:  # Fig. 6 covers event data too (DVS-Gesture)
            trend = _f2(setting, ranking, fields, spiking_rates, where)
            if trend is not None:
                found.append(trend)
    found += _f3(rows, acc, fields, where)
    return found


def _f2(
    setting: str,
    members: list[str],
    fields: dict[str, tuple[int, int, int, int]],
    spiking_rates: dict[str, dict[str, float]],
    where: str,
) -> Finding | None:
    rates = {fields[b][1]: spiking_rates[b] for b in members if spiking_rates.get(b)}
    trend = firing_rate_trend(rates)
    if not trend:
        return None
    counts = {k: sum(v == k for v in trend.values()) for k in ("falls", "rises", "mixed")}
    n = len(trend)
    means = {s: statistics.fmean(r[name] for name in trend) for s, r in rates.items()}
    measured = (
        "mean firing rate of the spiking layers "
        + ", ".join(f"{means[s]:.3f} at b_s = {s}" for s in sorted(means))
        + f"; per layer it falls in {counts['falls']}, rises in {counts['rises']} and is mixed in "
    )
    measured += f"{counts['mixed']} of {n} layers"
    if counts["falls"] == n:
        verdict = "supported: the rate falls with b_s in every spiking layer"
    elif counts["rises"] == n:
        verdict = "contradicted: the rate rises with b_s in every spiking layer"
    else:
        verdict = "mixed: no common direction across layers"
    caveat = (
        "firing rate is the fraction of non-zero spike values, so a multi-bit spike counts once "
        "whatever its level; rates are means over the test split and seeds"
    )
    return Finding("F2", "firing rate falls as b_s rises", where + setting, PAPER["F2"],
                   measured, verdict, (caveat,))  # fmt: skip


def _f3(
    rows: Sequence[dict[str, Any]],
    acc: dict[str, list[float]],
    fields: dict[str, tuple[int, int, int, int]],
    where: str,
) -> list[Finding]:
    """Per ``(b_s, T)`` with three ``b_w`` or more: the fewest weight bits against the most."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for bits, (_, s, t, _) in fields.items():
        if acc.get(bits):
            groups[(s, t)].append(bits)
    found = []
    for (s, t), members in sorted(groups.items()):
        if len({fields[b][0] for b in members}) < 3:
            continue  # F3 is about a range of weight widths, not one pair of a budget sweep
        members.sort(key=lambda b: fields[b][0])
        low, high = members[0], members[-1]
        cmp = compare_seeds(low, acc[low], high, acc[high])
        ranking = sorted(members, key=lambda b: -statistics.fmean(acc[b]))
        behind = -cmp.gap
        if not cmp.measured:
            verdict = f"not resolved: one seed ({low} {-behind:+.2f} points against {high})"
        elif not cmp.beyond_spread:
            verdict = (
                f"supported: {low} {-behind:+.2f} points against {high}, within the seed spread"
            )
        else:
            side = "behind" if behind > 0 else "ahead of"
            verdict = (
                f"{low} is {abs(behind):.2f} points {side} {high}, beyond the seed spread; "
                "compare with the paper's 1.84-point gap of 1/4/1 to 4/4/1"
            )
        setting = f"{where}b_s = {s}, T = {t}, {_seeds_text(acc, members)}"
        found.append(Finding("F3", "low-bit weights stay competitive", setting, PAPER["F3"],
                             _ranking_text(ranking, acc) + "; " + cmp.text(), verdict))  # fmt: skip
    return found

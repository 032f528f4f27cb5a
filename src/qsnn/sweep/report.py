"""The sweep report: ``results.csv``/``.jsonl``, a Table-2-style table, figures, ``report.md``
and a self-contained ``report.html``. ``qsnn report DIR`` rebuilds it from finished runs.

Figures (need the ``plots`` extra, matplotlib):
- ``accuracy_vs_sace.png``: test accuracy vs S-ACE (log axis), bubble area ~ params_16 (Fig. 4);
- ``allocation.png``: accuracy of each split of the budget between ``b_s`` and ``T``, one line
  per ``b_w`` (Fig. 5);
- ``firing_rates.png``: input firing rate of every layer, one line per allocation (Fig. 6).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..allocation import Bits
from ..io import read_json_object, write_text_atomic
from ..train.config import RESUMABLE_FIELDS, TrainConfig, settings_key

__all__ = ["Report", "build_report", "collect_runs"]


_RUN_FIELDS = (
    "bits",
    "b_w",
    "b_s",
    "T",
    "budget",
    "seed",
    "params",
    "params_16",
    "macs",
    "s_ace",
    "ns_ace",
    "sops",
    "events",
    "energy_conventional_uj",
    "energy_bits_uj",
    "val_acc_best",
    "test_acc_best",
    "test_acc_last",
    "best_epoch",
    "epochs",
    "wall_time_s",
    "train_images_per_s",
    "fps",
)


def _run_row(result: dict[str, Any]) -> dict[str, Any]:
    bits = Bits.parse(result["bits"])
    config = result.get("config")
    settings = TrainConfig.from_dict(config) if isinstance(config, dict) else None
    prof = result.get("profile") or {}
    totals = prof.get("totals", {})
    return {
        "bits": str(bits),
        "b_w": bits.w,
        "b_s": bits.s,
        "T": bits.t,
        "budget": bits.budget,
        "seed": result.get("config", {}).get("seed"),
        "params": prof.get("params"),
        "params_16": prof.get("params_16"),
        "macs": totals.get("macs"),
        "s_ace": totals.get("s_ace"),
        "ns_ace": totals.get("ns_ace"),
        "sops": totals.get("sops"),
        "events": totals.get("events"),
        "energy_conventional_uj": _scale(totals.get("energy_conventional_pj"), 1e-6),
        "energy_bits_uj": _scale(totals.get("energy_bits_pj"), 1e-6),
        "val_acc_best": result.get("val_acc_best"),
        "test_acc_best": result.get("test_acc_best"),
        "test_acc_last": result.get("test_acc_last"),
        "best_epoch": result.get("best_epoch"),
        "epochs": result.get("epochs"),
        "wall_time_s": result.get("wall_time_s"),
        "train_images_per_s": result.get("train_images_per_s"),
        "fps": (result.get("hardware") or {}).get("fps"),
        "_firing_rates": [(layer["name"], layer["fr"]) for layer in prof.get("layers", [])],
        "_settings": settings,
        "_key": settings_key(settings) if settings is not None else None,
    }


def _scale(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def collect_runs(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per finished run (``runs/*/result.json``) of a sweep directory."""
    runs = Path(sweep_dir) / "runs"
    if not runs.is_dir():
        raise ValueError(f"{sweep_dir} is not a sweep directory (no runs/ folder)")
    rows = []
    for path in sorted(runs.glob("*/result.json")):
        result = read_json_object(path, "a run's result")
        try:
            rows.append(_run_row(result))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path} is not a readable run result: {err!r}") from None
    if not rows:
        raise ValueError(f"{sweep_dir} has no finished runs yet (no runs/*/result.json)")
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; the deviation is NaN (unmeasured) for one value."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _extreme(pick, values: list[float | None]) -> float:
    values = [v for v in values if v is not None]
    return pick(values) if values else math.nan


class Report:
    """Per-run rows and per-allocation summaries of one sweep."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        settings: dict[str, Any] | None = None,
        other_runs: list[dict[str, Any]] | None = None,
    ):
        self.rows = rows
        self.settings = settings or {}
        #: Finished runs in the directory trained with other settings (not in the table).
        self.other_runs = other_runs or []
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[row["bits"]].append(row)
        self.summary = []
        for runs in groups.values():
            first = runs[0]
            acc, acc_sd = _mean_std([r["test_acc_best"] for r in runs])
            last, last_sd = _mean_std([r["test_acc_last"] for r in runs])
            val, val_sd = _mean_std([r["val_acc_best"] for r in runs])
            self.summary.append(
                {
                    **{
                        k: first[k]
                        for k in (
                            "bits",
                            "b_w",
                            "b_s",
                            "T",
                            "budget",
                            "params",
                            "params_16",
                            "macs",
                            "s_ace",
                            "fps",
                        )
                    },
                    **{
                        k: _mean_std([r[k] for r in runs])[0]
                        for k in (
                            "ns_ace",
                            "sops",
                            "events",
                            "energy_conventional_uj",
                            "energy_bits_uj",
                            "wall_time_s",
                            "train_images_per_s",
                        )
                    },
                    "seeds": len(runs),
                    "acc": acc,
                    "acc_std": acc_sd,
                    "acc_min": _extreme(min, [r["test_acc_best"] for r in runs]),
                    "acc_max": _extreme(max, [r["test_acc_best"] for r in runs]),
                    "acc_last": last,
                    "acc_last_std": last_sd,
                    "val": val,
                    "val_std": val_sd,
                    "firing_rates": _mean_rates([r["_firing_rates"] for r in runs]),
                }
            )
        self.summary.sort(key=lambda r: (r["budget"], -_nan_low(r["acc"])))

    def best(self) -> dict[str, Any] | None:
        """The allocation with the best validation accuracy (test accuracy when no val split)."""
        if not self.summary:
            return None
        key = "val" if all(not math.isnan(r["val"]) for r in self.summary) else "acc"
        return max(self.summary, key=lambda r: _nan_low(r[key]))

    # -- text -------------------------------------------------------------------------------
    def table(self) -> str:
        """The paper's Table 2 layout: allocation, Params (M), S-ACE, NS-ACE, accuracy."""
        head = (
            f"{'b_w/b_s/T':>10} {'budget':>6} {'Params(M)':>10} {'S-ACE(G)':>10} "
            f"{'NS-ACE(G)':>10} {'SOPs(G)':>9} {'acc (%)':>14} {'last (%)':>14} {'seeds':>5}"
        )
        lines = [head, "-" * len(head)]
        for r in self.summary:
            lines.append(
                f"{r['bits']:>10} {r['budget']:>6} {_fmt(r['params_16'], 1e-6, 3):>10} "
                f"{_fmt(r['s_ace'], 1e-9, 4):>10} {_fmt(r['ns_ace'], 1e-9, 4):>10} "
                f"{_fmt(r['sops'], 1e-9, 4):>9} {_pm(r['acc'], r['acc_std']):>14} "
                f"{_pm(r['acc_last'], r['acc_last_std']):>14} {r['seeds']:>5}"
            )
        return "\n".join(lines)

    def markdown(self, figures: list[str]) -> str:
        s = self.settings.get("base", {})
        seeds = self.settings.get("seeds", max((r["seeds"] for r in self.summary), default=1))
        lines = [
            f"# qsnn sweep: {s.get('model', '?')} on {s.get('dataset', '?')}",
            "",
            f"Allocations `b_w/b_s/T` trained from scratch for {s.get('epochs', '?')} epochs "
            f"each, {seeds} seed(s) per allocation (accuracy: mean ± std over seeds). "
            f"Accuracy is test accuracy at the epoch chosen on the validation split "
            f"({'held out from training' if s.get('val_size', 1) != 0 else 'none: last epoch'})."
            f" Params are 16-bit equivalents (`params_16`); S-ACE, NS-ACE and SOPs are per "
            f"sample (SPEC §5), measured on the test set.",
            "",
            "| b_w/b_s/T | budget | Params (M) | S-ACE (G) | NS-ACE (G) | SOPs (G) | "
            "conv. energy (µJ) | bit-budget energy (µJ) | accuracy (%) | last epoch (%) | "
            + ("fps | " if any(r["fps"] for r in self.summary) else "")
            + "wall (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"
            + ("---|" if any(r["fps"] for r in self.summary) else "")
            + "---|",
        ]
        for r in self.summary:
            fps = (
                f"{r['fps']:.0f} | "
                if any(x["fps"] for x in self.summary) and r["fps"]
                else ("– | " if any(x["fps"] for x in self.summary) else "")
            )
            lines.append(
                f"| {r['bits']} | {r['budget']} | {_fmt(r['params_16'], 1e-6, 3)} | "
                f"{_fmt(r['s_ace'], 1e-9, 4)} | {_fmt(r['ns_ace'], 1e-9, 4)} | "
                f"{_fmt(r['sops'], 1e-9, 4)} | {_fmt(r['energy_conventional_uj'], 1, 3)} | "
                f"{_fmt(r['energy_bits_uj'], 1, 4)} | {_pm(r['acc'], r['acc_std'])} | "
                f"{_pm(r['acc_last'], r['acc_last_std'])} | {fps}{_fmt(r['wall_time_s'], 1, 0)} |"
            )
        if self.other_runs:
            lines += ["", _other_runs_note(self.other_runs, self.settings.get("base", {}))]
        lines += ["", "## Findings", ""]
        lines += [f"- {sentence}" for sentence in self.findings()]
        for fig, caption in zip(figures, _CAPTIONS.values(), strict=False):
            lines += ["", f"![{caption}]({fig})", "", f"*{caption}*"]
        if not figures:
            lines += [
                "",
                "(Figures need matplotlib: `pip install 'qsnn[plots]'`, then `qsnn report DIR`.)",
            ]
        lines += [
            "",
            "Per-run rows: `results.csv`, `results.jsonl`; every run's directory "
            "holds its config, metrics per epoch and full profile.",
        ]
        return "\n".join(lines) + "\n"

    def findings(self) -> list[str]:
        """Sentences a person reads first: best allocation, spread, energy comparison."""
        out = []
        best = self.best()
        if best is None:
            return out
        chosen_on = "validation" if not math.isnan(best["val"]) else "test"
        out.append(
            f"Best allocation (chosen on {chosen_on} accuracy): **{best['bits']}** with "
            f"{_pm(best['acc'], best['acc_std'])} % test accuracy at budget {best['budget']}."
        )
        by_budget: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in self.summary:
            by_budget[r["budget"]].append(r)
        for budget, group in sorted(by_budget.items()):
            if len(group) < 2:
                continue
            ranked = sorted(group, key=lambda r: -_nan_low(r["acc"]))
            top, low = ranked[0], ranked[-1]
            out.append(
                f"Budget {budget}: best {top['bits']} ({_pm(top['acc'], top['acc_std'])} %) vs "
                f"worst {low['bits']} ({_pm(low['acc'], low['acc_std'])} %): "
                + _compare(top, low)
                + "."
            )
            out += _spike_bits_vs_time(group)
            e_conv = [r for r in group if r["energy_conventional_uj"]]
            if len(e_conv) >= 2:
                lo = min(e_conv, key=lambda r: r["energy_conventional_uj"])
                hi = max(e_conv, key=lambda r: r["energy_conventional_uj"])
                out.append(
                    f"Energy at budget {budget}: the conventional SOP estimate (0.9 pJ per spike "
                    f"event, 4.6 pJ per dense MAC) ranges {lo['energy_conventional_uj']:.3f}-"
                    f"{hi['energy_conventional_uj']:.3f} µJ ({lo['bits']} lowest); the "
                    f"bit-budget estimate (e_bit x NS-ACE) ranges "
                    f"{min(r['energy_bits_uj'] for r in e_conv):.4f}-"
                    f"{max(r['energy_bits_uj'] for r in e_conv):.4f} µJ. The SOP estimate ignores "
                    f"spike and weight widths, so it favours multi-bit spikes that fire less."
                )
        return out

    # -- files ------------------------------------------------------------------------------
    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        out = Path(out_dir)
        written = []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(_RUN_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row)
        written.append(write_text_atomic(out / "results.csv", buf.getvalue()))
        written.append(
            write_text_atomic(
                out / "results.jsonl",
                "".join(
                    json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n"
                    for r in self.rows
                ),
            )
        )
        figures = _figures(self, out)
        written += [out / f for f in figures]
        md = self.markdown(figures)
        written.append(write_text_atomic(out / "report.md", md))
        written.append(write_text_atomic(out / "report.html", _html(self, md, out, figures)))
        return written


_CAPTIONS = {
    "accuracy_vs_sace.png": "Test accuracy vs S-ACE (log axis); bubble area ~ params_16 (Fig. 4)",
    "allocation.png": "Accuracy of each split of the budget between b_s and T, one line per b_w "
    "(Fig. 5)",
    "firing_rates.png": "Input firing rate per layer, one line per allocation (Fig. 6)",
}


def _figures(report: Report, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    rows = [r for r in report.summary if not math.isnan(r["acc"])]
    if not rows:
        return names

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    p16 = [r["params_16"] or 0 for r in rows]
    top = max(p16) or 1
    for r, p in zip(rows, p16, strict=True):
        ax.scatter(r["s_ace"], 100 * r["acc"], s=60 + 900 * p / top, alpha=0.55)
        ax.errorbar(
            r["s_ace"], 100 * r["acc"], yerr=100 * _or0(r["acc_std"]), fmt="none", color="k", lw=0.8
        )
        ax.annotate(
            r["bits"],
            (r["s_ace"], 100 * r["acc"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("S-ACE per sample (bit operations, log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs S-ACE (bubble area ~ params_16)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_sace.png", dpi=120)
    plt.close(fig)
    names.append("accuracy_vs_sace.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_w: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_w[r["b_w"]].append(r)
    several_budgets = len({r["budget"] for r in rows}) > 1
    for w, group in sorted(by_w.items()):
        group.sort(key=lambda r: (r["budget"], r["T"]))
        line = ax.errorbar(
            [r["T"] for r in group],
            [100 * r["acc"] for r in group],
            yerr=[100 * _or0(r["acc_std"]) for r in group],
            marker="o",
            capsize=3,
            label=f"b_w = {w}",
        )
        for r in group:
            tag = f"{r['b_s']}/{r['T']}" + (f" (BB {r['budget']})" if several_budgets else "")
            ax.annotate(
                tag,
                (r["T"], 100 * r["acc"]),
                textcoords="offset points",
                xytext=(5, -12),
                fontsize=7,
                color=line[0].get_color(),
            )
    ax.set_xscale("log", base=2)
    ticks = sorted({r["T"] for r in rows})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("time steps T (the rest of the budget goes to spike bits: labels b_s/T)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Splitting the budget between spike bits and time steps")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "allocation.png", dpi=120)
    plt.close(fig)
    names.append("allocation.png")

    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for r in rows:
        rates = r["firing_rates"]
        if rates:
            ax.plot(range(len(rates)), [fr for _, fr in rates], marker=".", label=r["bits"])
    if rows and rows[0]["firing_rates"]:
        names_l = [n for n, _ in rows[0]["firing_rates"]]
        ax.set_xticks(range(len(names_l)))
        ax.set_xticklabels(
            [n.replace(".conv", "").replace(".linear", "") for n in names_l],
            rotation=60,
            ha="right",
            fontsize=7,
        )
    ax.set_ylabel("input firing rate (non-zero fraction)")
    ax.set_title("Firing rate per layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "firing_rates.png", dpi=120)
    plt.close(fig)
    names.append("firing_rates.png")
    return names


def _mean_rates(per_run: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    if not per_run or not per_run[0]:
        return []
    names = [n for n, _ in per_run[0]]
    return [
        (n, statistics.fmean(run[i][1] for run in per_run if len(run) > i))
        for i, n in enumerate(names)
    ]


def _nan_low(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _or0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def _fmt(value: float | None, factor: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * factor:.{digits}f}"


def _pm(mean: float, std: float) -> str:
    """``mean ± std`` in percent; the mean alone when the deviation is unmeasured (one seed)."""
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How far ``a``'s accuracy is ahead of ``b``'s, judged against the spread over seeds."""
    gap = 100 * (a["acc"] - b["acc"])
    text = f"{a['bits']} ahead by {gap:.2f} points"
    if min(a["seeds"], b["seeds"]) < 2:
        return text + " (one seed: no seed spread measured, so no verdict)"
    spread = 100 * max(a["acc_std"], b["acc_std"])
    apart = a["acc_min"] > b["acc_max"]
    beyond = apart and gap > 2 * spread
    return text + (
        f", {'beyond' if beyond else 'within'} the seed spread (largest std {spread:.2f}; "
        f"worst seed of {a['bits']} {100 * a['acc_min']:.2f} vs best seed of {b['bits']} "
        f"{100 * b['acc_max']:.2f})"
    )


def _spike_bits_vs_time(group: list[dict[str, Any]]) -> list[str]:
    """The paper's question at one budget: per ``b_w``, all remaining bits in spikes
    (largest ``b_s``, ``T = 1`` end) against all in time steps (``b_s = 1``, largest ``T``)."""
    out = []
    by_w: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in group:
        by_w[r["b_w"]].append(r)
    for w, rows in sorted(by_w.items()):
        rows = [r for r in rows if not math.isnan(r["acc"])]
        if len(rows) < 2:
            continue
        spikes = max(rows, key=lambda r: (r["b_s"], -r["T"]))
        steps = max(rows, key=lambda r: (r["T"], -r["b_s"]))
        if spikes is steps or spikes["b_s"] == steps["b_s"]:
            continue
        ahead, behind = (spikes, steps) if spikes["acc"] >= steps["acc"] else (steps, spikes)
        if spikes["acc"] == steps["acc"]:
            winner = "a tie"
        else:
            winner = "spike bits win" if ahead is spikes else "time steps win"
        out.append(
            f"Spike bits vs time steps at b_w = {w}, budget {spikes['budget']}: "
            f"{spikes['bits']} ({_pm(spikes['acc'], spikes['acc_std'])} %) vs {steps['bits']} "
            f"({_pm(steps['acc'], steps['acc_std'])} %): {winner}, " + _compare(ahead, behind) + "."
        )
    return out


def _html(report: Report, markdown: str, out: Path, figures: list[str]) -> str:
    """A self-contained page: the markdown's table and findings, figures inlined as base64."""
    import html

    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append(
                "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"
            )
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            text = html.escape(line[2:]).replace("**", "")
            body.append(f"<p>&bull; {text}</p>")
        elif line.startswith("!["):
            name = line[line.rindex("](") + 2 : -1]
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("*") and line.endswith("*"):
            body.append(f"<p><em>{html.escape(line.strip('*'))}</em></p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;font-size:14px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%;margin:1em 0;border:1px solid #eee}"
    )
    title = html.escape(markdown.splitlines()[0].lstrip("# "))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def split_by_settings(
    rows: list[dict[str, Any]], settings: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(this sweep's runs, other runs)``: a run is the sweep's when its settings key is that
    of the sweep's base config at the run's allocation and seed (``sweep.json``), so a table
    never mixes runs trained with other settings. Without a base config every run is kept."""
    base = settings.get("base")
    if not isinstance(base, dict):
        return rows, []
    base_config = TrainConfig.from_dict(base)
    mine, other = [], []
    for row in rows:
        config = row["_settings"]
        same = config is not None and row["_key"] == settings_key(
            replace(base_config, bits=row["bits"], seed=config.seed)
        )
        (mine if same else other).append(row)
    return mine, other


def _other_runs_note(other: list[dict[str, Any]], base: dict[str, Any]) -> str:
    """One paragraph: which finished runs the table leaves out, and how their settings differ
    from the sweep's."""
    parts = []
    for row in other:
        config = row["_settings"]
        if config is None:
            parts.append(f"{row['bits']} (settings unknown)")
            continue
        differ = [
            f"{k} {v!r}"
            for k, v in config.to_dict().items()
            if k not in RESUMABLE_FIELDS | {"bits", "seed"} and base.get(k, v) != v
        ]
        parts.append(f"{row['bits']} seed {config.seed} ({', '.join(differ) or 'same'})")
    return (
        f"Not in this table: {len(other)} finished run(s) in `runs/` trained with other "
        f"settings than this sweep's: {'; '.join(parts)}."
    )


def build_report(sweep_dir: str | os.PathLike) -> Report:
    """Collect a sweep's finished runs and write every report file into ``sweep_dir``. With a
    ``sweep.json``, only the runs trained with its settings make the table
    (:func:`split_by_settings`); the others are named in the report."""
    settings_path = Path(sweep_dir) / "sweep.json"
    exists = settings_path.exists()
    settings = read_json_object(settings_path, "a sweep's settings") if exists else {}
    mine, other = split_by_settings(collect_runs(sweep_dir), settings)
    if not mine:
        raise ValueError(
            f"{sweep_dir} has no finished run with the settings of its sweep.json yet "
            f"({len(other)} with other settings)"
        )
    report = Report(mine, settings, other)
    report.write(sweep_dir)
    return report

"""The sweep report: ``results.csv``/``.jsonl``, a Table-2-style table, figures, ``report.md``
and a self-contained ``report.html``. ``qsnn report DIR`` rebuilds it from finished runs (or,
when the run directories are gone, from the directory's ``results.jsonl``).

The figures (:mod:`qsnn.sweep.figures`; the ``plots`` extra, matplotlib) are written as PDF
and 200-dpi PNG: Fig. 4 accuracy vs S-ACE, Fig. 5 accuracy by split of the budget, Fig. 6
firing rate per spiking layer. The page is rendered from ``templates/report.html.j2`` with
jinja2 (the ``plots`` extra too); ``report.md`` is written without either.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import math
import os
import re
import statistics
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..allocation import Bits
from ..io import read_json_object, write_text_atomic
from ..train.config import RESUMABLE_FIELDS, TrainConfig, settings_key
from ..train.environment import qsnn_version
from .figures import FigureFile, write_figures
from .findings import Finding, compare_seeds, paper_findings

__all__ = ["Report", "build_report", "collect_runs", "recorded_rows", "rows_from_results"]

#: Every figure stem the report may write; a stem not written this time is deleted, so a
#: rebuilt report never shows a stale figure from an earlier build.
_FIGURE_STEMS = ("accuracy_vs_sace", "allocation", "firing_rates")

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


def _layer_rates(layers: list[dict[str, Any]]) -> tuple[list[tuple[str, float]], list[str]]:
    """``(spiking layers' (name, input firing rate), names of layers reading the raw input)``.
    Profiles mark the raw-input layer with ``spiking_input: false``; an older profile without
    the mark has its first layer taken as raw input when its rate is exactly 1.0."""
    spiking, raw = [], []
    for i, layer in enumerate(layers):
        flag = layer.get("spiking_input")
        is_raw = (flag is False) or (flag is None and i == 0 and layer.get("fr") == 1.0)
        (raw.append(layer["name"]) if is_raw else spiking.append((layer["name"], layer["fr"])))
    return spiking, raw


def _run_row(result: dict[str, Any]) -> dict[str, Any]:
    bits = Bits.parse(result["bits"])
    config = result.get("config")
    settings = TrainConfig.from_dict(config) if isinstance(config, dict) else None
    prof = result.get("profile") or {}
    totals = prof.get("totals", {})
    rates, raw = _layer_rates(prof.get("layers", []))
    return {
        "bits": str(bits),
        "dataset": result.get("dataset"),
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
        # In results.jsonl too, so a report rebuilt from it alone still has Figs. 6 and its
        # header (CSV leaves these out).
        "firing_rates": dict(rates),
        "raw_input_layers": raw,
        "environment": result.get("environment"),
        "samples": result.get("samples"),
        # The run's identity (its settings key), so that a row kept in results.jsonl still
        # names the settings it came from after its run directory is gone.
        "key": settings_key(settings) if settings is not None else None,
        "_firing_rates": rates,
        "_settings": settings,
    }


def _scale(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def collect_runs(
    sweep_dir: str | os.PathLike, *, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """One row per finished run (``runs/*/result.json``) of a sweep directory (none yet is an
    error unless ``allow_empty``)."""
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
    if not rows and not allow_empty:
        raise ValueError(f"{sweep_dir} has no finished runs yet (no runs/*/result.json)")
    return rows


def recorded_rows(sweep_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The rows of a sweep directory's ``results.jsonl`` that name their run (``key``), by
    key: finished runs as the last report recorded them, which stay in the report (and are
    not trained again by a sweep) when their run directories are gone, e.g. in a checkout
    that has the committed report but not the runs. Empty without the file."""
    path = Path(sweep_dir) / "results.jsonl"
    if not path.is_file():
        return {}
    return {row["key"]: row for row in rows_from_results(path) if row.get("key")}


def rows_from_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-run rows of an earlier report's ``results.jsonl`` (for a directory that holds
    the report but not its runs, such as a report committed to the docs). Rows written before
    the report kept firing rates have none (no Fig. 6)."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            bits = Bits.parse(row["bits"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} line {n} is not a report row: {err!r}") from None
        row.update(bits=str(bits), b_w=bits.w, b_s=bits.s, T=bits.t, budget=bits.budget)
        row["_firing_rates"] = list((row.get("firing_rates") or {}).items())
        row["_settings"] = None
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
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


@dataclass(frozen=True)
class Column:
    """One column of the results table: its header and how a summary row prints in it."""

    header: str
    cell: Any  # Callable[[dict], str]
    numeric: bool = True


class Report:
    """Per-run rows and per-allocation summaries of one sweep."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        settings: dict[str, Any] | None = None,
        other_runs: list[dict[str, Any]] | None = None,
        source: str | None = None,
    ):
        self.rows = rows
        self.settings = settings or {}
        #: Finished runs in the directory trained with other settings (not in the table).
        self.other_runs = other_runs or []
        #: Where the rows came from when not the run directories (a sentence for the report).
        self.source = source
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
                        k: first.get(k)
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
                        k: _mean_std([r.get(k) for r in runs])[0]
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
                    "acc_values": [
                        r["test_acc_best"] for r in runs if r["test_acc_best"] is not None
                    ],
                    "acc_last": last,
                    "acc_last_std": last_sd,
                    "val": val,
                    "val_std": val_sd,
                    "firing_rates": _mean_rates([r.get("_firing_rates") or [] for r in runs]),
                    "raw_inputs": sorted(
                        {n for r in runs for n in r.get("raw_input_layers") or ()}
                    ),
                }
            )
        self.summary.sort(key=lambda r: (r["budget"], -_nan_low(r["acc"])))

    def best(self) -> dict[str, Any] | None:
        """The allocation with the best validation accuracy (test accuracy when no val split)."""
        return _best(self.summary)

    # -- text -------------------------------------------------------------------------------
    def table(self) -> str:
        """The paper's Table 2 layout: allocation, Params (M), S-ACE, NS-ACE, accuracy."""
        head = (
            f"{'b_w/b_s/T':>10} {'budget':>6} {'Params(M)':>10} {'S-ACE(G)':>10} "
            f"{'NS-ACE(G)':>10} {'SOPs(G)':>9} {'val (%)':>14} {'acc (%)':>14} "
            f"{'last (%)':>14} {'seeds':>5}"
        )
        lines = [head, "-" * len(head)]
        for r in self.summary:
            lines.append(
                f"{r['bits']:>10} {r['budget']:>6} {_fmt(r['params_16'], 1e-6, 3):>10} "
                f"{_fmt(r['s_ace'], 1e-9, 4):>10} {_fmt(r['ns_ace'], 1e-9, 4):>10} "
                f"{_fmt(r['sops'], 1e-9, 4):>9} {_pm(r['val'], r['val_std']):>14} "
                f"{_pm(r['acc'], r['acc_std']):>14} "
                f"{_pm(r['acc_last'], r['acc_last_std']):>14} {r['seeds']:>5}"
            )
        return "\n".join(lines)

    def columns(self) -> list[Column]:
        """The results table's columns (the Markdown and the HTML table print the same)."""
        cols = [
            Column("b_w/b_s/T", lambda r: r["bits"], numeric=False),
            Column("budget", lambda r: str(r["budget"])),
            Column("Params (M)", lambda r: _fmt(r["params_16"], 1e-6, 3)),
            Column("S-ACE (G)", lambda r: _fmt(r["s_ace"], 1e-9, 4)),
            Column("NS-ACE (G)", lambda r: _fmt(r["ns_ace"], 1e-9, 4)),
            Column("SOPs (G)", lambda r: _fmt(r["sops"], 1e-9, 4)),
            Column("conv. energy (µJ)", lambda r: _fmt(r["energy_conventional_uj"], 1, 3)),
            Column("bit-budget energy (µJ)", lambda r: _fmt(r["energy_bits_uj"], 1, 4)),
            # Validation next to test accuracy: the best allocation is chosen on validation,
            # so the reader sees why it need not be the top test row.
            Column("val. acc. (%)", lambda r: _pm(r["val"], r["val_std"])),
            Column("test acc. (%)", lambda r: _pm(r["acc"], r["acc_std"])),
            Column("last epoch (%)", lambda r: _pm(r["acc_last"], r["acc_last_std"])),
        ]
        if any(r["fps"] for r in self.summary):
            cols.append(Column("fps", lambda r: f"{r['fps']:.0f}" if r["fps"] else "–"))
        cols += [
            Column("seeds", lambda r: str(r["seeds"])),
            Column("wall (s)", lambda r: _fmt(r["wall_time_s"], 1, 0)),
        ]
        return cols

    def header(self) -> list[tuple[str, str]]:
        """The sweep's settings as ``(label, text)`` pairs: model, recipe, data, machine and
        qsnn version, from ``sweep.json`` and the runs' saved environment."""
        s = self.settings.get("base") or {}
        runs = self.rows
        out = []
        model = s.get("model", "?")
        if s.get("overrides"):
            model += f" (overrides {json.dumps(s['overrides'], sort_keys=True)})"
        budgets = sorted({r["budget"] for r in self.summary})
        out.append(("model", model))
        out.append(
            (
                "sweep",
                f"{len(self.summary)} allocation(s) at budget(s) "
                f"{', '.join(map(str, budgets))}, "
                f"{self.settings.get('seeds', max((r['seeds'] for r in self.summary), default=1))}"
                f" seed(s) each" + _unfinished(self.settings, self.summary),
            )
        )
        if s:
            recipe = [
                f"{s.get('epochs', '?')} epochs",
                f"batch {s.get('batch_size', '?')}",
                f"AdamW lr {s.get('lr', '?')}",
                f"weight decay {s.get('weight_decay', '?')}",
                f"warm-up {s.get('warmup_epochs', '?')} epoch(s), cosine to "
                f"{s.get('min_lr_ratio', 0)} x lr",
                f"label smoothing {s.get('label_smoothing', '?')}",
            ]
            if s.get("mixup") or s.get("cutmix"):
                recipe.append(f"mixup {s.get('mixup')}, cutmix {s.get('cutmix')}")
            recipe.append("augmentation on" if s.get("augment") else "no augmentation")
            recipe.append(f"precision {s.get('precision', 'auto')}")
            out.append(("recipe", ", ".join(recipe)))
            out += _neuron_lines(s)
        data = s.get("dataset", "?")
        samples = _distinct(r.get("samples") for r in runs)
        if len(samples) == 1:
            n = samples[0]
            data += f" ({n.get('train')} train, {n.get('val')} validation, {n.get('test')} test)"
        if s:
            val = s.get("val_size", 1)
            data += (
                "; best epoch chosen on a validation split held out from training"
                if val != 0
                else "; no validation split (last epoch)"
            )
        out.append(("data", data))
        envs = _distinct(r.get("environment") for r in runs)
        if envs:
            out.append(("machine", "; ".join(_env_text(e) for e in envs)))
        else:
            out.append(("machine", "not recorded in the rows this report was built from"))
        version = sorted({e["qsnn"] for e in envs if e.get("qsnn")})
        out.append(
            (
                "qsnn",
                (f"runs trained with {', '.join(version)}; " if version else "")
                + f"report built with {qsnn_version()}",
            )
        )
        if isinstance(self.settings.get("command"), str):
            out.append(("command", self.settings["command"]))
        walls = [r["wall_time_s"] for r in runs if r.get("wall_time_s")]
        if walls:
            out.append(
                (
                    "wall time",
                    f"{_hours(sum(walls))} in all over {len(walls)} run(s) (the sum of each "
                    f"run's wall time; runs trained in parallel overlap)",
                )
            )
        if self.source:
            out.append(("source", self.source))
        return out

    def markdown(self, figures: Sequence[FigureFile] = ()) -> str:
        s = self.settings.get("base", {})
        best = self.best()
        lines = [f"# qsnn sweep: {s.get('model', '?')} on {s.get('dataset', '?')}", ""]
        lines += [f"- **{label}**: {text}" for label, text in self.header()]
        lines += [
            "",
            "Accuracy: mean ± std over seeds, in %. Test accuracy is taken at the epoch chosen "
            "on validation accuracy; the best allocation (**bold**) is the one with the best "
            "validation accuracy, which need not be the top test row. Params are 16-bit "
            "equivalents (`params_16`); S-ACE, NS-ACE and SOPs are per sample (SPEC §5), "
            "measured on the test set.",
            "",
        ]
        cols = self.columns()
        lines.append("| " + " | ".join(c.header for c in cols) + " |")
        lines.append("|" + "|".join("---:" if c.numeric else "---" for c in cols) + "|")
        for r in self.summary:
            cells = [c.cell(r) for c in cols]
            if best is not None and r["bits"] == best["bits"]:
                cells[0] = f"**{cells[0]}**"
            lines.append("| " + " | ".join(cells) + " |")
        if self.other_runs:
            lines += ["", _other_runs_note(self.other_runs, self.settings.get("base", {}))]
        lines += ["", "## Findings", ""]
        lines += [f"- {sentence}" for sentence in self.findings()]
        paper = self.paper_findings()
        if paper:
            lines += ["", "## The paper's findings, measured", ""]
            lines += [
                "Verdicts computed from the rows above by `qsnn.sweep.findings` (beyond the seed "
                "spread: every seed of the leader above every seed of the other and the gap "
                "above twice the larger std; small test splits also get Wilson 95 % intervals).",
                "",
            ]
            for f in paper:
                lines += [f.markdown(), ""]
        rates = self.firing_rate_table()
        if rates:
            head, body = rates
            lines += ["", "## Firing rate per spiking layer", "",
                      "Fraction of non-zero spike values at each spiking layer's input, mean over "
                      "the test split and seeds (the raw input is left out).", "",
                      "| " + " | ".join(head) + " |",
                      "|---|" + "---:|" * (len(head) - 1)]  # fmt: skip
            lines += ["| " + " | ".join(row) + " |" for row in body]
        if figures:
            lines += ["", "## Figures"]
        for fig in figures:
            lines += [
                "",
                f"![{fig.stem}]({fig.png})",
                "",
                f"*{fig.caption}* Vector version: [{fig.pdf}]({fig.pdf}).",
            ]
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
        tied = [r["bits"] for r in self.summary if r is not best and r["val"] == best["val"]]
        # Say so when validation ties: the higher test accuracy then decides (see _best).
        tie = f"; tied with {', '.join(tied)}, so test accuracy decides" if tied else ""
        val = f" ({_pm(best['val'], best['val_std'])} % validation{tie})"
        out.append(
            f"Best allocation (chosen on {chosen_on} accuracy): **{best['bits']}**"
            + (val if chosen_on == "validation" else "")
            + f" with {_pm(best['acc'], best['acc_std'])} % test accuracy at budget "
            f"{best['budget']}."
        )
        by_budget: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in self.summary:
            by_budget[r["budget"]].append(r)
        if len(by_budget) > 1:
            parts = []
            for budget, group in sorted(by_budget.items()):
                b = _best(group)
                if b is None:
                    continue
                parts.append(
                    f"budget {budget}: **{b['bits']}** ("
                    + (
                        f"{_pm(b['val'], b['val_std'])} % validation, "
                        if not math.isnan(b["val"])
                        else ""
                    )
                    + f"{_pm(b['acc'], b['acc_std'])} % test, S-ACE "
                    f"{_fmt(b['s_ace'], 1e-9, 4)} G)"
                )
            out.append(
                f"Best per budget (chosen on {chosen_on} accuracy): " + "; ".join(parts) + "."
            )
        for budget, group in sorted(by_budget.items()):
            if len(group) < 2:
                continue
            ranked = sorted((r for r in group if r["acc_values"]), key=lambda r: -r["acc"])
            if len(ranked) >= 2:
                out.append(f"Budget {budget}, best test row against worst: "
                           + _compare(ranked[0], ranked[-1]) + ".")  # fmt: skip
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

    def firing_rate_table(self) -> tuple[list[str], list[list[str]]] | None:
        """``(header, rows)``: per allocation (ordered by ``b_w``, then ``b_s``), the seed-mean
        firing rate of each spiking layer, for F2's per-layer numbers; ``None`` without rates."""
        rated = [r for r in self.summary if r["firing_rates"]]
        if not rated:
            return None
        layers: list[str] = []
        for r in rated:
            layers += [name for name, _ in r["firing_rates"] if name not in layers]
        head = ["b_w/b_s/T", *layers, "mean"]
        rows = []
        for r in sorted(rated, key=lambda r: (r["budget"], r["b_w"], r["b_s"])):
            rates = dict(r["firing_rates"])
            cells = [f"{rates[n]:.3f}" if n in rates else "–" for n in layers]
            rows.append([r["bits"], *cells, f"{statistics.fmean(rates.values()):.3f}"])
        return head, rows

    def paper_findings(self) -> list[Finding]:
        """The paper's findings (F1-F4) these rows speak to, with verdicts computed by
        :mod:`qsnn.sweep.findings` (F4 instead of F1 on event data, with the test split's
        Wilson intervals; F2 from the spiking layers' firing rates only). Computed once per
        report: ``report.md``, the page and ``findings.json`` all show them."""
        return list(self._paper_findings)

    @functools.cached_property
    def _paper_findings(self) -> tuple[Finding, ...]:
        base = self.settings.get("base") or {}
        # The rows name their dataset too, so a report rebuilt without sweep.json still knows
        # event data (F4, not F1).
        named = {r.get("dataset") for r in self.rows} - {None}
        dataset = base.get("dataset") or (named.pop() if len(named) == 1 else "")
        try:
            from ..data.registry import dataset_spec

            events = dataset_spec(dataset).kind == "events"
        except (ValueError, KeyError, TypeError):
            events = str(dataset).startswith("tonic:")
        sizes = {(r.get("samples") or {}).get("test") for r in self.rows} - {None}
        rates = {r["bits"]: dict(r["firing_rates"]) for r in self.summary if r["firing_rates"]}
        epochs = f"{base['epochs']} epochs" if base.get("epochs") else None
        context = ", ".join(p for p in (base.get("model"), dataset, epochs) if p)
        return tuple(
            paper_findings(
                self.rows,
                events=events,
                test_size=sizes.pop() if len(sizes) == 1 else None,
                spiking_rates=rates,
                context=context,
            )
        )

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
                "".join(json.dumps(public_row(r)) + "\n" for r in self.rows),
            )
        )
        best = self.best()
        figures = write_figures(self.summary, out, best["bits"] if best else None)
        kept = {f.stem for f in figures}
        for stem in _FIGURE_STEMS:
            if stem not in kept:
                for ext in (".png", ".pdf"):
                    (out / f"{stem}{ext}").unlink(missing_ok=True)
        for f in figures:
            written += [out / f.png, out / f.pdf]
        md = self.markdown(figures)
        written.append(write_text_atomic(out / "report.md", md))
        written.append(
            write_text_atomic(
                out / "findings.json",
                json.dumps([f.as_dict() for f in self.paper_findings()], indent=2) + "\n",
            )
        )
        page = _html(self, out, figures)
        if page is not None:
            written.append(write_text_atomic(out / "report.html", page))
        return written


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as ``results.jsonl`` keeps it: the fields without a leading underscore, and the
    spiking layers' firing rates (so a report rebuilt from the rows alone has Fig. 6)."""
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    if "firing_rates" not in out and row.get("_firing_rates"):
        out["firing_rates"] = dict(row["_firing_rates"])
    return out


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the best validation accuracy (test accuracy when a row has no val; ties
    on validation go to the higher test accuracy)."""
    if not rows:
        return None
    key = "val" if all(not math.isnan(r["val"]) for r in rows) else "acc"
    # Ties on validation go to the higher test accuracy (the finding names the tie).
    return max(rows, key=lambda r: (_nan_low(r[key]), _nan_low(r["acc"])))


def _unfinished(settings: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    """``"; not finished: ..."`` naming the planned allocations (``sweep.json``) and seeds that
    have no finished run, so a partial sweep is not read as a complete one."""
    planned = settings.get("allocations")
    if not isinstance(planned, list):
        return ""
    seeds = settings.get("seeds", 1)
    done = {r["bits"]: r["seeds"] for r in summary}
    missing = []
    for bits in planned:
        try:
            key = str(Bits.parse(bits))
        except (ValueError, TypeError):
            continue
        if key not in done:
            missing.append(f"{key} (no finished run)")
        elif isinstance(seeds, int) and done[key] < seeds:
            missing.append(f"{key} ({done[key]} of {seeds} seeds)")
    return f"; not finished: {', '.join(missing)}" if missing else ""


def _hours(seconds: float) -> str:
    """``2 h 05 min`` from one hour on, else ``42 min`` (``40 s`` below a minute)."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _neuron_lines(base: dict[str, Any]) -> list[tuple[str, str]]:
    """The neuron's level step and the batch-norm statistics the sweep's runs used, read from
    the saved config as :meth:`TrainConfig.from_dict` resolves it (a config saved before level
    scales describes the fixed ``θ = 1`` neuron and running BN statistics of that time)."""
    try:
        config = TrainConfig.from_dict(base)
    except (ValueError, TypeError, KeyError):
        return []
    neuron = config.neuron_options()  # the run's version of the defaults, filled in
    step = neuron.pop("level_scale", None)
    text = f"level step {step}" if step else "level step: the model's default"
    if "theta" in neuron or step == "fixed":
        text += f", θ = {neuron.pop('theta', 1.0)}"  # SpikeNeuron's default θ
    if "learn_theta" in neuron:
        text += ", learned θ" if neuron.pop("learn_theta") else ", θ not learned"
    text += "".join(f", {k} = {v}" for k, v in sorted(neuron.items()))
    bn = (
        f"re-estimated on {config.precise_bn} training images before each evaluation"
        if config.precise_bn
        else "training's running averages (no re-estimation)"
    )
    return [("neuron", text), ("batch norm", bn)]


def _distinct(values) -> list[dict[str, Any]]:
    """The distinct dicts among ``values`` (``None`` left out), first seen first."""
    out: list[dict[str, Any]] = []
    for v in values:
        if isinstance(v, dict) and v not in out:
            out.append(v)
    return out


def _env_text(env: dict[str, Any]) -> str:
    parts = [str(env.get("device", "?"))]
    if env.get("world_size", 1) not in (None, 1):
        parts.append(f"{env['world_size']} processes")
    if env.get("threads"):
        parts.append(f"{env['threads']} threads")
    if env.get("precision"):
        parts.append(str(env["precision"]))
    parts += [f"{k} {env[k]}" for k in ("torch", "python") if env.get(k)]
    return ", ".join(parts)


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
    """``a`` against ``b`` over their seeds, by the rule of :func:`findings.compare_seeds`."""
    return compare_seeds(a["bits"], a["acc_values"], b["bits"], b["acc_values"]).text()


def _inline(text: str) -> str:
    """Markdown's inline marks in a finding as HTML, escaped first: ``**x**`` -> <strong>,
    ```x``` -> <code> (bold markers carry the best allocation; they must not be dropped)."""
    import html

    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _html(report: Report, out: Path, figures: Sequence[FigureFile]) -> str | None:
    """The self-contained page (figures inlined as base64 PNG), rendered from
    ``templates/report.html.j2``; ``None`` (with a warning) without jinja2."""
    try:
        import jinja2
    except ImportError:
        import warnings

        warnings.warn(
            "report.html needs jinja2: pip install 'qsnn[plots]' (report.md was written)",
            stacklevel=3,
        )
        return None
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qsnn.sweep", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["inline"] = lambda text: Markup(_inline(text))
    s = report.settings.get("base", {})
    best = report.best()
    cols = report.columns()
    return env.get_template("report.html.j2").render(
        title=f"qsnn sweep: {s.get('model', '?')} on {s.get('dataset', '?')}",
        header=report.header(),
        columns=cols,
        rows=[
            {
                "cells": [c.cell(r) for c in cols],
                "best": best is not None and r["bits"] == best["bits"],
            }
            for r in report.summary
        ],
        other_note=_other_runs_note(report.other_runs, s) if report.other_runs else None,
        findings=report.findings(),
        paper_findings=report.paper_findings(),
        rate_table=report.firing_rate_table(),
        figures=[
            {
                "caption": f.caption,
                "stem": f.stem,
                "pdf": f.pdf,
                "data": base64.b64encode(png).decode("ascii"),
                # Shown at 100 px per figure inch (half the 200-dpi pixels): sharp on dense
                # screens, and text the size it has in the paper, not doubled.
                "width": struct.unpack(">I", png[16:20])[0] // 2,
            }
            for f, png in ((f, (out / f.png).read_bytes()) for f in figures)
        ],
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
        key = row.get("key")
        same = key is not None and key == settings_key(
            replace(base_config, bits=row["bits"], seed=row["seed"])
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
        f"Not in this table: {len(other)} finished run(s) of this directory trained with other "
        f"settings than this sweep's: {'; '.join(parts)}."
    )


def build_report(sweep_dir: str | os.PathLike) -> Report:
    """Collect a sweep's finished runs and write every report file into ``sweep_dir``. With a
    ``sweep.json``, only the runs trained with its settings make the table
    (:func:`split_by_settings`); the others are named in the report. A directory with no
    ``runs/`` but an earlier report's ``results.jsonl`` (a report copied into the docs) is
    rebuilt from those rows, and the report says so; with ``runs/``, the rows of
    ``results.jsonl`` whose run directory is gone (:func:`recorded_rows`) stay in the table
    beside the runs found, and the report says how many."""
    root = Path(sweep_dir)
    settings_path = root / "sweep.json"
    exists = settings_path.exists()
    settings = read_json_object(settings_path, "a sweep's settings") if exists else {}
    if not (root / "runs").is_dir() and (root / "results.jsonl").is_file():
        rows = rows_from_results(root / "results.jsonl")
        source = (
            "rebuilt from this directory's results.jsonl (the run directories are not here)"
            + (
                "; per-layer firing rates were not kept in these rows, so Fig. 6 is absent"
                if not any(r["_firing_rates"] for r in rows)
                else ""
            )
        )
        report = Report(rows, settings, source=source)
        report.write(sweep_dir)
        return report
    rows = collect_runs(sweep_dir, allow_empty=(root / "results.jsonl").is_file())
    present = {row["key"] for row in rows}
    kept = [row for key, row in recorded_rows(root).items() if key not in present]
    mine, other = split_by_settings(rows + kept, settings)
    source = None
    kept_ids = {id(row) for row in kept}
    n = sum(id(row) in kept_ids for row in mine)
    if n:
        source = (
            f"{n} of the {len(mine)} rows are from this directory's results.jsonl (runs "
            "finished before whose run directories are not here)"
        )
    if not mine:
        raise ValueError(
            f"{sweep_dir} has no finished run with the settings of its sweep.json yet "
            f"({len(other)} with other settings)"
        )
    report = Report(mine, settings, other, source=source)
    report.write(sweep_dir)
    return report

"""The sweep report's figures (the paper's Figs. 4-6), each written as a vector PDF and a
200-dpi PNG. Needs matplotlib (the ``plots`` extra); :func:`build_figures` returns the open
figures so tests can inspect them, :func:`write_figures` saves and closes them.

- ``accuracy_vs_sace``: with several budgets (S-ACE spread over more than a factor 1.5), test
  accuracy against S-ACE in G on a log axis, colour and marker per budget, bubble area ~
  ``params_16`` (Fig. 4). At one budget every allocation has nearly the same S-ACE, so a log
  axis would show one vertical line; the figure then puts the allocations on a categorical
  axis (test and validation accuracy on the left, S-ACE and NS-ACE in G on the right).
- ``allocation``: accuracy of each split of the budget between ``b_s`` and ``T``, one line per
  budget, one panel per ``b_w`` (Fig. 5).
- ``firing_rates``: input firing rate of every spiking layer, one line per allocation, one
  panel per ``b_w`` (Fig. 6). Layers that read the raw input (rate 1.0) are left out and named
  in the caption.

Every figure obeys the same rules: error bars are mean ± std with caps, clipped to [0, 100] %;
point labels are placed where their text boxes (as the renderer measures them) overlap no
other label, marker or the axes' edge; legends sit outside the data area; tick labels that
would collide are rotated 30 degrees rather than shrunk.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FigureFile", "build_figures", "plots_available", "write_figures"]

#: Raster resolution of the PNG copies (the PDFs are vector).
PNG_DPI = 200
#: S-ACE spread (max / min) below which Fig. 4 uses the categorical, one-budget form.
FLAT_SACE_RATIO = 1.5
_FONT = 9
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


@dataclass(frozen=True)
class FigureFile:
    """One figure of the report: ``<stem>.png`` (embedded in the page) and ``<stem>.pdf``."""

    stem: str
    caption: str

    @property
    def png(self) -> str:
        return f"{self.stem}.png"

    @property
    def pdf(self) -> str:
        return f"{self.stem}.pdf"


def plots_available() -> bool:
    """Whether matplotlib imports (the ``plots`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


# -- shared helpers ----------------------------------------------------------------------------
def _pct(value: float | None) -> float:
    return math.nan if value is None else 100 * value


def _clipped_yerr(means: Sequence[float], stds: Sequence[float]) -> list[list[float]]:
    """Asymmetric error bars of mean ± std (in %) clipped to [0, 100]: no bar passes 0 or 100."""
    lower, upper = [], []
    for m, s in zip(means, stds, strict=True):
        s = 0.0 if s is None or math.isnan(s) else s
        lower.append(max(0.0, min(s, m)) if not math.isnan(m) else 0.0)
        upper.append(max(0.0, min(s, 100.0 - m)) if not math.isnan(m) else 0.0)
    return [lower, upper]


def _acc_limits(ax, values: Sequence[float], yerr: list[list[float]] | None = None) -> None:
    """Y limits around the accuracies (and their error bars) with a margin, never above 100.5 or
    below 0 -- the axis shows the differences, not the whole 0-100 range."""
    lo, hi = [], []
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        lo.append(v - (yerr[0][i] if yerr else 0))
        hi.append(v + (yerr[1][i] if yerr else 0))
    if not lo:
        return
    low, high = min(lo), max(hi)
    pad = max(0.5, 0.12 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0 + pad / 4, high + pad * 1.6))


def _budget_styles(budgets: Sequence[int]) -> dict[int, tuple[Any, str]]:
    """A colour and a marker per budget, the same in every figure."""
    plt = _pyplot()
    colours = plt.get_cmap("tab10").colors
    return {
        b: (colours[i % len(colours)], _MARKERS[i % len(_MARKERS)])
        for i, b in enumerate(sorted(budgets))
    }


def _label_boxes_overlap(a, b, pad: float = 0.0) -> bool:
    return not (
        a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0 or b.y1 + pad <= a.y0
    )


def _candidates():
    """Label offsets (points) around a marker, nearest first: right-up, right-down, left-up, ..."""
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for radius in (5, 9, 14, 20, 28, 38):
        for dx, dy in dirs:
            yield dx * radius, dy * radius


def place_labels(fig, ax, items: Sequence[tuple[float, float, str, Any, float]]) -> list[Any]:
    """Annotate ``(x, y, text, colour, marker_radius_pt)`` points so that no label's text box
    overlaps another label, a marker, or leaves the axes: each label tries offsets around its
    point, nearest first, and keeps the first free one (the least-overlapping one if none is
    free). Boxes are measured with the renderer, so call this after the layout is final."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = fig.dpi / 72.0
    from matplotlib.transforms import Bbox

    obstacles = []
    for x, y, _, _, radius in items:
        px, py = ax.transData.transform((x, y))
        r = radius * to_px
        obstacles.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    placed: list[Any] = []
    annotations = []
    for x, y, text, colour, _ in items:
        ann = ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(0, 0),
            fontsize=_FONT - 1,
            color=colour,
            annotation_clip=False,
        )
        ann.set_gid("point-label")
        best, best_cost = None, math.inf
        for dx, dy in _candidates():
            ann.set_position((dx, dy))
            ann.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
            ann.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
            box = ann.get_window_extent(renderer)
            cost = sum(_area(box, o) for o in placed) * 10 + sum(_area(box, o) for o in obstacles)
            outside = (
                max(0, frame.x0 - box.x0)
                + max(0, box.x1 - frame.x1)
                + max(0, frame.y0 - box.y0)
                + max(0, box.y1 - frame.y1)
            )
            cost += outside * 1000
            if cost < best_cost:
                best, best_cost = (dx, dy, ann.get_ha(), ann.get_va()), cost
            if cost == 0:
                break
        dx, dy, ha, va = best
        ann.set_position((dx, dy))
        ann.set_ha(ha)
        ann.set_va(va)
        box = ann.get_window_extent(renderer)
        placed.append(box.padded(1.5 * to_px))
        annotations.append(ann)
        if max(abs(dx), abs(dy)) >= 14:
            _leader(ax, (x, y), box)
    return annotations


def _leader(ax, point: tuple[float, float], box) -> None:
    """A thin line from a point to the nearest corner or edge of its far-placed label, so the
    reader sees which point the label names (drawn in data coordinates: the layout is final)."""
    px, py = ax.transData.transform(point)
    ex = min(max(px, box.x0), box.x1)
    ey = min(max(py, box.y0), box.y1)
    inv = ax.transData.inverted()
    (x0, y0), (x1, y1) = inv.transform([(px, py), (ex, ey)])
    ax.plot([x0, x1], [y0, y1], color="0.55", lw=0.6, zorder=1, scalex=False, scaley=False)


def _area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _readable_ticks(fig, axes) -> None:
    """Rotate an axis' tick labels 30 degrees when they would overlap each other flat, then
    lay the figure out again (only when something turned)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    turned = False
    for ax in axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        if any(
            _label_boxes_overlap(a, b, pad=2) for i, a in enumerate(boxes) for b in boxes[i + 1 :]
        ):
            turned = True
            for t in labels:
                t.set_rotation(30)
                t.set_ha("right")
                t.set_rotation_mode("anchor")
    if turned:
        fig.tight_layout()


def _errorbar(ax, xs, means, stds, **kwargs):
    """``ax.errorbar`` of percentages with caps and clipped, asymmetric bars."""
    yerr = _clipped_yerr(means, stds)
    return ax.errorbar(xs, means, yerr=yerr, capsize=3, elinewidth=0.9, capthick=0.9, **kwargs)


def _panels(plt, count: int, width: float, height: float, **kwargs):
    """``count`` panels, side by side up to three, else two per row."""
    cols = count if count <= 3 else 2
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kwargs
    )
    flat = list(axes.flat)
    for extra in flat[count:]:
        extra.set_visible(False)
    return fig, flat[:count]


def _short_layer(name: str) -> str:
    for suffix in (".conv", ".linear", ".fc"):
        name = name.removesuffix(suffix)
    return name


# -- Fig. 4 ------------------------------------------------------------------------------------
def _flat_sace(rows: list[dict[str, Any]]) -> bool:
    costs = [r["s_ace"] for r in rows if r.get("s_ace")]
    budgets = {r["budget"] for r in rows}
    return len(budgets) == 1 or not costs or max(costs) / min(costs) < FLAT_SACE_RATIO



def _legend_outside(ax, *, gap: float = 1.02, title: str | None = None, **kwargs: Any) -> None:
    """The legend to the right of ``ax``, outside the data (``kwargs``: handles, labels)."""
    if title is not None:
        kwargs.update(title=title, title_fontsize=_FONT - 1)
    ax.legend(loc="upper left", bbox_to_anchor=(gap, 1.0), borderaxespad=0, fontsize=_FONT,
              **kwargs)  # fmt: skip

def _fig_sace_scatter(plt, rows: list[dict[str, Any]]):
    """Accuracy vs S-ACE (G, log) over several budgets: colour and marker per budget."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    styles = _budget_styles({r["budget"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.6, 4.8), dpi=100)
    p16 = [r.get("params_16") or 0 for r in rows]
    top = max(p16) or 1
    items = []
    for r, p in zip(rows, p16, strict=True):
        colour, marker = styles[r["budget"]]
        size = 40 + 360 * p / top  # marker area in pt^2
        x, y = r["s_ace"] * 1e-9, _pct(r["acc"])
        _errorbar(ax, [x], [y], [_pct(r["acc_std"])], fmt="none", ecolor="0.25", zorder=2)
        ax.scatter(
            [x],
            [y],
            s=size,
            color=colour,
            marker=marker,
            alpha=0.6,
            edgecolors="k",
            linewidths=0.5,
            zorder=3,
        )
        items.append((x, y, r["bits"], "0.1", math.sqrt(size) / 2))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(x for x, *_ in items), max(x for x, *_ in items)
    ax.set_xlim(lo / 1.5, hi * 1.5)
    _acc_limits(
        ax,
        [_pct(r["acc"]) for r in rows],
        _clipped_yerr([_pct(r["acc"]) for r in rows], [_pct(r["acc_std"]) for r in rows]),
    )
    ax.set_xlabel("S-ACE per sample (G bit operations, log axis)", fontsize=_FONT)
    ax.set_ylabel("test accuracy (%)", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    ax.grid(alpha=0.3, which="both")
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker=m,
            color=c,
            markeredgecolor="k",
            markersize=7,
            label=f"budget {b}",
        )
        for b, (c, m) in sorted(styles.items())
    ]
    _legend_outside(ax, handles=handles, title="bubble area ~ params_16")
    fig.tight_layout()
    place_labels(fig, ax, items)
    return fig


def _fig_allocations(plt, rows: list[dict[str, Any]], best: str | None):
    """One budget: the allocations on a categorical x axis; test (mean ± std) and validation
    accuracy in the top panel, S-ACE and NS-ACE (G) in the panel below (the second axis)."""
    rows = sorted(rows, key=lambda r: (r["budget"], r["b_w"], r["b_s"]))
    xs = list(range(len(rows)))
    fig, (ax, cost) = plt.subplots(
        2,
        1,
        figsize=(max(6.4, 0.62 * len(rows) + 3.6), 5.6),
        sharex=True,
        dpi=100,
        gridspec_kw={"height_ratios": [3, 1.3]},
    )
    acc = [_pct(r["acc"]) for r in rows]
    std = [_pct(r["acc_std"]) for r in rows]
    err = _clipped_yerr(acc, std)
    _errorbar(
        ax, xs, acc, std, fmt="o", color="C0", markersize=6, label="test (mean ± std)", zorder=3
    )
    val = [_pct(r.get("val")) for r in rows]
    shown = [a for a in acc if not math.isnan(a)]
    if any(not math.isnan(v) for v in val):
        ax.plot(
            xs,
            val,
            linestyle="",
            marker="D",
            markerfacecolor="none",
            color="C2",
            markersize=6,
            label="validation (mean)",
            zorder=3,
        )
        shown += [v for v in val if not math.isnan(v)]
    lows = [a - e for a, e in zip(acc, err[0], strict=True) if not math.isnan(a)]
    highs = [a + e for a, e in zip(acc, err[1], strict=True) if not math.isnan(a)]
    low, high = min(lows + shown), max(highs + shown)
    pad = max(0.3, 0.08 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0 + pad, high + pad))
    ax.set_ylabel("accuracy (%)", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    ax.grid(alpha=0.3, axis="y")
    _legend_outside(ax)
    budgets = sorted({r["budget"] for r in rows})
    ax.set_title(
        f"Budget {', '.join(map(str, budgets))}: accuracy and cost per allocation",
        fontsize=_FONT + 1,
    )
    width = 0.38
    s_ace = [(r.get("s_ace") or math.nan) * 1e-9 for r in rows]
    cost.bar([x - width / 2 for x in xs], s_ace, width, color="C3", label="S-ACE")
    if any(r.get("ns_ace") for r in rows):
        ns = [(r.get("ns_ace") or math.nan) * 1e-9 for r in rows]
        cost.bar([x + width / 2 for x in xs], ns, width, color="C1", label="NS-ACE")
    cost.set_ylabel("G bit ops\nper sample", fontsize=_FONT)
    cost.tick_params(labelsize=_FONT)
    cost.grid(alpha=0.3, axis="y")
    _legend_outside(cost)
    cost.set_xticks(xs)
    cost.set_xticklabels([r["bits"] for r in rows], fontsize=_FONT)
    for tick, r in zip(cost.get_xticklabels(), rows, strict=True):
        if r["bits"] == best:
            tick.set_fontweight("bold")  # the allocation chosen on validation accuracy
    cost.set_xlim(-0.6, len(rows) - 0.4)
    cost.set_xlabel(
        "allocation b_w/b_s/T" + (" (bold: best on validation)" if best else ""), fontsize=_FONT
    )
    # h_pad: the panels' y tick labels at their shared edge must not touch.
    fig.tight_layout(h_pad=1.2)
    _readable_ticks(fig, [cost])
    return fig


# -- Fig. 5 ------------------------------------------------------------------------------------
def _fig_split(plt, rows: list[dict[str, Any]]):
    """Accuracy against the split of the budget between b_s and T: x = T (log2 axis), one line
    per budget, one panel per b_w."""
    by_w: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_w[r["b_w"]].append(r)
    budgets = sorted({r["budget"] for r in rows})
    styles = _budget_styles(budgets)
    fig, axes = _panels(plt, len(by_w), 4.0 if len(by_w) > 1 else 6.0, 3.3, sharey=True, dpi=100)
    for ax, (w, group) in zip(axes, sorted(by_w.items()), strict=True):
        for b in budgets:
            line = sorted((r for r in group if r["budget"] == b), key=lambda r: r["T"])
            if not line:
                continue
            colour, marker = styles[b]
            _errorbar(
                ax,
                [r["T"] for r in line],
                [_pct(r["acc"]) for r in line],
                [_pct(r["acc_std"]) for r in line],
                marker=marker,
                color=colour,
                label=f"budget {b}",
            )
        ts = sorted({r["T"] for r in group})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ts)
        if len(budgets) == 1:
            b_s = {r["T"]: r["b_s"] for r in group}
            ax.set_xticklabels([f"{b_s[t]}/{t}" for t in ts])
            ax.set_xlabel("spike bits b_s / time steps T", fontsize=_FONT)
        else:
            ax.set_xticklabels([str(t) for t in ts])
            ax.set_xlabel("time steps T (b_s = budget / (b_w T))", fontsize=_FONT)
        ax.minorticks_off()
        ax.set_xlim(min(ts) / 1.5, max(ts) * 1.5)
        ax.set_title(f"b_w = {w}", fontsize=_FONT + 1)
        ax.tick_params(labelsize=_FONT)
        ax.grid(alpha=0.3)
    means = [_pct(r["acc"]) for r in rows]
    _acc_limits(axes[0], means, _clipped_yerr(means, [_pct(r["acc_std"]) for r in rows]))
    for ax in axes[:: 2 if len(axes) > 3 else len(axes)]:
        ax.set_ylabel("test accuracy (%)", fontsize=_FONT)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    _legend_outside(
        axes[min(len(axes), 3 if len(axes) <= 3 else 2) - 1],
        handles=list(seen.values()), labels=list(seen.keys()), gap=1.04,
    )  # fmt: skip
    fig.tight_layout()
    _readable_ticks(fig, axes)
    return fig


# -- Fig. 6 ------------------------------------------------------------------------------------
def _fig_rates(plt, rows: list[dict[str, Any]]):
    """Input firing rate of every spiking layer, one line per allocation (colour per T, line
    style per budget), one panel per b_w with a shared rate axis."""
    from matplotlib.lines import Line2D

    by_w: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("firing_rates"):
            by_w[r["b_w"]].append(r)
    layers = max((r["firing_rates"] for g in by_w.values() for r in g), key=len)
    names = [_short_layer(n) for n, _ in layers]
    ts = sorted({r["T"] for g in by_w.values() for r in g})
    budgets = sorted({r["budget"] for g in by_w.values() for r in g})
    cmap = plt.get_cmap("viridis")
    colour = {t: cmap(0.85 * i / max(1, len(ts) - 1)) for i, t in enumerate(ts)}
    dashes = ["-", "--", ":", "-."]
    style = {b: dashes[i % len(dashes)] for i, b in enumerate(budgets)}
    panel_w = max(4.2, 0.5 * len(names) + 2.2)
    fig, axes = _panels(plt, len(by_w), panel_w, 3.2, sharey=True, sharex=True, dpi=100)
    top = max(fr for g in by_w.values() for r in g for _, fr in r["firing_rates"])
    for ax, (w, group) in zip(axes, sorted(by_w.items()), strict=True):
        for r in sorted(group, key=lambda r: (r["budget"], r["T"])):
            rates = [fr for _, fr in r["firing_rates"]]
            ax.plot(
                range(len(rates)),
                rates,
                marker=_MARKERS[ts.index(r["T"]) % len(_MARKERS)],
                markersize=4,
                color=colour[r["T"]],
                linestyle=style[r["budget"]],
            )
        ax.set_title(f"b_w = {w}", fontsize=_FONT + 1)
        ax.tick_params(labelsize=_FONT)
        ax.set_ylim(0, 1.1 * top)
        ax.grid(alpha=0.3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=_FONT)
    cols = len(axes) if len(axes) <= 3 else 2
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel("input firing rate", fontsize=_FONT)
        if i >= len(axes) - cols:
            ax.set_xlabel("spiking layer", fontsize=_FONT)
    handles = [
        Line2D(
            [],
            [],
            color=colour[t],
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=4,
            label=f"T = {t}",
        )
        for i, t in enumerate(ts)
    ]
    if len(budgets) > 1:
        handles += [
            Line2D([], [], color="0.3", linestyle=style[b], label=f"budget {b}") for b in budgets
        ]
    _legend_outside(axes[cols - 1], handles=handles, title="b_s = budget / (b_w T)", gap=1.04)
    fig.tight_layout()
    _readable_ticks(fig, axes)
    return fig


# -- entry points ------------------------------------------------------------------------------
def build_figures(
    summary: Sequence[dict[str, Any]], best: str | None = None
) -> list[tuple[FigureFile, Any]]:
    """The report's figures for per-allocation summary rows (:class:`~qsnn.sweep.Report`'s
    ``summary``), as ``(file, open matplotlib figure)`` pairs. Rows without an accuracy are
    left out; Fig. 6 only when the rows carry per-layer firing rates."""
    plt = _pyplot()
    rows = [r for r in summary if r.get("acc") is not None and not math.isnan(r["acc"])]
    if not rows:
        return []
    out = []
    budgets = sorted({r["budget"] for r in rows})
    if _flat_sace(rows):
        cap = (
            f"Test accuracy (mean ± std over seeds, bars clipped to [0, 100] %) and validation "
            f"accuracy of every allocation at budget {', '.join(map(str, budgets))}, with its "
            f"S-ACE and NS-ACE (G, lower panel). All allocations of one budget have nearly the "
            f"same S-ACE, so the allocations are on the x axis instead of a log S-ACE axis "
            f"(Fig. 4)."
        )
        out.append((FigureFile("accuracy_vs_sace", cap), _fig_allocations(plt, rows, best)))
    else:
        cap = (
            f"Test accuracy (mean ± std over seeds, bars clipped to [0, 100] %) vs S-ACE per "
            f"sample (G, log axis) for budgets {', '.join(map(str, budgets))}: colour and marker "
            f"per budget, bubble area ~ params_16 (Fig. 4)."
        )
        out.append((FigureFile("accuracy_vs_sace", cap), _fig_sace_scatter(plt, rows)))
    n_w = len({r["b_w"] for r in rows})
    cap = (
        "Test accuracy of each split of the budget between spike bits b_s and time steps T "
        "(mean ± std over seeds, bars clipped to [0, 100] %), one line per budget"
        + (", one panel per b_w" if n_w > 1 else f", b_w = {rows[0]['b_w']}")
        + " (Fig. 5)."
    )
    out.append((FigureFile("allocation", cap), _fig_split(plt, rows)))
    if any(r.get("firing_rates") for r in rows):
        raw = sorted({n for r in rows for n in r.get("raw_inputs") or ()})
        cap = (
            "Input firing rate (non-zero fraction of each layer's input, measured on the test "
            "set) of every spiking layer, one line per allocation"
            + (", one panel per b_w" if n_w > 1 else "")
            + ", colour per T (Fig. 6)."
            + (
                f" Not plotted: {', '.join(_short_layer(n) for n in raw)}, which reads the raw "
                f"input (rate 1.0 by definition)."
                if raw
                else ""
            )
        )
        out.append((FigureFile("firing_rates", cap), _fig_rates(plt, rows)))
    return out


def write_figures(
    summary: Sequence[dict[str, Any]], out: str | Path, best: str | None = None
) -> list[FigureFile]:
    """Save every figure of :func:`build_figures` as ``<stem>.pdf`` and ``<stem>.png``
    (200 dpi) in ``out``; ``[]`` without matplotlib."""
    if not plots_available():
        return []
    plt = _pyplot()
    out = Path(out)
    files = []
    for file, fig in build_figures(summary, best):
        # Fixed metadata keeps the PDF byte-stable across rebuilds of the same report.
        fig.savefig(out / file.pdf, metadata={"CreationDate": None, "Creator": "qsnn"})
        fig.savefig(out / file.png, dpi=PNG_DPI, metadata={"Software": "qsnn"})
        plt.close(fig)
        files.append(file)
    return files

"""The report's figures, each rendered to PNG bytes: learning curves with the crossover (and as error
rate on log axes), the gap per size with its simultaneous band, effective data transferred, the
winner map and anytime performance. matplotlib is imported only when a
figure is drawn."""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from harness.report.learning_curves import mean_ci95, power_law
from harness.report.answer import n_star_phrase, short_headline
from harness.report.anytime import NOT_MEASURED, Anytime
from harness.report.cells import LABELS, STRATEGIES, Cell, fmt_n
from harness.report.contents import Report
from harness.report.crossover import Crossover
from harness.report.verdict import EQUIVALENT, INCONCLUSIVE, TransferRow

COLORS = {"finetune": "#1f77b4", "scratch": "#d95f02"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def _margins(fig: Any, left: float, right: float, top: float, bottom: float,
             wspace: float = 0.0, hspace: float = 0.0, ncols: int = 1, nrows: int = 1) -> None:
    """Fixed margins and gaps in inches (a layout engine would draw every figure twice)."""
    w, h = fig.get_size_inches()
    ax_w = (w - left - right - wspace * (ncols - 1)) / ncols
    ax_h = (h - top - bottom - hspace * (nrows - 1)) / nrows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=wspace / ax_w if ncols > 1 else 0.2, hspace=hspace / ax_h if nrows > 1 else 0.2)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _placeholder(title: str, message: str) -> bytes:
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return _png(fig)


def _plain_log_ticks(axis: Any, values: Sequence[int]) -> None:
    """Label a log axis at the measured sizes with plain numbers (16, 32, ...), minor ticks unlabelled."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = sorted(set(values))
    if len(ticks) > 12:
        ticks = ticks[:: math.ceil(len(ticks) / 12)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _metric_label(metric: str) -> str:
    return {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(metric, metric)


def plot_learning_curves(values: Mapping[str, Mapping[int, list[float]]], crossover: Crossover,
                         metric: str, study: str, n_val: Mapping[int, Any]) -> bytes:
    sizes = sorted({n for s in STRATEGIES for n in values.get(s, {})})
    if not sizes:
        return _placeholder("Learning curves", "No cell has re-run results (`final`) yet:\nnothing to plot.")
    labelled = crossover.n_labelled_by_n_train
    show_labelled = bool(labelled) and any(int(labelled.get(n, n)) != n for n in sizes)
    fig = _figure(8.5, 5.9 if show_labelled else 5.5)
    _margins(fig, left=0.8, right=0.2, top=1.1 if show_labelled else 0.65, bottom=0.6)
    ax = fig.add_subplot()
    lo_n, hi_n = sizes[0], sizes[-1]
    x_max = hi_n * 2.0
    n_star, ci = crossover.n_star, crossover.ci95
    for v in [n_star] + list(ci or []):
        if v is not None and math.isfinite(v):
            x_max = max(x_max, float(v) * 1.5)
    x_max = min(x_max, hi_n * crossover.horizon)
    x_min = lo_n / 1.5
    for strategy in STRATEGIES:
        curve = values.get(strategy, {})
        if not curve:
            continue
        color, label = COLORS[strategy], LABELS[strategy]
        ns = sorted(curve)
        stats = [mean_ci95(curve[n]) for n in ns]
        means = np.array([s[0] for s in stats])
        err = np.array([[m - lo, hi - m] for m, lo, hi in stats]).T
        for n in ns:
            ax.scatter([n] * len(curve[n]), curve[n], s=10, color=color, alpha=0.3, linewidths=0)
        ax.errorbar(ns, means, yerr=err, fmt="o", color=color, capsize=3, label=f"{label}: mean and 95% CI over replicates")
        fit = crossover.fits.get(strategy)
        if fit:
            abc = (fit.a, fit.b, fit.c)
            inside = np.geomspace(ns[0], ns[-1], 200)
            ax.plot(inside, power_law(abc, inside), color=color, lw=1.8, label=f"{label}: fitted a - b n^-c (the verdict's)")
            for a, b in ((x_min, ns[0]), (ns[-1], x_max)):
                if b > a:
                    xs = np.geomspace(a, b, 100)
                    ax.plot(xs, power_law(abc, xs), color=color, lw=1.5, ls="--")
    probes = [(p.n, p.probe_acc) for p in crossover.per_n if p.probe_acc is not None]
    if probes:
        ax.plot(*zip(*probes), color=COLORS["finetune"], lw=1.2, ls=":", marker="x",
                label="linear probe on the frozen source features")
    ax.plot([], [], color="gray", ls="--", label="extrapolation beyond the measured range")
    if n_star is not None and math.isfinite(n_star):
        ax.axvline(n_star, color="black", lw=1.2,
                   label=f"n* = {fmt_n(n_star)}: fine-tune's fitted lead <= {crossover.margin:g} from here"
                         + (" (extrapolated)" if crossover.extrapolated else ""))
        if ci:
            left = ci[0] if ci[0] is not None else x_min
            right = ci[1] if ci[1] is not None and math.isfinite(ci[1]) else x_max
            ax.axvspan(max(left, x_min), min(right, x_max), color="gray", alpha=0.18,
                       label=f"n* 95% CI [{fmt_n(ci[0])}, {fmt_n(ci[1])}]")
    ax.axvspan(lo_n, hi_n, color="green", alpha=0.05, label=f"measured range {lo_n}-{hi_n}")
    ax.set_xscale("log")
    ax.set_xlim(x_min, x_max)
    _plain_log_ticks(ax.xaxis, sizes)
    ax.set_xlabel("target training examples n_train (log scale)")
    if show_labelled:
        top = ax.secondary_xaxis("top")
        top.set_xticks(sizes, [str(labelled.get(n, "?")) for n in sizes], fontsize=8)
        top.set_xlabel("labelled examples used, selection included (n_labelled)", fontsize=8)
    ax.set_ylabel(f"{_metric_label(metric)} (fraction correct)")
    vals = sorted({int(v) for v in n_val.values() if v is not None})
    val_text = f"n_val = {vals[0]}" if len(vals) == 1 else ("n_val varies by cell" if vals else "n_val unknown")
    ax.set_title(f"{study}: best-found {_metric_label(metric)} vs training-set size ({val_text})\n"
                 f"{short_headline(crossover)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_effective_data(rows: Sequence[TransferRow], study: str) -> bytes:
    if not rows:
        return _placeholder("Effective data transferred",
                            "Not computable: needs re-run results of scratch at >= 2 sizes\nand of fine-tune at >= 1.")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    fig = _figure(11, 4.6)
    _margins(fig, left=0.85, right=0.2, top=0.65, bottom=0.6, wspace=0.9, ncols=2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    n = np.array([r.n for r in rows], dtype=float)
    dt = np.array([r.d_t for r in rows], dtype=float)
    mult = np.array([r.multiplier for r in rows], dtype=float)
    extra = np.array([r.extrapolated for r in rows])
    finite = np.isfinite(dt)
    lows = np.array([lo if math.isfinite(lo) else np.nan for lo, _ in (r.d_t_ci95 for r in rows)], dtype=float)
    highs = np.array([hi if math.isfinite(hi) else np.inf for _, hi in (r.d_t_ci95 for r in rows)], dtype=float)
    for ax, y, lo, hi in ((left, dt, lows, highs), (right, mult, (lows + n) / n, (highs + n) / n)):
        ok = np.isfinite(y)
        ax.plot(n[ok], y[ok], color=COLORS["finetune"], lw=1, alpha=0.6)
        for x, a, b, mid in zip(n[ok], lo[ok], hi[ok], y[ok]):  # the 95% interval; an open end drawn to the edge
            bottom = a if np.isfinite(a) else mid
            ax.annotate("", xy=(x, b if np.isfinite(b) else mid * 4 + 1), xytext=(x, bottom),
                        arrowprops={"arrowstyle": "-|>" if not np.isfinite(b) else "-", "color": COLORS["finetune"],
                                    "alpha": 0.5, "lw": 1.2})
        ax.scatter(n[ok & ~extra], y[ok & ~extra], color=COLORS["finetune"], zorder=3,
                   label="scratch-equivalent n inside scratch's measured range")
        ax.scatter(n[ok & extra], y[ok & extra], facecolors="none", edgecolors=COLORS["finetune"], zorder=3,
                   label="extrapolated scratch curve")
        if (~ok).any():
            top = np.nanmax(y[ok]) * 2 if ok.any() and np.nanmax(y[ok]) > 0 else 1.0
            ax.scatter(n[~ok], np.full((~ok).sum(), top), marker="^", color="black", zorder=3,
                       label="infinite: scratch's fitted curve never reaches it")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("fine-tune training examples D_F = n_train (log scale)")
    left.set_yscale("symlog", linthresh=1.0)
    left.yaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0, subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for ax in (left, right):
        _plain_log_ticks(ax.xaxis, [int(v) for v in n])
    left.axhline(0, color="gray", lw=1)
    if finite.any():  # no empty half of a symlog axis
        lo_dt, hi_dt = float(np.min(dt[finite])), float(np.max(dt[finite]))
        top = hi_dt * 2 if hi_dt > 0 else 1.0
        left.set_ylim(lo_dt * 2 if lo_dt < 0 else -0.5, top * (2.5 if (~finite).any() else 1.0))
    left.set_ylabel("effective data transferred D_T (examples)")
    left.set_title("D_T = D_E - D_F (scratch examples needed - fine-tune examples)", fontsize=10)
    right.set_yscale("log")
    right.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    right.yaxis.set_minor_formatter(NullFormatter())
    right.axhline(1, color="gray", lw=1, ls="--", label="1 = pretraining worth no data")
    right.set_ylabel("data multiplier (D_F + D_T) / D_F")
    right.set_title("how many times more data scratch needs", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(f"{study}: effective data transferred (Hernandez et al. 2021), with 95% bootstrap intervals",
                 fontsize=11)
    return _png(fig)


def plot_winner_map(maps: Sequence[pd.DataFrame], study: str, n_val: Mapping[int, Any], missing: str | None = None) -> bytes:
    """One panel per map; `missing` (a panel that cannot be drawn, and why) takes a panel's place."""
    if not maps or all(m.empty for m in maps):
        return _placeholder("Winner map", "No finished trials with FLOPs recorded: nothing to map.")
    import textwrap

    import matplotlib.colors as mcolors
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.patches import Patch, Rectangle

    cmap = colormaps["RdBu_r"].reversed()  # blue = fine-tune ahead, red = scratch ahead
    gaps = np.concatenate([m["gap"].to_numpy(dtype=float) for m in maps])
    vmax = float(np.nanmax(np.abs(gaps))) if np.isfinite(gaps).any() else 0.1
    vmax = max(vmax, 1e-3)
    norm = mcolors.TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    sizes = sorted(maps[0]["n_train"].unique())
    budgets = sorted(maps[0]["budget_flops"].unique())
    panels = len(maps) + (missing is not None)
    fig = _figure(max(10.0, 1.1 * len(sizes) * panels + 3), 0.42 * len(budgets) + 2.6)
    _margins(fig, left=1.0, right=1.4, top=0.7, bottom=1.25, wspace=1.1, ncols=panels)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    if missing is not None:
        axes[-1].set_axis_off()
        axes[-1].text(0.5, 0.5, textwrap.fill(missing, 40), ha="center", va="center", fontsize=9, wrap=True)
    for ax, m in zip(axes, maps):
        for _, r in m.iterrows():
            x, y = sizes.index(r["n_train"]), budgets.index(r["budget_flops"])
            if r["winner"] == NOT_MEASURED:
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="#d9d9d9", edgecolor="white"))
                ax.text(x, y, "not\nmeasured", ha="center", va="center", fontsize=6, color="#555555")
                continue
            hatch = "///" if r["winner"] == EQUIVALENT else "..." if r["winner"] == INCONCLUSIVE else None
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=cmap(norm(r["gap"])), edgecolor="white",
                                   hatch=hatch))
            label = {EQUIVALENT: "equiv.", INCONCLUSIVE: "?"}.get(r["winner"], f"{r['gap']:+.2f}")
            dark = abs(float(norm(r["gap"])) - 0.5) > 0.3  # saturated background: white text
            ax.text(x, y, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_ylim(-0.5, len(budgets) - 0.5)
        ax.set_xticks(range(len(sizes)), [f"{n}\n(val {n_val.get(n, '?')})" for n in sizes], fontsize=8)
        ax.set_yticks(range(len(budgets)), [f"{b:.2g}" for b in budgets], fontsize=8)
        ax.set_xlabel("target training examples n_train (measured cells)")
        ax.set_ylabel("compute budget per cell (FLOPs, log-spaced)")
        with_pt = bool(m["with_pretraining"].iloc[0]) if not m.empty else False
        ax.set_title("fine-tune compute incl. pretraining FLOPs" if with_pt else "tuning compute only (pretraining not counted)",
                     fontsize=10)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - 1.1 / w, 1.25 / h, 0.18 / w, 1 - 1.95 / h))
    fig.colorbar(sm, cax=cax, label="best val. accuracy: fine-tune minus scratch")
    fig.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch="///", label="equivalent (95% interval inside the margin)"),
                        Patch(facecolor="white", edgecolor="black", hatch="...", label="? inconclusive"),
                        Patch(facecolor="#d9d9d9", label="not measured: no completed trial yet, or more compute than the cell spent")],
               loc="lower center", ncols=3, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{study}: who wins at each data size and compute budget (blue: fine-tune, red: scratch)", fontsize=11)
    return _png(fig)


def plot_anytime(cells: Sequence[Cell], curves: Mapping[str, Anytime], study: str) -> bytes:
    sizes = sorted({c.n_train for c in cells})
    drawn = [c for c in cells if curves[c.name].flops.size]
    if not drawn:
        return _placeholder("Anytime performance", "No finished trials: nothing to plot.")
    from matplotlib.ticker import NullFormatter

    nrows = math.ceil(len(sizes) / 4)
    ncols = math.ceil(len(sizes) / nrows)
    fig = _figure(3.6 * ncols + 0.5, 2.9 * nrows + 0.9)
    _margins(fig, left=0.75, right=0.15, top=0.55, bottom=0.95, wspace=0.2, hspace=0.75, ncols=ncols, nrows=nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    by = {(c.strategy, c.n_train): c for c in cells if c.tuning == 0}  # tuning run 0: one search per cell
    for i, n in enumerate(sizes):
        ax = axes[i // ncols][i % ncols]
        vals = []
        for strategy in STRATEGIES:
            c = by.get((strategy, n))
            if c is None or not curves[c.name].flops.size:
                continue
            a = curves[c.name]
            vals.append(c.n_val)
            ax.step(a.flops, a.best, where="post", color=COLORS[strategy], lw=1.6, marker=".", ms=4)
            if strategy == "finetune" and (c.pretrain_flops or 0.0) > 0:
                ax.step(a.flops + c.pretrain_flops, a.best, where="post", color=COLORS[strategy], lw=1.2,
                        ls=":", alpha=0.9)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelbottom=True)
        ax.grid(True, which="both", alpha=0.3)
        val = {v for v in vals if v is not None}
        ax.set_title(f"n_train = {n}" + (f", n_val = {val.pop()}" if len(val) == 1 else ""), fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel("best-so-far val. accuracy")
        if i // ncols == nrows - 1 or i + ncols >= len(sizes):
            ax.set_xlabel("cumulative FLOPs (all trials)")
    for j in range(len(sizes), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS["finetune"], lw=1.6, label="fine-tune"),
               Line2D([], [], color=COLORS["finetune"], lw=1.2, ls=":", label="fine-tune + pretraining FLOPs"),
               Line2D([], [], color=COLORS["scratch"], lw=1.6, label="from scratch")]
    finetune = [c for c in drawn if c.strategy == "finetune"]
    if any(c.pretrain_flops is None for c in finetune):  # never drawn as if it cost 0
        handles[1] = Line2D([], [], color="none", label="(fine-tune + pretraining: FLOPs unknown, not drawn)")
    elif not any((c.pretrain_flops or 0.0) > 0 for c in finetune):
        handles.pop(1)
    fig.legend(handles=handles, loc="lower center", ncols=3, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{study}: best validation accuracy found vs compute spent on tuning (trials in completion order)",
                 fontsize=11)
    return _png(fig)


VERDICT_COLORS = {"finetune_better": COLORS["finetune"], "scratch_better": COLORS["scratch"],
                  "equivalent": "#1b9e77", "inconclusive": "#7f7f7f"}


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def plot_gap(crossover: Crossover, study: str) -> bytes:
    """The gap (fine-tune minus scratch) per measured size, in percentage points: the simultaneous 95%
    band the verdicts read (shaded), the pointwise 95% interval (error bars), the one-sided 97.5% upper
    bound on fine-tune's advantage, and the +-margin region; log x. A crossover.json without the band
    draws the pointwise intervals alone."""
    rows = [p for p in crossover.per_n if p.gap is not None]
    if not rows:
        return _placeholder("Gap per size", "No size re-run by both strategies: no gap to plot.")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    margin = 100 * crossover.margin
    sizes = [p.n for p in rows]
    fig = _figure(8.5, 5.2)
    _margins(fig, left=0.85, right=0.2, top=0.75, bottom=0.6)
    ax = fig.add_subplot()
    x_min, x_max = sizes[0] / 1.6, sizes[-1] * 1.6
    ax.axhspan(-margin, margin, color="#1b9e77", alpha=0.13, lw=0)
    ax.axhline(0, color="gray", lw=1)
    width = min(1.15, (sizes[-1] / sizes[0]) ** (0.25 / max(1, len(sizes) - 1))) if len(sizes) > 1 else 1.15
    has_band = has_upper = False
    tops, bottoms = [], []
    for p in rows:
        n, gap = p.n, 100 * _num(p.gap)
        band = p.band95 or (None, None)
        lo_b, hi_b = 100 * _num(band[0]), 100 * _num(band[1])
        if math.isfinite(lo_b) and math.isfinite(hi_b):
            has_band = True
            ax.fill_between([n / width, n * width], lo_b, hi_b, color=VERDICT_COLORS.get(p.verdict, "gray"),
                            alpha=0.25, lw=0)
            tops.append(hi_b), bottoms.append(lo_b)
        ci = p.ci95 or (None, None)
        lo_c, hi_c = 100 * _num(ci[0]), 100 * _num(ci[1])
        if math.isfinite(lo_c) and math.isfinite(hi_c):
            ax.errorbar([n], [gap], yerr=[[gap - lo_c], [hi_c - gap]], fmt="none", color="black", capsize=4, lw=1.2)
            tops.append(hi_c), bottoms.append(lo_c)
        ax.scatter([n], [gap], color=VERDICT_COLORS.get(p.verdict, "gray"), edgecolors="black", zorder=3, s=36)
        upper = 100 * _num(p.upper975)
        if math.isfinite(upper):
            has_upper = True
            ax.scatter([n * width ** 0.6], [upper], marker=7, color="#b2182b", zorder=3, s=30)
        tops.append(gap), bottoms.append(gap)
        prob = _num(p.p_within_margin)
        if math.isfinite(prob):
            ax.annotate(f"P={prob:.2f}", (n, 0.015), xycoords=("data", "axes fraction"), ha="center", fontsize=7,
                        color="#333333")
    top, bottom = max(tops + [margin]), min(bottoms + [-margin])
    pad = 0.08 * (top - bottom) or 1.0
    ax.set_ylim(bottom - 1.6 * pad, top + pad)
    n_star = _num(crossover.n_star)
    ci = crossover.ci95 or (None, None)
    open_above = math.isfinite(_num(ci[0])) and not math.isfinite(_num(ci[1]))
    if open_above:  # one-sided: drawn from its lower bound on, not at a point its interval does not pin down
        n_star = _num(ci[0])
    star_drawn = math.isfinite(n_star) and x_min < n_star < x_max
    if star_drawn:
        ax.axvline(n_star, color="black", lw=1, ls=":")
        if open_above:
            ax.axvspan(n_star, x_max, color="black", alpha=0.04, lw=0)
    ax.set_xscale("log")
    ax.set_xlim(x_min, x_max)
    _plain_log_ticks(ax.xaxis, sizes)
    ax.set_xlabel("target training examples n_train (log scale)")
    ax.set_ylabel(f"gap: fine-tune minus scratch, {_metric_label(crossover.metric)} "
                  "(percentage points)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    crit = _num(crossover.band.critical if crossover.band is not None else None)
    handles = [Patch(color="#1b9e77", alpha=0.25,
                     label=f"+-margin ({margin:g} point{'' if margin == 1 else 's'}): no practical difference")]
    if has_band:
        handles.append(Patch(color="gray", alpha=0.35, label="simultaneous 95% band across sizes (the verdicts')"
                                                              + (f", c = {crit:.2f}" if math.isfinite(crit) else "")))
    handles.append(Line2D([], [], color="black", marker="|", ls="none", ms=10, label="pointwise 95% interval"))
    if has_upper:
        handles.append(Line2D([], [], color="#b2182b", marker=7, ls="none",
                              label="one-sided 97.5% upper bound on fine-tune's advantage"))
    for verdict, color in VERDICT_COLORS.items():
        if any(p.verdict == verdict for p in rows):
            handles.append(Line2D([], [], color=color, marker="o", ls="none", markeredgecolor="black",
                                  label=f"gap, verdict {verdict.replace('_', ' ')}"))
    if star_drawn:
        handles.append(Line2D([], [], color="black", ls=":", label=n_star_phrase(crossover)))
    ax.legend(handles=handles, fontsize=7.5, loc="upper right")
    title = f"{study}: the gap per size" + ("" if has_band else " (pointwise intervals only: no simultaneous band)")
    prob_note = ("; P = P(gap <= margin) over the bootstrap draws" if any(p.p_within_margin is not None for p in rows)
                 else "")
    ax.set_title(f"{title}\n{short_headline(crossover)}{prob_note}", fontsize=9)
    return _png(fig)


def plot_error_rate(values: Mapping[str, Mapping[int, list[float]]], crossover: Crossover,
                    metric: str, study: str) -> bytes:
    """The learning curves as error rate (1 - accuracy) on log-log axes, where the large-n differences
    the accuracy axis flattens stay visible: replicates, their mean and 95% interval, the fitted curves
    (1 - (a - b n^-c); dashed beyond the measured sizes) and their asymptotes 1 - a."""
    sizes = sorted({n for s in STRATEGIES for n in values.get(s, {})})
    if not sizes:
        return _placeholder("Error rate", "No cell has re-run results (`final`) yet:\nnothing to plot.")
    fig = _figure(8.5, 5.5)
    _margins(fig, left=0.85, right=0.2, top=0.65, bottom=0.6)
    ax = fig.add_subplot()
    x_min, x_max = sizes[0] / 1.5, sizes[-1] * 2.0
    n_test = _num(crossover.n_test)
    floor = 0.5 / n_test if math.isfinite(n_test) and n_test > 0 else 1e-4  # a perfect score drawn at half an example
    lows, highs = [], []
    for strategy in STRATEGIES:
        curve = values.get(strategy, {})
        if not curve:
            continue
        color, label = COLORS[strategy], LABELS[strategy]
        ns = sorted(curve)
        for n in ns:
            err = np.maximum(1.0 - np.asarray(curve[n], dtype=float), floor)
            ax.scatter([n] * len(err), err, s=10, color=color, alpha=0.3, linewidths=0)
            lows.append(float(err.min())), highs.append(float(err.max()))
        stats = [mean_ci95(curve[n]) for n in ns]
        means = np.maximum(1.0 - np.array([s[0] for s in stats]), floor)
        lo = np.maximum(1.0 - np.array([s[2] for s in stats]), floor)
        hi = np.maximum(1.0 - np.array([s[1] for s in stats]), floor)
        ax.errorbar(ns, means, yerr=np.array([means - lo, hi - means]), fmt="o", color=color, capsize=3,
                    label=f"{label}: 1 - mean, 95% CI over replicates")
        fit = crossover.fits.get(strategy)
        if fit:
            abc = (fit.a, fit.b, fit.c)
            inside = np.geomspace(ns[0], ns[-1], 200)
            ax.plot(inside, np.maximum(1.0 - power_law(abc, inside), floor), color=color, lw=1.8,
                    label=f"{label}: fitted 1 - (a - b n^-c)")
            for a, b in ((x_min, ns[0]), (ns[-1], x_max)):
                if b > a:
                    xs = np.geomspace(a, b, 100)
                    ax.plot(xs, np.maximum(1.0 - power_law(abc, xs), floor), color=color, lw=1.5, ls="--")
            if 0 < 1.0 - fit.a < 1:
                ax.axhline(1.0 - fit.a, color=color, lw=0.8, ls=":", alpha=0.8,
                           label=f"{label}: fitted asymptote 1 - a = {1.0 - fit.a:.3f}")
                lows.append(1.0 - fit.a)
    ax.plot([], [], color="gray", ls="--", label="extrapolation beyond the measured range")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_min, x_max)
    if lows and highs:
        ax.set_ylim(max(floor, min(lows)) / 1.5, min(1.0, max(highs) * 1.5))
    _plain_log_ticks(ax.xaxis, sizes)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("target training examples n_train (log scale)")
    ax.set_ylabel(f"error rate: 1 - {_metric_label(metric)} (log scale)")
    ax.set_title(f"{study}: {_metric_label(metric)} as error rate, log-log (the large-n differences)\n"
                 f"{short_headline(crossover)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def draw(report: Report) -> dict[str, bytes]:
    """Every figure of the report, PNG bytes by PLOT_FILES' key."""
    c, study = report.crossover, report.study
    return {
        "learning_curves": plot_learning_curves(report.values, c, report.metric, study, report.n_val),
        "error_rate": plot_error_rate(report.values, c, report.metric, study),
        "gap": plot_gap(c, study),
        "effective_data": plot_effective_data(report.transfer, study),
        "winner_map": plot_winner_map(report.maps, study, report.n_val, missing=report.missing_panel),
        "anytime": plot_anytime(report.cells, report.curves, study),
    }

"""The verdict in words and tables: the headline line harness-report prints, its details, the
per-size table and the effective-data rows. Reads crossover.json's dict only, so a report rebuilt
from that file says the same."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.report.cells import LABELS, STRATEGIES, fmt_n

VERDICT_TEXT = {"finetune_better": "fine-tune better", "scratch_better": "scratch better",
                "equivalent": "equivalent", "inconclusive": "inconclusive"}


def _ci(ci: Sequence[Any] | None) -> str:
    return f"95% CI {fmt_n(ci[0])}-{fmt_n(ci[1])}" if ci else "no interval"


def _sizes(c: Mapping[str, Any], verdict: str) -> list[int]:
    return [p["n"] for p in c.get("per_n", []) if p["verdict"] == verdict]


def headline_line(c: Mapping[str, Any]) -> str:
    """The answer in one line (what harness-report prints)."""
    status, margin = c.get("status"), float(c.get("margin", 0.0))
    lo, hi = c.get("measured_range") or (None, None)
    m = f"{margin:g}"
    n_star = f"n* = {fmt_n(c.get('n_star'))} ({_ci(c.get('ci95'))})"
    if status == "crossover":
        cross = f"; scratch goes ahead at n = {fmt_n(c['n_cross'])} ({_ci(c.get('n_cross_ci95'))})" if c.get("n_cross") else ""
        text = (f"crossover: fine-tune is better by more than {m} at n = {_sizes(c, 'finetune_better')}, scratch better "
                f"by more than {m} at n = {_sizes(c, 'scratch_better')}; fine-tune's advantage is within {m} from "
                f"{n_star}{cross}")
    elif status == "catch_up":
        text = (f"scratch catches up: fine-tune is better by more than {m} at n = {_sizes(c, 'finetune_better')}, "
                f"equivalent within +-{m} at n = {_sizes(c, 'equivalent')}; from {n_star} on, training from scratch "
                f"loses at most {m}")
    elif status == "finetune_ahead":
        extra = (f"; the fitted curves put {n_star}, an extrapolation beyond {hi}" if c.get("extrapolated") and c.get("n_star")
                 else "; the fitted curves do not close the gap within the search horizon")
        text = f"fine-tune is better by more than {m} at every measured size ({lo}-{hi}){extra}"
    elif status == "equivalent":
        text = f"equivalent within +-{m} at every measured size ({lo}-{hi}): pretraining makes no practical difference here"
    elif status == "scratch_ahead":
        text = f"scratch is better by more than {m} at every measured size ({lo}-{hi}): negative transfer"
    elif status == "inconclusive":
        need = c.get("needs_replicates") or []
        text = (f"inconclusive: {c.get('reason')}"
                + (f"; more replicates would decide n = {need}" if need else ""))
    else:
        text = f"insufficient data: {c.get('reason') or 'no re-run results'}"
    return f"[{c.get('metric', 'test_acc')}, margin {m}] {text}"


def short_headline(c: Mapping[str, Any]) -> str:
    """A few words for a plot title."""
    status = str(c.get("status"))
    n_star = f"n* = {fmt_n(c.get('n_star'))} ({_ci(c.get('ci95'))})"
    return {
        "crossover": f"crossover: scratch goes ahead; {n_star}",
        "catch_up": f"scratch catches up within the margin; {n_star}",
        "finetune_ahead": "fine-tune better at every size" + (f"; extrapolated {n_star}" if c.get("extrapolated") else ""),
        "equivalent": "equivalent at every size",
        "scratch_ahead": "scratch better at every size (negative transfer)",
        "inconclusive": "inconclusive: " + str(c.get("reason", "")),
    }.get(status, "insufficient data")


def details(c: Mapping[str, Any]) -> list[str]:
    margin = float(c.get("margin", 0.0))
    out = []
    if c.get("measured_range"):
        out.append(f"Measured range (sizes both strategies re-ran): {c['measured_range'][0]}-{c['measured_range'][1]}.")
    out.append(f"Each size's verdict compares the 95% interval of the gap (fine-tune minus scratch) with the margin "
               f"+-{margin:g}: better only when the whole interval lies beyond it, equivalent only when it lies inside. "
               f"Interval noise: {c.get('intervals')} ({c.get('n_boot')} bootstrap replicates).")
    if c.get("n_star") is not None or c.get("ci95"):
        out.append(f"n* = {fmt_n(c.get('n_star'))}: the smallest size from which fine-tune's advantage on the fitted "
                   f"curves stays at or below {margin:g} (searched to {c.get('horizon', 10):g}x the largest size); "
                   f"{_ci(c.get('ci95'))}, each bootstrap replicate re-fitting both curves (an open end, inf, means "
                   "over 2.5% of replicates never get there)" + ("; extrapolated" if c.get("extrapolated") else "") + ".")
    if c.get("n_cross") is not None:
        out.append(f"Scratch's fitted curve goes ahead of fine-tune's at n_cross = {fmt_n(c['n_cross'])} "
                   f"({_ci(c.get('n_cross_ci95'))}).")
    shares = c.get("status_shares") or {}
    if shares:
        said = ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        out.append("What the bootstrap replicates' point gaps say (a replicate whose gaps change direction across "
                   "sizes reads inconclusive): " + said
                   + (f" (agreement with the headline: {c['agreement']:.0%})" if c.get("agreement") is not None else "") + ".")
    if c.get("switches"):
        out.append(f"The verdict changes at n = {c['switches']}.")
    if c.get("needs_replicates"):
        cells = [f"{LABELS.get(x['strategy'], x['strategy'])} n={x['n_train']} ({x['replicates']} replicates)"
                 for x in c.get("needs_cells") or []]
        out.append(f"Undecided sizes that decide the headline: n = {c['needs_replicates']}"
                   + (f" (cells: {'; '.join(cells)})" if cells else "")
                   + ": more replicates (`harness-study study.max_seeds=...`) would decide them.")
    out += probe_notes(c)
    if c.get("missing_sizes"):
        out.append(f"Sizes measured by one strategy only (not compared): {c['missing_sizes']}.")
    return out


def probe_notes(c: Mapping[str, Any]) -> list[str]:
    """What the linear probe on the frozen source features says, against scratch at the same size."""
    rows = [p for p in c.get("per_n", []) if p.get("probe_acc") is not None]
    if not rows:
        return []
    below = [p["n"] for p in rows if p["probe_acc"] < p.get("scratch_acc", float("inf"))]
    text = ("A logistic-regression probe on the frozen source features, trained on each replicate's n_train "
            "examples, reaches " + ", ".join(f"{p['probe_acc']:.3f} at n={p['n']}" for p in rows) + ".")
    if below:
        text += (f" At n = {below} it is below what scratch reaches with the same examples: the source features "
                 "do not carry the target's information there, and fine-tuning has to relearn it.")
    return [text]


def per_size_table(c: Mapping[str, Any], values: Mapping[str, Mapping[int, list[float]]],
                   n_val: Mapping[int, Any], metric: str) -> pd.DataFrame:
    labelled = c.get("n_labelled_by_n_train") or {}
    rows = []
    for p in c.get("per_n", []):
        n = int(p["n"])
        row: dict[str, Any] = {"n_train": n, "n_val": n_val.get(n), "n_labelled": labelled.get(str(n))}
        for s in STRATEGIES:
            v = values.get(s, {}).get(n) or []
            row[f"{LABELS[s]} {metric}"] = f"{sum(v) / len(v):.4f}" if v else "-"
            row[f"{LABELS[s]} replicates"] = p["replicates"].get(s)
        ci = p.get("ci95") or [None, None]
        row["gap"] = p["gap"]
        row["gap 95% CI"] = (f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci[0] is not None and ci[1] is not None else "-")
        row["verdict"] = VERDICT_TEXT.get(p["verdict"], p["verdict"])
        row["test examples resampled"] = bool(p.get("test_noise"))
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_table(rows: Sequence[Mapping[str, Any]], n_val: Mapping[int, Any],
                   labelled: Mapping[str, Any]) -> pd.DataFrame:
    def count(v: Any) -> str:
        if v is None or not math.isfinite(float(v)):
            return "inf"
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"

    def interval(lo: Any, hi: Any) -> str:
        return f"[{count(lo)}, {count(hi)}]"

    return pd.DataFrame([{
        "n_train": r["n_train"], "n_val": n_val.get(int(r["n_train"])), "n_labelled": labelled.get(str(r["n_train"])),
        "fine-tune acc": r["finetune_acc"],
        "scratch n equivalent D_E": r["scratch_n_equivalent"], "D_T": r["effective_data_transferred"],
        "D_T 95% CI": interval(r["d_t_ci95_low"], r["d_t_ci95_high"]), "multiplier": r["multiplier"],
        "extrapolated": r["extrapolated"], "note": r["note"] or "stable",
    } for r in rows])


def fmt_multiplier(v: float) -> str:
    return f"{v:.2g}x" if math.isfinite(v) else "inf (scratch never reaches it)"

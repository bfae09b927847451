"""The verdict in words and tables: the headline line harness-report prints, its details, the
per-size table, the per-size answers (how much pretraining is worth at most, P(gap <= margin),
what the design resolves, where the gap's variance comes from, what would decide an undecided
size) and the effective-data rows. Reads crossover.json's dict only, so a report rebuilt from that
file says the same; every key issue 21 added is read with .get(), so a crossover.json from before
it still reads (without those lines)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.report.cells import LABELS, STRATEGIES, fmt_n
from harness.report.verdict import SETTLED

VERDICT_TEXT = {"finetune_better": "fine-tune better", "scratch_better": "scratch better",
                "equivalent": "equivalent", "inconclusive": "inconclusive"}


def _ci(ci: Sequence[Any] | None) -> str:
    return f"95% CI {fmt_n(ci[0])}-{fmt_n(ci[1])}" if ci else "no interval"


def _sizes(c: Mapping[str, Any], verdict: str) -> list[int]:
    return [p["n"] for p in c.get("per_n", []) if p["verdict"] == verdict]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def points(v: Any, sign: bool = True) -> str:
    """An accuracy difference in percentage points: 0.02 -> "+2.0"."""
    if not _finite(v):
        return "-"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def _point_word(v: float) -> str:
    return "point" if abs(100 * v - 1) < 1e-9 else "points"


def n_star_phrase(c: Mapping[str, Any]) -> str:
    """n* in words: crossover.json's n_star_text when present (one-sided, "n* > 78", when its interval is
    open above), else the point and its interval; "extrapolated" whenever it lies beyond the measured range."""
    text = c.get("n_star_text") or f"n* = {fmt_n(c.get('n_star'))} ({_ci(c.get('ci95'))})"
    if c.get("extrapolated") and "extrapolat" not in text:
        text += ", extrapolated"
    return text


def decide_items(c: Mapping[str, Any]) -> list[str]:
    """What would decide each undecided size, as its `decide` says: more replicates or tuning runs
    (with the number), or that the margin is below what this design resolves and what would resolve it."""
    out = []
    for p in c.get("per_n", []):
        d = p.get("decide")
        if p.get("verdict") != "inconclusive" or not isinstance(d, Mapping):
            continue
        text = d.get("text")
        if not text:
            number, action = d.get("number"), d.get("action")
            text = ({"replicates": f"{number} replicates per tuning run would decide it",
                     "tuning_runs": f"{number} tuning runs would decide it",
                     "larger_test": f"a test split of about {number:,} examples would decide it"
                     if isinstance(number, (int, float)) else "a larger test split would decide it"}
                    .get(str(action), "nothing this design can add decides it"))
        out.append(f"n = {p['n']}: {text}")
    return out


def headline_line(c: Mapping[str, Any]) -> str:
    """The answer in one line (what harness-report prints)."""
    status, margin = c.get("status"), float(c.get("margin", 0.0))
    lo, hi = c.get("measured_range") or (None, None)
    m = f"{margin:g}"
    n_star = n_star_phrase(c)
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
        extra = (f"; the fitted curves put {n_star} beyond {hi}, an extrapolation" if c.get("extrapolated") and c.get("n_star")
                 else "; the fitted curves do not close the gap within the search horizon")
        text = f"fine-tune is better by more than {m} at every measured size ({lo}-{hi}){extra}"
    elif status == "equivalent":
        text = f"equivalent within +-{m} at every measured size ({lo}-{hi}): pretraining makes no practical difference here"
    elif status == "scratch_ahead":
        text = f"scratch is better by more than {m} at every measured size ({lo}-{hi}): negative transfer"
    elif status == "inconclusive":
        need = c.get("needs_replicates") or []
        decide = decide_items(c)
        text = f"inconclusive: {c.get('reason')}"
        if decide:
            text += "; what would decide: " + "; ".join(decide)
        elif need:  # a crossover.json from before the per-size `decide`
            text += f"; more replicates would decide n = {need}"
    else:
        text = f"insufficient data: {c.get('reason') or 'no re-run results'}"
    return f"[{c.get('metric', 'test_acc')}, margin {m}] {text}"


def answer_sentences(c: Mapping[str, Any]) -> str:
    """The answer in one or two sentences, for the top of the report: the headline (without the
    per-size list of what would decide it), then where the gap is settled and what pretraining is
    worth at the largest measured size."""
    status, m = c.get("status"), f"{float(c.get('margin', 0.0)):g}"
    if status == "inconclusive":
        first = f"**Inconclusive at a margin of +-{m}** ({c.get('metric', 'test_acc')}): {c.get('reason')}."
        measured = [p for p in c.get("per_n", []) if _finite(p.get("gap")) and p.get("band95")]
        if measured:
            big = max(measured, key=lambda p: abs(float(p["gap"])))
            lo, hi = big["band95"]
            first += (f" The largest measured gap is {points(big['gap'])} points at n = {big['n']} (fine-tune minus "
                      f"scratch; simultaneous 95% band {points(lo)} to {points(hi)}).")
    elif status == "insufficient_data":
        first = f"**Insufficient data:** {c.get('reason') or 'no re-run results'}."
    else:
        text = headline_line(c).split("] ", 1)[-1]
        first = "**" + text[:1].upper() + text[1:] + ".**"
    rows = [p for p in c.get("per_n", []) if _finite(p.get("upper975"))]
    if not rows:
        return first
    largest = max(rows, key=lambda p: p["n"])
    settled = c.get("settled_from") if "settled_from" in c else next(
        (p["n"] for p in rows if _finite(p.get("p_within_margin")) and p["p_within_margin"] >= SETTLED), None)
    where = (f"From n = {settled} on, fine-tune's advantage is within the margin with probability >= {SETTLED:g}; "
             if settled is not None else f"At no measured size is fine-tune's advantage within the margin with "
             f"probability {SETTLED:g}; ")
    return first + " " + where + _worth(int(largest["n"]), float(largest["upper975"])).replace(
        "With", "with", 1) + "."


def short_headline(c: Mapping[str, Any]) -> str:
    """A few words for a plot title."""
    status = str(c.get("status"))
    n_star = n_star_phrase(c)
    return {
        "crossover": f"crossover: scratch goes ahead; {n_star}",
        "catch_up": f"scratch catches up within the margin; {n_star}",
        "finetune_ahead": "fine-tune better at every size" + (f"; {n_star}" if c.get("extrapolated") and c.get("n_star") else ""),
        "equivalent": "equivalent at every size",
        "scratch_ahead": "scratch better at every size (negative transfer)",
        "inconclusive": "inconclusive: " + str(c.get("reason", "")),
    }.get(status, "insufficient data")


def details(c: Mapping[str, Any]) -> list[str]:
    margin = float(c.get("margin", 0.0))
    out = []
    if c.get("measured_range"):
        out.append(f"Measured range (sizes both strategies re-ran): {c['measured_range'][0]}-{c['measured_range'][1]}.")
    if _band(c):
        out.append(f"Each size's verdict compares the gap's simultaneous 95% band (fine-tune minus scratch) with the "
                   f"margin +-{margin:g}: better only when the whole band lies beyond it, equivalent only when it lies "
                   f"inside. Interval noise: {c.get('intervals')} ({c.get('n_boot')} bootstrap replicates).")
    else:
        out.append(f"Each size's verdict compares the 95% interval of the gap (fine-tune minus scratch) with the margin "
                   f"+-{margin:g}: better only when the whole interval lies beyond it, equivalent only when it lies inside. "
                   f"Interval noise: {c.get('intervals')} ({c.get('n_boot')} bootstrap replicates).")
    for note in (between_runs_note(c), test_split_note(c)):
        if note:
            out.append(note)
    if c.get("n_star") is not None or c.get("ci95") or c.get("n_star_text"):
        out.append(f"{n_star_phrase(c)}: the smallest size from which fine-tune's advantage on the fitted "
                   f"curves stays at or below {margin:g} (searched to {c.get('horizon', 10):g}x the largest size), "
                   "each bootstrap replicate re-fitting both curves; an interval open above (reported one-sided, "
                   "\"n* > ...\") means over 2.5% of replicates never get there"
                   + ("; extrapolated: it lies beyond the measured sizes, where only the fitted curve family speaks"
                      if c.get("extrapolated") else "") + ".")
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
    decide = decide_items(c)
    if decide:
        out.append("Undecided sizes and what would decide them (a power calculation from each size's own measured "
                   "variances, reading its current gap as the truth; harness-study adds replicates up to "
                   "`study.max_seeds` and tuning runs up to `study.max_tunings`): " + "; ".join(decide) + ".")
    elif c.get("needs_replicates"):
        cells = [f"{LABELS.get(x['strategy'], x['strategy'])} n={x['n_train']} ({x['replicates']} replicates)"
                 for x in c.get("needs_cells") or []]
        out.append(f"Undecided sizes that decide the headline: n = {c['needs_replicates']}"
                   + (f" (cells: {'; '.join(cells)})" if cells else "")
                   + ": more replicates (`harness-study study.max_seeds=...`) would decide them.")
    out += probe_notes(c)
    if c.get("missing_sizes"):
        out.append(f"Sizes measured by one strategy only (not compared): {c['missing_sizes']}.")
    return out


def _band(c: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """crossover.json's simultaneous band, when it has one with a critical value (absent before issue 21)."""
    band = c.get("band")
    return band if isinstance(band, Mapping) and _finite(band.get("critical")) else None


def band_note(c: Mapping[str, Any]) -> str:
    """The sentence beside the per-size table: which interval the per-size claims come from."""
    n = len(c.get("per_n", []))
    band = _band(c)
    if band is None:
        return ("Per-size claims use each size's pointwise 95% interval (this crossover.json has no simultaneous "
                "band): with several sizes, the chance of at least one false claim among them is above 5%.")
    level = float(band.get("level") or 0.95)
    return (f"Per-size claims use a simultaneous {level:.0%} band across the {n} measured sizes "
            f"({band.get('method') or 'max-|t| over the joint bootstrap draws'}, critical value {band['critical']:.2f}), "
            f"so the chance of any false claim among them is held at {1 - level:.0%}. The table shows each size's "
            f"pointwise 95% interval (what one size alone says) beside the band (what the verdict reads).")


def between_runs_note(c: Mapping[str, Any]) -> str | None:
    """What the intervals know about the noise between tuning runs (which configuration a search finds)."""
    how = c.get("between_runs")
    runs = sorted({int(k) for p in c.get("per_n", []) for k in (p.get("tuning_runs") or {}).values()})
    one = runs == [1] or not runs
    per_cell = "one tuning run per cell" if one else f"fewer than two tuning runs at some cells ({runs[0]}-{runs[-1]})"
    if how == "estimated":
        tau, ratio = c.get("tau"), c.get("tau_ratio")
        sd = (f"; sd {tau:.4f} = {points(tau, sign=False)} points" if _finite(tau) else "")
        sd += (f", or {ratio:.2f}x the replicate variance of a cell mean where that is larger" if _finite(ratio) else "")
        return (f"**Between-run variance estimated, not measured:** the study had {per_cell}, so the variance between "
                f"tuning runs (which configuration the search finds{sd}) was estimated from the lack of fit of the "
                "cell means around the fitted curves, as an upper bound (the 80% upper Q-profile bound of a constant variance and of one proportional to the replicate variance, the larger at each cell), and added "
                "to every interval; `study.tunings` >= 2 measures it.")
    if how == "not estimable":
        return (f"**The intervals miss the tuning noise:** the study had {per_cell} and too few sizes to estimate the "
                "between-run variance from the curves, so the intervals hold replicate and test-example noise only; "
                "a re-run of the whole study can differ by more than they say (`study.tunings` >= 2 measures it).")
    if how == "measured":
        k = (f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}") if runs else "several"
        return (f"Between-run variance measured: {k} independent tuning runs per cell (each its own search, tuning "
                "subset and validation draw), each winner re-run as replicates; the unit of replication is the tuning "
                "run, so the intervals hold which configuration the search finds.")
    return None


def test_split_note(c: Mapping[str, Any]) -> str | None:
    """The test split's size and how much of each gap's variance comes from its examples."""
    rows = c.get("per_n", [])
    shares = [(p["n"], (p.get("variance_shares") or {}).get("test")) for p in rows]
    known = [(n, v) for n, v in shares if _finite(v)]
    n_test = c.get("n_test")
    if n_test is None and not known:
        return None
    head = (f"Test split: {int(n_test):,} examples, fixed and shared by every cell (each gap is paired on it)"
            if _finite(n_test) else "Test split: its size is not recorded")
    if rows and not any(p.get("test_noise") for p in rows):
        return head + ("; the re-runs carry no per-example test records, so the test examples' noise is not in the "
                       "intervals.")
    if known:
        return head + "; share of each gap's variance from the test examples: " + ", ".join(
            f"n={n} {v:.0%}" for n, v in known) + "."
    return head + "."


def settled_line(c: Mapping[str, Any]) -> str | None:
    """The smallest measured size where P(gap <= margin) >= 0.9, or "not reached by <largest>"."""
    rows = [p for p in c.get("per_n", []) if _finite(p.get("p_within_margin"))]
    if not rows:
        return None
    m = f"{float(c.get('margin', 0.0)):g}"
    largest = max(p["n"] for p in c.get("per_n", []))
    if "settled_from" in c:
        n = c.get("settled_from")
    else:
        n = next((p["n"] for p in rows if p["p_within_margin"] >= SETTLED), None)
    if n is None:
        return (f"**P(gap <= {m}) >= {SETTLED:g} is not reached by n = {largest}:** at no measured size is fine-tune's "
                f"advantage within the margin with probability {SETTLED:g}.")
    later = [p for p in rows if p["n"] >= n]
    every = all(p["p_within_margin"] >= SETTLED for p in later)
    return (f"**The smallest measured size where P(gap <= {m}) >= {SETTLED:g}: n = {n}**"
            + (" (and at every larger measured size)." if every and len(later) > 1 else "."))


def _worth(n: int, upper: float) -> str:
    if upper >= 0:
        return (f"With {n} training examples, pretraining is worth at most {points(upper)} {_point_word(upper)} "
                "(one-sided 97.5% bound)")
    return (f"With {n} training examples, pretraining costs at least {points(-upper, sign=False)} "
            f"{_point_word(upper)} (one-sided 97.5% bound: fine-tune's advantage is at most {points(upper)})")


def answer_lines(c: Mapping[str, Any]) -> list[str]:
    """One line per measured size: the one-sided 97.5% upper bound on fine-tune's advantage in words,
    P(gap <= margin), and the smallest margin the design resolves there."""
    m = float(c.get("margin", 0.0))
    out = []
    for p in c.get("per_n", []):
        if not _finite(p.get("upper975")):
            continue
        text = _worth(int(p["n"]), float(p["upper975"]))
        if _finite(p.get("p_within_margin")):
            text += f"; P(gap <= {m:g}) = {p['p_within_margin']:.2f}"
        if _finite(p.get("resolution")):
            text += (f"; this design resolves margins down to {points(p['resolution'], sign=False)} points here"
                     + (" (below the margin's)" if p["resolution"] <= m else f" (the margin, {points(m, sign=False)}, "
                        "is below it)"))
        out.append(text + ".")
    return out


def _pair(d: Any, fmt: str = "{}") -> str:
    if not isinstance(d, Mapping) or not d:
        return "-"
    return "/".join("-" if d.get(s) is None else fmt.format(d.get(s)) for s in STRATEGIES)


def answer_table(c: Mapping[str, Any], failed: Mapping[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """The per-size answers as a table (empty for a crossover.json from before them). `failed` ({(strategy,
    n): failed re-runs}) stands in where a size's row carries no `failed`."""
    m = float(c.get("margin", 0.0))
    rows = []
    for p in c.get("per_n", []):
        if not _finite(p.get("p_within_margin")) and not _finite(p.get("upper975")):
            continue
        n = int(p["n"])
        shares = p.get("variance_shares") or {}
        fails = p.get("failed")
        if not isinstance(fails, Mapping) and failed is not None:
            fails = {s: failed.get((s, n), 0) for s in STRATEGIES}
        decide = p.get("decide") if p.get("verdict") == "inconclusive" else None
        rows.append({
            "n_train": n,
            "gap (points)": points(p.get("gap")),
            f"P(gap <= {m:g})": f"{p['p_within_margin']:.2f}" if _finite(p.get("p_within_margin")) else "-",
            "fine-tune's advantage at most (97.5%, points)": points(p.get("upper975")),
            "smallest margin resolved (80% power, points)": points(p.get("resolution"), sign=False),
            "gap variance: tuning runs / replicates / test examples": (
                " / ".join(f"{shares[k]:.0%}" if _finite(shares.get(k)) else "-" for k in ("tuning", "replicates", "test"))
                if shares else "-"),
            "tuning runs (fine-tune/scratch)": _pair(p.get("tuning_runs")),
            "replicates (fine-tune/scratch)": _pair(p.get("replicates")),
            "failed re-runs (fine-tune/scratch)": _pair(fails),
            "verdict": VERDICT_TEXT.get(p["verdict"], p["verdict"]),
            "what would decide": (decide.get("text") or "-") if isinstance(decide, Mapping) else "",
        })
    return pd.DataFrame(rows)


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
            if p.get("tuning_runs"):
                row[f"{LABELS[s]} tuning runs"] = p["tuning_runs"].get(s)
        row["gap"] = p["gap"]
        row["gap 95% CI (pointwise)"] = _interval_text(p.get("ci95"))
        if "band95" in p:
            row["gap 95% band (simultaneous)"] = _interval_text(p.get("band95"))
        row["verdict"] = VERDICT_TEXT.get(p["verdict"], p["verdict"])
        row["test examples resampled"] = bool(p.get("test_noise"))
        rows.append(row)
    return pd.DataFrame(rows)


def _interval_text(ci: Sequence[Any] | None) -> str:
    lo, hi = (list(ci) + [None, None])[:2] if ci else (None, None)
    return f"[{lo:+.4f}, {hi:+.4f}]" if _finite(lo) and _finite(hi) else "-"


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

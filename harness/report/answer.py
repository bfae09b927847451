"""The verdict in words and tables: the headline line harness-report prints, its details, the
per-size table, the per-size answers (how much pretraining is worth at most, P(gap <= margin),
what the design resolves, where the gap's variance comes from, what would decide an undecided
size) and the effective-data rows. Reads the typed crossover (harness/report/crossover.py) only, so
a report rebuilt from crossover.json says the same; a crossover.json missing some parts reads
through Crossover.from_json with those parts empty (those lines left out)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.report.cells import LABELS, STRATEGIES, fmt_n
from harness.report.crossover import Band, Crossover, Pair
from harness.report.verdict import LARGER_TEST, REPLICATES, SETTLED, TUNING_RUNS, TransferRow

VERDICT_TEXT = {"finetune_better": "fine-tune better", "scratch_better": "scratch better",
                "equivalent": "equivalent", "inconclusive": "inconclusive"}


def _ci(ci: Pair | None) -> str:
    return f"95% CI {fmt_n(ci[0])}-{fmt_n(ci[1])}" if ci else "no interval"


def _sizes(c: Crossover, verdict: str) -> list[int]:
    return [p.n for p in c.per_n if p.verdict == verdict]


def points(v: float | None, sign: bool = True) -> str:
    """An accuracy difference in percentage points: 0.02 -> "+2.0"."""
    if v is None:
        return "-"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def _point_word(v: float) -> str:
    return "point" if abs(100 * v - 1) < 1e-9 else "points"


def n_star_phrase(c: Crossover) -> str:
    """n* in words: crossover.json's n_star_text when present (one-sided, "n* > 78", when its interval is
    open above), else the point and its interval; "extrapolated" whenever it lies beyond the measured range."""
    text = c.n_star_text or f"n* = {fmt_n(c.n_star)} ({_ci(c.ci95)})"
    if c.extrapolated and "extrapolat" not in text:
        text += ", extrapolated"
    return text


def decide_items(c: Crossover) -> list[str]:
    """What would decide each undecided size, as its `decide` says: more replicates or tuning runs
    (with the number), or that the margin is below what this design resolves and what would resolve it."""
    out = []
    for p in c.per_n:
        d = p.decide
        if p.verdict != "inconclusive" or d is None:
            continue
        text = d.text
        if not text:
            number = d.number
            text = ({REPLICATES: f"{number} replicates per tuning run would decide it",
                     TUNING_RUNS: f"{number} tuning runs would decide it",
                     LARGER_TEST: f"a test split of about {number:,} examples would decide it"
                     if number is not None else "a larger test split would decide it"}
                    .get(str(d.action), "nothing this design can add decides it"))
        out.append(f"n = {p.n}: {text}")
    return out


def headline_line(c: Crossover) -> str:
    """The answer in one line (what harness-report prints)."""
    status, margin = c.status, c.margin
    lo, hi = c.measured_range or (None, None)
    m = f"{margin:g}"
    n_star = n_star_phrase(c)
    if status == "crossover":
        cross = f"; scratch goes ahead at n = {fmt_n(c.n_cross)} ({_ci(c.n_cross_ci95)})" if c.n_cross else ""
        text = (f"crossover: fine-tune is better by more than {m} at n = {_sizes(c, 'finetune_better')}, scratch better "
                f"by more than {m} at n = {_sizes(c, 'scratch_better')}; fine-tune's advantage is within {m} from "
                f"{n_star}{cross}")
    elif status == "catch_up":
        text = (f"scratch catches up: fine-tune is better by more than {m} at n = {_sizes(c, 'finetune_better')}, "
                f"equivalent within +-{m} at n = {_sizes(c, 'equivalent')}; from {n_star} on, training from scratch "
                f"loses at most {m}")
    elif status == "finetune_ahead":
        extra = (f"; the fitted curves put {n_star} beyond {hi}, an extrapolation" if c.extrapolated and c.n_star
                 else "; the fitted curves do not close the gap within the search horizon")
        text = f"fine-tune is better by more than {m} at every measured size ({lo}-{hi}){extra}"
    elif status == "equivalent":
        text = f"equivalent within +-{m} at every measured size ({lo}-{hi}): pretraining makes no practical difference here"
    elif status == "scratch_ahead":
        text = f"scratch is better by more than {m} at every measured size ({lo}-{hi}): negative transfer"
    elif status == "inconclusive":
        decide = decide_items(c)
        text = f"inconclusive: {c.reason}"
        if decide:
            text += "; what would decide: " + "; ".join(decide)
    else:
        text = f"insufficient data: {c.reason or 'no re-run results'}"
    return f"[{c.metric}, margin {m}] {text}"


def answer_sentences(c: Crossover) -> str:
    """The answer in one or two sentences, for the top of the report: the headline (without the
    per-size list of what would decide it), then where the gap is settled and what pretraining is
    worth at the largest measured size."""
    status, m = c.status, f"{c.margin:g}"
    if status == "inconclusive":
        first = f"**Inconclusive at a margin of +-{m}** ({c.metric}): {c.reason}."
        measured = [p for p in c.per_n if p.gap is not None and p.band95]
        if measured:
            big = max(measured, key=lambda p: abs(float(p.gap)))
            lo, hi = big.band95
            first += (f" The largest measured gap is {points(big.gap)} points at n = {big.n} (fine-tune minus "
                      f"scratch; simultaneous 95% band {points(lo)} to {points(hi)}).")
    elif status == "insufficient_data":
        first = f"**Insufficient data:** {c.reason or 'no re-run results'}."
    else:
        text = headline_line(c).split("] ", 1)[-1]
        first = "**" + text[:1].upper() + text[1:] + ".**"
    rows = [p for p in c.per_n if p.upper975 is not None]
    if not rows:
        return first
    largest = max(rows, key=lambda p: p.n)
    where = (f"From n = {c.settled_from} on, fine-tune's advantage is within the margin with probability >= {SETTLED:g}; "
             if c.settled_from is not None else f"At no measured size is fine-tune's advantage within the margin with "
             f"probability {SETTLED:g}; ")
    return first + " " + where + _worth(largest.n, float(largest.upper975)).replace("With", "with", 1) + "."


def short_headline(c: Crossover) -> str:
    """A few words for a plot title."""
    n_star = n_star_phrase(c)
    return {
        "crossover": f"crossover: scratch goes ahead; {n_star}",
        "catch_up": f"scratch catches up within the margin; {n_star}",
        "finetune_ahead": "fine-tune better at every size" + (f"; {n_star}" if c.extrapolated and c.n_star else ""),
        "equivalent": "equivalent at every size",
        "scratch_ahead": "scratch better at every size (negative transfer)",
        "inconclusive": "inconclusive: " + c.reason,
    }.get(c.status, "insufficient data")


def details(c: Crossover) -> list[str]:
    margin = c.margin
    out = []
    if c.measured_range:
        out.append(f"Measured range (sizes both strategies re-ran): {c.measured_range[0]}-{c.measured_range[1]}.")
    if _band(c):
        out.append(f"Each size's verdict compares the gap's simultaneous 95% band (fine-tune minus scratch) with the "
                   f"margin +-{margin:g}: better only when the whole band lies beyond it, equivalent only when it lies "
                   f"inside. Interval noise: {c.intervals} ({c.n_boot} bootstrap replicates).")
    else:
        out.append(f"Each size's verdict compares the 95% interval of the gap (fine-tune minus scratch) with the margin "
                   f"+-{margin:g}: better only when the whole interval lies beyond it, equivalent only when it lies inside. "
                   f"Interval noise: {c.intervals} ({c.n_boot} bootstrap replicates).")
    for note in (between_runs_note(c), test_split_note(c)):
        if note:
            out.append(note)
    if c.n_star is not None or c.ci95 or c.n_star_text:
        out.append(f"{n_star_phrase(c)}: the smallest size from which fine-tune's advantage on the fitted "
                   f"curves stays at or below {margin:g} (searched to {c.horizon:g}x the largest size), "
                   "each bootstrap replicate re-fitting both curves; an interval open above (reported one-sided, "
                   "\"n* > ...\") means over 2.5% of replicates never get there"
                   + ("; extrapolated: it lies beyond the measured sizes, where only the fitted curve family speaks"
                      if c.extrapolated else "") + ".")
    if c.n_cross is not None:
        out.append(f"Scratch's fitted curve goes ahead of fine-tune's at n_cross = {fmt_n(c.n_cross)} "
                   f"({_ci(c.n_cross_ci95)}).")
    if c.status_shares:
        said = ", ".join(f"{k} {v:.0%}" for k, v in sorted(c.status_shares.items(), key=lambda kv: -kv[1]))
        out.append("What the bootstrap replicates' point gaps say (a replicate whose gaps change direction across "
                   "sizes reads inconclusive): " + said
                   + (f" (agreement with the headline: {c.agreement:.0%})" if c.agreement is not None else "") + ".")
    if c.switches:
        out.append(f"The verdict changes at n = {list(c.switches)}.")
    decide = decide_items(c)
    if decide:
        out.append("Undecided sizes and what would decide them (a power calculation from each size's own measured "
                   "variances, reading its current gap as the truth; harness-study adds replicates up to "
                   "`study.max_seeds` and tuning runs up to `study.max_tunings`): " + "; ".join(decide) + ".")
    out += probe_notes(c)
    if c.missing_sizes:
        out.append(f"Sizes measured by one strategy only (not compared): {list(c.missing_sizes)}.")
    return out


def _band(c: Crossover) -> Band | None:
    """The simultaneous band, when there is one with a critical value."""
    return c.band if c.band is not None and c.band.critical is not None else None


def band_note(c: Crossover) -> str:
    """The sentence beside the per-size table: which interval the per-size claims come from."""
    band = _band(c)
    if band is None:
        return ("Per-size claims use each size's pointwise 95% interval (this crossover.json has no simultaneous "
                "band): with several sizes, the chance of at least one false claim among them is above 5%.")
    return (f"Per-size claims use a simultaneous {band.level:.0%} band across the {len(c.per_n)} measured sizes "
            f"({band.method}, critical value {band.critical:.2f}), "
            f"so the chance of any false claim among them is held at {1 - band.level:.0%}. The table shows each size's "
            f"pointwise 95% interval (what one size alone says) beside the band (what the verdict reads).")


def between_runs_note(c: Crossover) -> str | None:
    """What the intervals know about the noise between tuning runs (which configuration a search finds)."""
    how = c.between_runs
    runs = sorted({int(k) for p in c.per_n for k in p.tuning_runs.values()})
    one = runs == [1] or not runs
    per_cell = "one tuning run per cell" if one else f"fewer than two tuning runs at some cells ({runs[0]}-{runs[-1]})"
    if how == "estimated":
        tau, ratio = c.tau, c.tau_ratio
        sd = (f"; sd {tau:.4f} = {points(tau, sign=False)} points" if tau is not None else "")
        sd += (f", or {ratio:.2f}x the replicate variance of a cell mean where that is larger" if ratio is not None else "")
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


def test_split_note(c: Crossover) -> str | None:
    """The test split's size and how much of each gap's variance comes from its examples."""
    rows = c.per_n
    known = [(p.n, p.variance_shares["test"]) for p in rows if p.variance_shares.get("test") is not None]
    if c.n_test is None and not known:
        return None
    head = (f"Test split: {c.n_test:,} examples, fixed and shared by every cell (each gap is paired on it)"
            if c.n_test is not None else "Test split: its size is not recorded")
    if rows and not any(p.test_noise for p in rows):
        return head + ("; the re-runs carry no per-example test records, so the test examples' noise is not in the "
                       "intervals.")
    if known:
        return head + "; share of each gap's variance from the test examples: " + ", ".join(
            f"n={n} {v:.0%}" for n, v in known) + "."
    return head + "."


def settled_line(c: Crossover) -> str | None:
    """The smallest measured size where P(gap <= margin) >= 0.9, or "not reached by <largest>"."""
    rows = [p for p in c.per_n if p.p_within_margin is not None]
    if not rows:
        return None
    m = f"{c.margin:g}"
    largest = max(p.n for p in c.per_n)
    n = c.settled_from
    if n is None:
        return (f"**P(gap <= {m}) >= {SETTLED:g} is not reached by n = {largest}:** at no measured size is fine-tune's "
                f"advantage within the margin with probability {SETTLED:g}.")
    later = [p for p in rows if p.n >= n]
    every = all(p.p_within_margin >= SETTLED for p in later)
    return (f"**The smallest measured size where P(gap <= {m}) >= {SETTLED:g}: n = {n}**"
            + (" (and at every larger measured size)." if every and len(later) > 1 else "."))


def _worth(n: int, upper: float) -> str:
    if upper >= 0:
        return (f"With {n} training examples, pretraining is worth at most {points(upper)} {_point_word(upper)} "
                "(one-sided 97.5% bound)")
    return (f"With {n} training examples, pretraining costs at least {points(-upper, sign=False)} "
            f"{_point_word(upper)} (one-sided 97.5% bound: fine-tune's advantage is at most {points(upper)})")


def answer_lines(c: Crossover) -> list[str]:
    """One line per measured size: the one-sided 97.5% upper bound on fine-tune's advantage in words,
    P(gap <= margin), and the smallest margin the design resolves there."""
    m = c.margin
    out = []
    for p in c.per_n:
        if p.upper975 is None:
            continue
        text = _worth(p.n, float(p.upper975))
        if p.p_within_margin is not None:
            text += f"; P(gap <= {m:g}) = {p.p_within_margin:.2f}"
        if p.resolution is not None:
            text += (f"; this design resolves margins down to {points(p.resolution, sign=False)} points here"
                     + (" (below the margin's)" if p.resolution <= m else f" (the margin, {points(m, sign=False)}, "
                        "is below it)"))
        out.append(text + ".")
    return out


def _pair(d: Mapping[str, Any] | None, fmt: str = "{}") -> str:
    if not d:
        return "-"
    return "/".join("-" if d.get(s) is None else fmt.format(d.get(s)) for s in STRATEGIES)


def answer_table(c: Crossover, failed: Mapping[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """The per-size answers as a table (empty for a crossover.json without them). `failed` ({(strategy,
    n): failed re-runs}) stands in where a size's row carries no `failed`."""
    m = c.margin
    rows = []
    for p in c.per_n:
        if p.p_within_margin is None and p.upper975 is None:
            continue
        shares = p.variance_shares
        fails = p.failed
        if fails is None and failed is not None:
            fails = {s: failed.get((s, p.n), 0) for s in STRATEGIES}
        decide = p.decide if p.verdict == "inconclusive" else None
        rows.append({
            "n_train": p.n,
            "gap (points)": points(p.gap),
            f"P(gap <= {m:g})": f"{p.p_within_margin:.2f}" if p.p_within_margin is not None else "-",
            "fine-tune's advantage at most (97.5%, points)": points(p.upper975),
            "smallest margin resolved (80% power, points)": points(p.resolution, sign=False),
            "gap variance: tuning runs / replicates / test examples": (
                " / ".join(f"{shares[k]:.0%}" if shares.get(k) is not None else "-" for k in ("tuning", "replicates", "test"))
                if shares else "-"),
            "tuning runs (fine-tune/scratch)": _pair(p.tuning_runs),
            "replicates (fine-tune/scratch)": _pair(p.replicates),
            "failed re-runs (fine-tune/scratch)": _pair(fails),
            "verdict": VERDICT_TEXT.get(p.verdict, p.verdict),
            "what would decide": (decide.text or "-") if decide is not None else "",
        })
    return pd.DataFrame(rows)


def probe_notes(c: Crossover) -> list[str]:
    """What the linear probe on the frozen source features says, against scratch at the same size."""
    rows = [p for p in c.per_n if p.probe_acc is not None]
    if not rows:
        return []
    below = [p.n for p in rows if p.probe_acc < (math.inf if p.scratch_acc is None else p.scratch_acc)]
    text = ("A logistic-regression probe on the frozen source features, trained on each replicate's n_train "
            "examples, reaches " + ", ".join(f"{p.probe_acc:.3f} at n={p.n}" for p in rows) + ".")
    if below:
        text += (f" At n = {below} it is below what scratch reaches with the same examples: the source features "
                 "do not carry the target's information there, and fine-tuning has to relearn it.")
    return [text]


def per_size_table(c: Crossover, values: Mapping[str, Mapping[int, list[float]]],
                   n_val: Mapping[int, Any], metric: str) -> pd.DataFrame:
    rows = []
    for p in c.per_n:
        row: dict[str, Any] = {"n_train": p.n, "n_val": n_val.get(p.n), "n_labelled": c.n_labelled_by_n_train.get(p.n)}
        for s in STRATEGIES:
            v = values.get(s, {}).get(p.n) or []
            row[f"{LABELS[s]} {metric}"] = f"{sum(v) / len(v):.4f}" if v else "-"
            row[f"{LABELS[s]} replicates"] = p.replicates.get(s)
            if p.tuning_runs:
                row[f"{LABELS[s]} tuning runs"] = p.tuning_runs.get(s)
        row["gap"] = p.gap
        row["gap 95% CI (pointwise)"] = _interval_text(p.ci95)
        if p.band95 is not None:
            row["gap 95% band (simultaneous)"] = _interval_text(p.band95)
        row["verdict"] = VERDICT_TEXT.get(p.verdict, p.verdict)
        row["test examples resampled"] = p.test_noise
        rows.append(row)
    return pd.DataFrame(rows)


def _interval_text(ci: Pair | None) -> str:
    lo, hi = ci or (None, None)
    return f"[{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else "-"


def transfer_table(rows: Sequence[TransferRow], n_val: Mapping[int, Any],
                   labelled: Mapping[int, Any]) -> pd.DataFrame:
    def count(v: float) -> str:
        if not math.isfinite(v):
            return "inf"
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"

    def interval(lo: float, hi: float) -> str:
        return f"[{count(lo)}, {count(hi)}]"

    return pd.DataFrame([{
        "n_train": r.n, "n_val": n_val.get(r.n), "n_labelled": labelled.get(r.n),
        "fine-tune acc": r.finetune_acc,
        "scratch n equivalent D_E": r.d_e, "D_T": r.d_t,
        "D_T 95% CI": interval(*r.d_t_ci95), "multiplier": r.multiplier,
        "extrapolated": r.extrapolated, "note": r.note or "stable",
    } for r in rows])


def fmt_multiplier(v: float) -> str:
    return f"{v:.2g}x" if math.isfinite(v) else "inf (scratch never reaches it)"

"""The tables and notes the report document shows: the per-size and fine-tune-vs-scratch
comparisons, the compute table, and what the budgets and fairness checks say."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from harness.report.answer import fmt_multiplier, n_star_phrase
from harness.report.cells import LABELS, STRATEGIES, UNKNOWN, Cell, Pretraining, describe
from harness.report.crossover import Crossover
from harness.report.frames import FLOPS_RATIO_FLAG, failed_reruns, fairness
from harness.report.verdict import TransferRow
from harness.store.records import OK, OWN, BudgetRecord, num


def failed_counts(cells: Sequence[Cell]) -> dict[tuple[str, int], int]:
    """{(strategy, n_train): re-runs stored as failed or diverged}, summed over a size's tuning runs."""
    out: dict[tuple[str, int], int] = {}
    for c in cells:
        out[(c.strategy, c.n_train)] = out.get((c.strategy, c.n_train), 0) + failed_reruns(c.final)
    return out


NOT_OK_WORDS = {"failed": "failed (raised; left out of the statistics)",
                "diverged": "diverged (loss NaN/inf; counted at chance accuracy)",
                "collapsed": "collapsed (finished at chance accuracy; kept as measured)"}


def failed_rerun_notes(cells: Sequence[Cell]) -> list[str]:
    """One line per cell with re-runs that did not end `ok`: how many of its re-runs, each with its seed,
    status and reason (a record without a `status` reads as ok)."""
    out = []
    for c in cells:
        bad = [r for r in c.final if r.status != OK]
        if not bad:
            continue
        items = [f"seed {'?' if r.seed is None else r.seed}: {NOT_OK_WORDS.get(r.status, r.status)}"
                 + (f": {r.reason}" if r.reason else "") for r in bad]
        out.append(f"{c.name}: {len(bad)} of {len(c.final)} re-runs did not end ok; " + "; ".join(items))
    return out


def per_size_comparison(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = []
    for n in sorted(table["n_train"].unique()):
        vals = sorted({int(v) for v in table.loc[table["n_train"] == n, "n_val"].dropna()})
        row: dict[str, Any] = {"n_train": int(n), "n_val": "/".join(map(str, vals)) or None,
                               "n_labelled": int(table.loc[table["n_train"] == n, "n_labelled"].max())}
        for s in STRATEGIES:
            r = table[(table["strategy"] == s) & (table["n_train"] == n)]
            if r.empty:
                continue
            r = r.iloc[0]
            row[f"{s} {metric}"] = r[f"{metric}_mean"]
            row[f"{s} FLOPs to best"] = r["flops_to_best"]
            row[f"{s} wall s to best"] = r["wall_s_to_best"]
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(table: pd.DataFrame, crossover: Crossover, d_t: Sequence[TransferRow],
                     pre: Sequence[Pretraining], metric: str) -> pd.DataFrame:
    def col(s: str, key: str) -> pd.Series:
        return table.loc[table["strategy"] == s, key].astype(float)

    def median(s: str, key: str, fmt: str) -> str:
        v = col(s, key).dropna()
        return format(float(v.median()), fmt) if not v.empty else "-"

    def perf(s: str) -> str:
        r = table[table["strategy"] == s].sort_values("n_train")
        r = r[r[f"{metric}_mean"].notna()]
        if r.empty:
            return "-"
        return "; ".join(f"n={int(x.n_train)}: {getattr(x, f'{metric}_mean'):.3f}" for x in r.itertuples())

    pre_flops, pre_wall = _sum_known(p.flops for p in pre), _sum_known(p.wall_s for p in pre)
    total = {s: float(col(s, "flops_total").sum() + col(s, "rerun_flops").sum()) for s in STRATEGIES}
    wall = {s: float(col(s, "wall_s_total").sum() + col(s, "rerun_wall_s").sum()) for s in STRATEGIES}
    mult_text = ("data multiplier (D_F + D_T) / D_F: "
                 + "; ".join(f"n={r.n}: {fmt_multiplier(r.multiplier)}" + (" (extrap.)" if r.extrapolated else "")
                             for r in d_t)) if d_t else "data multiplier: not computable"
    return pd.DataFrame([
        {"aspect": "training time: FLOPs to reach the best (median over n)",
         "fine-tune": median("finetune", "flops_to_best", ".3g"), "from scratch": median("scratch", "flops_to_best", ".3g")},
        {"aspect": "training time: wall s to reach the best (median over n, summed over trials)",
         "fine-tune": median("finetune", "wall_s_to_best", ".1f"), "from scratch": median("scratch", "wall_s_to_best", ".1f")},
        {"aspect": "data requirement",
         "fine-tune": mult_text,
         "from scratch": (f"within {crossover.margin:g} of fine-tune from {n_star_phrase(crossover)} "
                          f"({crossover.status})"
                          if crossover.n_star is not None or crossover.n_star_text else crossover.status)},
        {"aspect": f"performance ({metric}, mean over seeds)", "fine-tune": perf("finetune"), "from scratch": perf("scratch")},
        {"aspect": "resources: total FLOPs (tuning + re-runs; fine-tune incl. pretraining)",
         "fine-tune": _with_pretraining(total["finetune"], pre_flops, ".3g", "FLOPs"), "from scratch": f"{total['scratch']:.3g}"},
        {"aspect": "resources: total wall s (tuning + re-runs; fine-tune incl. pretraining)",
         "fine-tune": _with_pretraining(wall["finetune"], pre_wall, ".1f", "wall time"), "from scratch": f"{wall['scratch']:.1f}"},
    ])


def _sum_known(values: Iterable[float | None]) -> float | None:
    """A total of parts that are all known; None (unknown) as soon as one is not, never a 0 for it."""
    out = 0.0
    for v in values:
        if v is None:
            return None
        out += float(v)
    return out


def _with_pretraining(own: float, pretraining: float | None, fmt: str, what: str) -> str:
    if pretraining is None:
        return f"{UNKNOWN} (tuning + re-runs {own:{fmt}}; pretraining {what} {UNKNOWN})"
    return f"{own + pretraining:{fmt}} (pretraining {pretraining:{fmt}})"


def compute_table(table: pd.DataFrame, pre: Sequence[Pretraining]) -> pd.DataFrame:
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"cell": r.study_name, "n_train": r.n_train, "n_val": r.n_val, "n_labelled": r.n_labelled,
                     "trials (complete/pruned/failed)": f"{r.n_trials} ({r.n_complete}/{r.n_pruned}/{r.n_failed})",
                     "tuning FLOPs": r.flops_total, "tuning wall s": r.wall_s_total,
                     "re-run FLOPs": r.rerun_flops, "re-run wall s": r.rerun_wall_s,
                     "pretraining FLOPs": None, "pretraining wall s": None,
                     "total FLOPs": r.flops_total + r.rerun_flops, "total wall s": r.wall_s_total + r.rerun_wall_s})
    for p in pre:
        name = p.key[:12] if p.origin == OWN else describe(p.origin, p.ref)
        flops = UNKNOWN if p.flops is None else p.flops
        wall = UNKNOWN if p.wall_s is None else p.wall_s
        rows.append({"cell": f"pretraining {name} (counted once; used by {len(p.cells)} cells)",
                     "pretraining FLOPs": flops, "pretraining wall s": wall, "total FLOPs": flops, "total wall s": wall})
    for s in STRATEGIES:
        part = table[table["strategy"] == s]
        if part.empty:
            continue
        pf = _sum_known(p.flops for p in pre) if s == "finetune" else 0.0
        pw = _sum_known(p.wall_s for p in pre) if s == "finetune" else 0.0
        rows.append({"cell": f"total {LABELS[s]}" + (" incl. pretraining" if pre and s == "finetune" else ""),
                     "trials (complete/pruned/failed)": f"{int(part.n_trials.sum())} ({int(part.n_complete.sum())}/"
                                                        f"{int(part.n_pruned.sum())}/{int(part.n_failed.sum())})",
                     "tuning FLOPs": float(part.flops_total.sum()), "tuning wall s": float(part.wall_s_total.sum()),
                     "re-run FLOPs": float(part.rerun_flops.sum()), "re-run wall s": float(part.rerun_wall_s.sum()),
                     "pretraining FLOPs": _or_unknown(pf) if s == "finetune" else None,
                     "pretraining wall s": _or_unknown(pw) if s == "finetune" else None,
                     "total FLOPs": _or_unknown(None if pf is None else float(part.flops_total.sum() + part.rerun_flops.sum()) + pf),
                     "total wall s": _or_unknown(None if pw is None else float(part.wall_s_total.sum() + part.rerun_wall_s.sum()) + pw)})
    columns = ["cell", "n_train", "n_val", "n_labelled", "trials (complete/pruned/failed)", "tuning FLOPs", "tuning wall s",
               "re-run FLOPs", "re-run wall s", "pretraining FLOPs", "pretraining wall s", "total FLOPs", "total wall s"]
    return pd.DataFrame(rows, columns=columns).astype(object).where(lambda f: f.notna(), None)


def _or_unknown(v: float | None) -> float | str:
    return UNKNOWN if v is None else v


def _limits(budget: BudgetRecord | None) -> str:
    """A stored budget without its reference trial (said once per size instead)."""
    return "null" if budget is None else budget.limits()


def budget_notes(cells: Sequence[Cell], table: pd.DataFrame) -> list[str]:
    notes = []
    budgets = {s: sorted({_limits(c.record.budget) for c in cells if c.strategy == s}) for s in STRATEGIES}
    for s in STRATEGIES:
        if budgets[s]:
            notes.append(f"{LABELS[s]} tuning budget per cell: {', '.join(budgets[s])}")
    notes += _reference_notes(cells)
    differ = sorted({c.n_train for c in cells if "budgets_differ" in fairness(c, cells, table).flags})
    if differ or (budgets["finetune"] and budgets["scratch"] and budgets["finetune"] != budgets["scratch"]):
        notes.append("**The two strategies were tuned with different budgets: the comparison is not at equal effort**"
                     + (f" (n_train = {differ})." if differ else "."))
    notes += fairness_notes(cells, table)
    unfinished = int(table["n_unfinished"].sum()) if "n_unfinished" in table else 0
    if unfinished:
        notes.append(f"{unfinished} trial(s) are still RUNNING or WAITING (a worker may be alive or was killed).")
    missing = [c.name for c in cells if not c.final]
    if missing:
        notes.append(f"Cells without re-run results (left out of the crossover): {', '.join(missing)}")
    return notes


def _reference_notes(cells: Sequence[Cell]) -> list[str]:
    """tune.budget=flops: the FLOPs budget of each size and the reference trial it was sized with."""
    out = []
    for n in sorted({c.n_train for c in cells}):
        refs = {b.reference: b for c in cells if c.n_train == n
                for b in [c.record.budget] if b is not None and b.reference is not None}
        for r, b in refs.items():
            out.append(f"n_train={n}: FLOPs budget {num(b.max_flops):.3g} = {num(b.max_flops) / r.trial_flops:.3g} "
                       f"x a reference trial of {r.trial_flops:.3g} FLOPs ({r.steps} steps of one full-training "
                       f"step, {r.step_flops:.3g} FLOPs at batch {r.batch_size}, plus {r.validations} "
                       f"validations; steps: {r.steps_from}); the last trial may overshoot it by less than one trial")
    return out


def fairness_notes(cells: Sequence[Cell], table: pd.DataFrame) -> list[str]:
    """Sizes where the strategies were not tuned at equal effort: tuning FLOPs more than
    FLOPS_RATIO_FLAG apart, pruners planning for different maximum resources, or pruners not recorded."""
    out, unrecorded = [], []
    for n in sorted({c.n_train for c in cells}):
        ft, sc = (next((c for c in cells if c.strategy == s and c.n_train == n and c.tuning == 0), None) for s in STRATEGIES)
        if ft is None or sc is None:
            continue
        fair = fairness(sc, cells, table)
        if "tuning_flops_differ" in fair.flags:
            out.append(f"**n_train={n}: scratch spent {fair.ratio:.2f}x fine-tune's tuning FLOPs** (more than "
                       f"{FLOPS_RATIO_FLAG:g}x either way): not an equal-compute comparison at this size "
                       "(`tune.budget=flops` gives both strategies one FLOPs budget).")
        if "pruner_max_resource_differs" in fair.flags:
            pf, ps = ft.record.pruner, sc.record.pruner  # both recorded, or the flag would not be raised
            out.append(f"**n_train={n}: the pruners planned for different maximum resources** (fine-tune "
                       f"{pf.name} max_resource {pf.max_resource}, scratch {ps.name} "
                       f"{ps.max_resource} steps): their brackets differ (harness-study sets "
                       "`pruner.max_resource` to the largest steps.high of its strategies).")
        if "pruner_not_recorded" in fair.flags:
            unrecorded.append(n)
    if unrecorded:
        out.append(f"The pruners of n_train = {unrecorded} are not recorded (cells tuned before cells stored their "
                   "`pruner`): whether both strategies' pruners had the same maximum resource cannot be checked.")
    return out

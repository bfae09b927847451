"""Derived tables: anytime curves, search-space edge flags, the trials and cells frames, the
winner map, parameter importances, and the tables the report document shows."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.learning_curves import mean_ci95
from harness.report.answer import fmt_multiplier
from harness.report.cells import LABELS, STRATEGIES, UNKNOWN, Cell, describe, fmt_n, iso, num
from harness.report.verdict import EQUIVALENT, FINETUNE_BETTER, INCONCLUSIVE, MARGIN, SCRATCH_BETTER, classify

EDGE_FRACTION = 0.05  # a best value within 5% of its range (log-aware) of an end is flagged
MIN_TRIALS_FOR_IMPORTANCE = 4
BUDGET_LEVELS = 10  # rows of the winner map
Z95 = 1.96
NOT_MEASURED = "not_measured"  # a winner-map square no trial measured
FLOPS_RATIO_FLAG = 1.5  # a size whose strategies' tuning FLOPs differ by more than this is flagged


@dataclass(frozen=True)
class Anytime:
    """A cell's best-so-far validation accuracy against compute, finished trials in completion
    order. ``flops``/``wall_s`` are cumulative over every finished trial (pruned and failed ones
    spent compute too); ``best`` is NaN until the first complete trial."""

    numbers: np.ndarray
    flops: np.ndarray
    wall_s: np.ndarray
    best: np.ndarray

    def best_at(self, budget: float, offset: float = 0.0) -> float:
        """Best validation accuracy found within `budget` FLOPs (``offset`` added to the cell's
        compute, e.g. pretraining); NaN when no trial had completed by then."""
        i = int(np.searchsorted(self.flops + offset, budget, side="right")) - 1
        return float(self.best[i]) if i >= 0 else math.nan

    def at_trial(self, number: int) -> tuple[float, float]:
        """Cumulative (FLOPs, wall s) when trial `number` finished."""
        hit = np.flatnonzero(self.numbers == number)
        if hit.size == 0:
            return math.nan, math.nan
        return float(self.flops[hit[0]]), float(self.wall_s[hit[0]])


def anytime_curve(trials: Iterable[FrozenTrial]) -> Anytime:
    finished = [t for t in trials if t.state.is_finished()]
    far = datetime.max

    def when(t: FrozenTrial) -> tuple[datetime, int]:
        stamp = t.datetime_complete or t.datetime_start or far
        return (stamp.replace(tzinfo=None), t.number)

    finished.sort(key=when)
    best, out = -math.inf, []
    for t in finished:
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            best = max(best, float(t.value))
        out.append(best if math.isfinite(best) else math.nan)
    return Anytime(
        numbers=np.array([t.number for t in finished], dtype=int),
        flops=np.cumsum([num(t.user_attrs.get("flops"), 0.0) for t in finished]).astype(float),
        wall_s=np.cumsum([num(t.user_attrs.get("wall_s"), 0.0) for t in finished]).astype(float),
        best=np.array(out, dtype=float),
    )


@dataclass(frozen=True)
class EdgeFlag:
    """A best parameter value within EDGE_FRACTION of one end of its range."""

    param: str
    value: float
    low: float
    high: float
    side: str  # "low" | "high"
    position: float  # 0 = low end, 1 = high end (log scale for log ranges)


def range_position(value: Any, dist: BaseDistribution) -> float | None:
    """Where `value` lies in a float/int range: 0 at low, 1 at high (in log space for log
    ranges); None for categorical parameters, degenerate ranges or non-numeric values."""
    if not isinstance(dist, (FloatDistribution, IntDistribution)):
        return None
    try:
        v, low, high = float(value), float(dist.low), float(dist.high)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(v) and high > low):
        return None
    if dist.log:
        if v <= 0 or low <= 0:
            return None
        return (math.log(v) - math.log(low)) / (math.log(high) - math.log(low))
    return (v - low) / (high - low)


def edge_flags(params: Mapping[str, Any], space: Mapping[str, BaseDistribution],
               fraction: float = EDGE_FRACTION) -> list[EdgeFlag]:
    flags = []
    for name in sorted(params):
        dist = space.get(name)
        pos = None if dist is None else range_position(params[name], dist)
        if pos is None:
            continue
        side = "low" if pos <= fraction else "high" if pos >= 1.0 - fraction else None
        if side:
            flags.append(EdgeFlag(name, float(params[name]), float(dist.low), float(dist.high), side, pos))
    return flags


def trials_frame(cells: Sequence[Cell]) -> pd.DataFrame:
    param_names = sorted({p for c in cells for t in c.trials for p in t.params})
    rows = []
    for c in cells:
        for t in c.trials:
            row: dict[str, Any] = {
                "study_name": c.name, "strategy": c.strategy, "n_train": c.n_train, "n_val": c.n_val,
                "number": t.number, "state": t.state.name, "value": t.value,
            }
            for p in param_names:
                row[f"params_{p}"] = t.params.get(p)
            ua = t.user_attrs
            for key in ("flops", "train_flops", "eval_flops", "wall_s", "steps", "flops_per_step", "samples_seen"):
                row[key] = num(ua.get(key))
            row["recipe"] = bool(ua.get("recipe", False))
            row["recipe_name"] = ua.get("recipe_name")
            row["fail_reason"] = ua.get("fail_reason")
            row["n_reports"] = len(t.intermediate_values)
            row["last_step"] = max(t.intermediate_values) if t.intermediate_values else None
            row["datetime_start"] = iso(t.datetime_start)
            row["datetime_complete"] = iso(t.datetime_complete)
            row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
            rows.append(row)
    columns = (["study_name", "strategy", "n_train", "n_val", "number", "state", "value"]
               + [f"params_{p}" for p in param_names]
               + ["flops", "train_flops", "eval_flops", "wall_s", "steps", "flops_per_step", "samples_seen",
                  "recipe", "recipe_name", "fail_reason", "n_reports", "last_step", "datetime_start", "datetime_complete",
                  "duration_s"])
    return pd.DataFrame(rows, columns=columns)


def cells_frame(cells: Sequence[Cell], metric: str, curves: Mapping[str, Anytime]) -> pd.DataFrame:
    rows = []
    for c in cells:
        best = c.best_trial()
        flops_to_best, wall_to_best = curves[c.name].at_trial(best.number) if best else (math.nan, math.nan)
        values = [num(r.get(metric)) for r in c.final]
        values = [v for v in values if math.isfinite(v)]
        mean, lo, hi = mean_ci95(values) if values else (math.nan, math.nan, math.nan)
        budget = c.attrs.get("budget") if isinstance(c.attrs.get("budget"), Mapping) else {}
        flags = edge_flags(c.best_params(), c.search_space())
        rows.append({
            "study_name": c.name, "strategy": c.strategy, "n_train": c.n_train, "n_val": c.n_val,
            "selection": c.selection, "n_labelled": c.n_labelled, "n_test": c.attrs.get("n_test"),
            "n_trials": len(c.trials), "n_complete": c.count(TrialState.COMPLETE),
            "n_pruned": c.count(TrialState.PRUNED), "n_failed": c.count(TrialState.FAIL),
            "n_unfinished": sum(not t.state.is_finished() for t in c.trials),
            "best_val": best.value if best else math.nan, "best_trial": best.number if best else None,
            "flops_total": float(sum(num(t.user_attrs.get("flops"), 0.0) for t in c.trials)),
            "wall_s_total": float(sum(num(t.user_attrs.get("wall_s"), 0.0) for t in c.trials)),
            "flops_to_best": flops_to_best, "wall_s_to_best": wall_to_best,
            f"{metric}_mean": mean, f"{metric}_ci95_low": lo, f"{metric}_ci95_high": hi,
            "n_seeds": len(values),
            "rerun_flops": float(sum(num(r.get("flops"), 0.0) for r in c.final)),
            "rerun_wall_s": float(sum(num(r.get("wall_s"), 0.0) for r in c.final)),
            "pretrain_flops": math.nan if c.pretrain_flops is None or c.weights is None else c.pretrain_flops,
            "pretraining": _pretraining_text(c),
            "budget_kind": budget.get("kind", "trials"),
            "budget_n_trials": budget.get("n_trials"), "budget_max_flops": budget.get("max_flops"),
            "budget_max_wall_s": budget.get("max_wall_s"),
            "pruner": (_pruner(c) or {}).get("name"), "pruner_max_resource": (_pruner(c) or {}).get("max_resource"),
            "edge_flags": ";".join(f"{f.param}@{f.side}" for f in flags),
        })
    frame = pd.DataFrame(rows)
    fair = {c.name: fairness(c, cells, frame) for c in cells}
    if not frame.empty:
        frame["tuning_flops_ratio"] = [fair[n]["ratio"] for n in frame["study_name"]]
        frame["fairness_flags"] = [";".join(fair[n]["flags"]) for n in frame["study_name"]]
    return frame


def _pretraining_text(c: Cell) -> str:
    """cells.csv's word on a fine-tune cell's weights: origin, and FLOPs or "unknown"."""
    w = c.weights
    if w is None:
        return ""
    flops = w["pretrain_flops"]
    return f"{describe(w)}: " + (f"{flops:.3g} FLOPs ({w.get('pretrain_flops_from')})" if flops is not None
                                  else f"FLOPs {UNKNOWN}")


def _pruner(c: Cell) -> dict[str, Any] | None:
    p = c.attrs.get("pruner")
    return dict(p) if isinstance(p, Mapping) else None


def _other(c: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The other strategy's cell of the same size (finetune <-> scratch)."""
    if c.strategy not in STRATEGIES:
        return None
    other = STRATEGIES[1 - STRATEGIES.index(c.strategy)]
    return next((o for o in cells if o.strategy == other and o.n_train == c.n_train), None)


def fairness(c: Cell, cells: Sequence[Cell], frame: pd.DataFrame) -> dict[str, Any]:
    """Whether this cell's size compares the strategies at equal effort: the ratio of its tuning FLOPs
    to the other strategy's, and flags: tuning_flops_differ (beyond FLOPS_RATIO_FLAG either way),
    pruner_max_resource_differs, pruner_not_recorded (so that cannot be checked), budgets_differ."""
    other = _other(c, cells)
    if other is None:
        return {"ratio": math.nan, "flags": []}
    total = frame.set_index("study_name")["flops_total"]
    mine, theirs = float(total[c.name]), float(total[other.name])
    ratio = mine / theirs if theirs > 0 else math.nan
    flags = []
    if mine > 0 and theirs > 0 and max(mine, theirs) / min(mine, theirs) > FLOPS_RATIO_FLAG:
        flags.append("tuning_flops_differ")
    pruners = (_pruner(c), _pruner(other))
    if pruners[0] is None or pruners[1] is None:
        flags.append("pruner_not_recorded")
    elif pruners[0].get("max_resource") != pruners[1].get("max_resource"):
        flags.append("pruner_max_resource_differs")
    if c.attrs.get("budget") != other.attrs.get("budget"):
        flags.append("budgets_differ")
    return {"ratio": ratio, "flags": flags}


def budget_levels(cells: Sequence[Cell], curves: Mapping[str, Anytime], levels: int = BUDGET_LEVELS,
                  with_pretraining: bool = True) -> np.ndarray:
    """Log-spaced FLOPs levels from the cheapest first finished trial to the largest cumulative
    compute of any cell, with its pretraining added when that panel is drawn (so both winner-map
    panels share one axis)."""
    lows, highs = [], []
    for c in cells:
        a = curves[c.name]
        positive = a.flops[a.flops > 0]
        if positive.size:
            lows.append(float(positive[0]))
            highs.append(float(positive[-1]) + ((c.pretrain_flops or 0.0) if with_pretraining else 0.0))
    if not lows:
        return np.array([])
    lo, hi = min(lows), max(highs)
    return np.geomspace(lo, hi, levels) if hi > lo else np.array([lo])


def winner_map(cells: Sequence[Cell], curves: Mapping[str, Anytime], budgets: np.ndarray,
               with_pretraining: bool, margin: float = MARGIN) -> pd.DataFrame:
    """Fine-tune minus scratch best-so-far validation accuracy per (n_train, compute budget), with
    the verdict's logic: the 95% interval of the gap (binomial noise of each validation split)
    against the margin. A square is `not_measured` where a strategy had no completed trial by
    then, or where the budget is more than the cell spent (what more compute would find is unknown);
    with pretraining, every square of a size whose pretraining FLOPs are unknown.
    """
    by = {(c.strategy, c.n_train): c for c in cells}
    sizes = sorted({c.n_train for c in cells if c.strategy in STRATEGIES})
    rows = []
    for n in sizes:
        f, s = by.get(("finetune", n)), by.get(("scratch", n))
        offset = f.pretrain_flops if f is not None and with_pretraining else 0.0
        for b in budgets:
            pf = curves[f.name].best_at(b, offset) if f and offset is not None else math.nan
            ps = curves[s.name].best_at(b) if s else math.nan
            spent = bool(f and s and offset is not None and curves[f.name].flops.size and curves[s.name].flops.size
                         and b <= curves[f.name].flops[-1] + offset and b <= curves[s.name].flops[-1])
            if math.isnan(pf) or math.isnan(ps) or not spent:
                gap, half, verdict = math.nan, math.nan, NOT_MEASURED
            else:
                gap = pf - ps
                half = Z95 * math.sqrt(_binom_var(pf, f.n_scored) + _binom_var(ps, s.n_scored))
                verdict = classify(gap - half, gap + half, margin) if f.n_scored and s.n_scored else INCONCLUSIVE
            rows.append({"n_train": n, "budget_flops": float(b), "with_pretraining": with_pretraining,
                         "finetune_best_val": pf, "scratch_best_val": ps, "gap": gap,
                         "ci95_halfwidth": half, "winner": verdict})
    return pd.DataFrame(rows, columns=["n_train", "budget_flops", "with_pretraining", "finetune_best_val",
                                       "scratch_best_val", "gap", "ci95_halfwidth", "winner"])


def pretraining_known(cells: Sequence[Cell]) -> bool:
    """Every fine-tune cell's pretraining FLOPs are known (measured, or declared for a file or hub
    tag): only then is a comparison that charges fine-tuning for its pretraining drawn."""
    return all(c.pretrain_flops is not None for c in cells if c.strategy == "finetune")


def _binom_var(p: float, n_val: int | None) -> float:
    return p * (1.0 - p) / n_val if n_val else 0.0


def split_by_use(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[str], list[str]]:
    """(parameters every trial carries, parameters only some carry, parameters whose range differs
    between trials), each sorted. Optuna's evaluators see only the first kind (the intersection
    search space); the second are the conditional ones, absent where their condition failed; the
    third (a resumed cell given another range) cannot be assessed as one distribution."""
    if not trials:
        return [], [], []
    dists: dict[str, set[BaseDistribution]] = {}
    for t in trials:
        for name, d in t.distributions.items():
            dists.setdefault(name, set()).add(d)
    changed = sorted(n for n, ds in dists.items() if len(ds) > 1)
    always = sorted(n for n in dists if n not in changed and all(n in t.params for t in trials))
    some = sorted(n for n in dists if n not in changed and n not in always)
    return always, some, changed


@dataclass(frozen=True)
class CellImportance:
    """One cell's importances: parameter -> (importance, complete trials that used it, complete trials)."""

    values: dict[str, tuple[float, int, int]]
    notes: list[str]


def _fanova(study: optuna.Study, params: list[str] | None) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, params=params, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0))


def cell_importances(c: Cell, study: optuna.Study) -> CellImportance:
    """The always-used parameters on all complete trials, as Optuna does; then each conditional
    parameter among the trials that used it: fANOVA on those trials alone, over it and the
    always-used parameters, its share kept. Each value comes with how many trials it rests on."""
    complete = c.complete()
    total = len(complete)
    always, conditional, changed = split_by_use(complete)
    values: dict[str, tuple[float, int, int]] = {}
    notes = [f"{c.name}: {name} has different ranges across trials" for name in changed]
    if always:
        for name, v in _fanova(study, always).items():
            values[name] = (float(v), total, total)
    for name in conditional:
        used = sum(name in t.params for t in complete)
        if used < MIN_TRIALS_FOR_IMPORTANCE:
            notes.append(f"{c.name}: {name} used by {used} of {total} complete trials (< {MIN_TRIALS_FOR_IMPORTANCE})")
            continue
        try:
            values[name] = (float(_fanova(study, [*always, name])[name]), used, total)
        except Exception as err:  # noqa: BLE001 - one parameter's failure leaves the cell's others
            notes.append(f"{c.name}: {name} not computable ({type(err).__name__})")
    return CellImportance(values, notes)


def importances(cells: Sequence[Cell], storage: optuna.storages.BaseStorage) -> tuple[pd.DataFrame, list[str]]:
    """fANOVA parameter importances per cell (>= MIN_TRIALS_FOR_IMPORTANCE complete trials),
    averaged per strategy over the cells where each was computed. Returns (frame: param x
    [strategy, strategy_cells, strategy_trials], notes on what was skipped); `strategy_trials` is
    "complete trials that used it / complete trials", summed over those cells."""
    per_strategy: dict[str, list[dict[str, tuple[float, int, int]]]] = {}
    notes: list[str] = []
    for c in cells:
        if len(c.complete()) < MIN_TRIALS_FOR_IMPORTANCE:
            notes.append(f"{c.name}: {len(c.complete())} complete trials (< {MIN_TRIALS_FOR_IMPORTANCE})")
            continue
        try:
            study = optuna.load_study(study_name=c.name, storage=storage, sampler=optuna.samplers.RandomSampler(0))
            found = cell_importances(c, study)
        except Exception as err:  # noqa: BLE001 - importances are optional; say why and go on
            notes.append(f"{c.name}: not computable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})")
            continue
        notes.extend(found.notes)
        if found.values:
            per_strategy.setdefault(c.strategy, []).append(found.values)
    table: dict[str, dict[str, Any]] = {}
    for strategy, dicts in per_strategy.items():
        params = sorted({p for d in dicts for p in d})
        having = {p: [d[p] for d in dicts if p in d] for p in params}
        table[strategy] = {p: float(np.mean([v for v, _, _ in having[p]])) for p in params}
        table[f"{strategy}_cells"] = {p: float(len(having[p])) for p in params}
        table[f"{strategy}_trials"] = {p: f"{sum(u for _, u, _ in having[p])}/{sum(n for _, _, n in having[p])}"
                                       for p in params}
    frame = pd.DataFrame(table)
    if not frame.empty:
        order = [s for s in STRATEGIES if s in frame.columns]
        frame = frame.fillna({s: 0.0 for s in order})
        frame = frame.sort_values(order[0] if order else frame.columns[0], ascending=False)
    return frame, notes


# ============================================================================ the document's tables


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


def comparison_table(table: pd.DataFrame, crossover: Mapping[str, Any], d_t: Sequence[Mapping[str, Any]],
                     pre: Sequence[Mapping[str, Any]], metric: str) -> pd.DataFrame:
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

    pre_flops, pre_wall = _sum_known(p["flops"] for p in pre), _sum_known(p["wall_s"] for p in pre)
    total = {s: float(col(s, "flops_total").sum() + col(s, "rerun_flops").sum()) for s in STRATEGIES}
    wall = {s: float(col(s, "wall_s_total").sum() + col(s, "rerun_wall_s").sum()) for s in STRATEGIES}
    mult_text = ("data multiplier (D_F + D_T) / D_F: "
                 + "; ".join(f"n={r['n_train']}: {fmt_multiplier(r['multiplier'])}" + (" (extrap.)" if r["extrapolated"] else "")
                             for r in d_t)) if d_t else "data multiplier: not computable"
    n_star = crossover.get("n_star")
    return pd.DataFrame([
        {"aspect": "training time: FLOPs to reach the best (median over n)",
         "fine-tune": median("finetune", "flops_to_best", ".3g"), "from scratch": median("scratch", "flops_to_best", ".3g")},
        {"aspect": "training time: wall s to reach the best (median over n, summed over trials)",
         "fine-tune": median("finetune", "wall_s_to_best", ".1f"), "from scratch": median("scratch", "wall_s_to_best", ".1f")},
        {"aspect": "data requirement",
         "fine-tune": mult_text,
         "from scratch": (f"within {crossover.get('margin', 0):g} of fine-tune from n* = {fmt_n(n_star)} ({crossover.get('status')})"
                          if n_star is not None
                          else str(crossover.get("status")))},
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


def compute_table(table: pd.DataFrame, pre: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"cell": r.study_name, "n_train": r.n_train, "n_val": r.n_val, "n_labelled": r.n_labelled,
                     "trials (complete/pruned/failed)": f"{r.n_trials} ({r.n_complete}/{r.n_pruned}/{r.n_failed})",
                     "tuning FLOPs": r.flops_total, "tuning wall s": r.wall_s_total,
                     "re-run FLOPs": r.rerun_flops, "re-run wall s": r.rerun_wall_s,
                     "pretraining FLOPs": None, "pretraining wall s": None,
                     "total FLOPs": r.flops_total + r.rerun_flops, "total wall s": r.wall_s_total + r.rerun_wall_s})
    for p in pre:
        name = str(p["config_hash"])[:12] if p["origin"] == "own pretraining" else describe(p)
        flops = UNKNOWN if p["flops"] is None else p["flops"]
        wall = UNKNOWN if p["wall_s"] is None else p["wall_s"]
        rows.append({"cell": f"pretraining {name} (counted once; used by {len(p['cells'])} cells)",
                     "pretraining FLOPs": flops, "pretraining wall s": wall, "total FLOPs": flops, "total wall s": wall})
    for s in STRATEGIES:
        part = table[table["strategy"] == s]
        if part.empty:
            continue
        pf = _sum_known(p["flops"] for p in pre) if s == "finetune" else 0.0
        pw = _sum_known(p["wall_s"] for p in pre) if s == "finetune" else 0.0
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


def _limits(budget: Any) -> str:
    """A stored budget without its reference trial (said once per size instead)."""
    if not isinstance(budget, Mapping):
        return json.dumps(budget)
    return json.dumps({k: v for k, v in budget.items() if k != "reference"}, sort_keys=True)


def budget_notes(cells: Sequence[Cell], table: pd.DataFrame) -> list[str]:
    notes = []
    budgets = {s: sorted({_limits(c.attrs.get("budget")) for c in cells if c.strategy == s}) for s in STRATEGIES}
    for s in STRATEGIES:
        if budgets[s]:
            notes.append(f"{LABELS[s]} tuning budget per cell: {', '.join(budgets[s])}")
    notes += _reference_notes(cells)
    differ = sorted({c.n_train for c in cells if "budgets_differ" in fairness(c, cells, table)["flags"]})
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
        refs = {json.dumps(b["reference"], sort_keys=True): b for c in cells if c.n_train == n
                for b in [c.attrs.get("budget")] if isinstance(b, Mapping) and isinstance(b.get("reference"), Mapping)}
        for b in refs.values():
            r = b["reference"]
            out.append(f"n_train={n}: FLOPs budget {num(b.get('max_flops')):.3g} = {num(b.get('max_flops')) / r['trial_flops']:.3g} "
                       f"x a reference trial of {r['trial_flops']:.3g} FLOPs ({r['steps']} steps of one full-training "
                       f"step, {r['step_flops']:.3g} FLOPs at batch {r['batch_size']}, plus {r['validations']} "
                       f"validations; steps: {r['steps_from']}); the last trial may overshoot it by less than one trial")
    return out


def fairness_notes(cells: Sequence[Cell], table: pd.DataFrame) -> list[str]:
    """Sizes where the strategies were not tuned at equal effort: tuning FLOPs more than
    FLOPS_RATIO_FLAG apart, pruners planning for different maximum resources, or pruners not recorded."""
    out, unrecorded = [], []
    for n in sorted({c.n_train for c in cells}):
        ft, sc = (next((c for c in cells if c.strategy == s and c.n_train == n), None) for s in STRATEGIES)
        if ft is None or sc is None:
            continue
        flags = fairness(sc, cells, table)
        if "tuning_flops_differ" in flags["flags"]:
            out.append(f"**n_train={n}: scratch spent {flags['ratio']:.2f}x fine-tune's tuning FLOPs** (more than "
                       f"{FLOPS_RATIO_FLAG:g}x either way): not an equal-compute comparison at this size "
                       "(`tune.budget=flops` gives both strategies one FLOPs budget).")
        if "pruner_max_resource_differs" in flags["flags"]:
            pf, ps = _pruner(ft) or {}, _pruner(sc) or {}
            out.append(f"**n_train={n}: the pruners planned for different maximum resources** (fine-tune "
                       f"{pf.get('name')} max_resource {pf.get('max_resource')}, scratch {ps.get('name')} "
                       f"{ps.get('max_resource')} steps): their brackets differ (harness-study sets "
                       "`pruner.max_resource` to the largest steps.high of its strategies).")
        if "pruner_not_recorded" in flags["flags"]:
            unrecorded.append(n)
    if unrecorded:
        out.append(f"The pruners of n_train = {unrecorded} are not recorded (cells tuned before cells stored their "
                   "`pruner`): whether both strategies' pruners had the same maximum resource cannot be checked.")
    return out


_WINNER_TEXT = {FINETUNE_BETTER: "fine-tune better", SCRATCH_BETTER: "scratch better", EQUIVALENT: "equivalent",
                INCONCLUSIVE: "inconclusive", NOT_MEASURED: "not measured"}


def winner_summary(maps: Sequence[pd.DataFrame]) -> list[str]:
    """Per map: the verdicts at each size's largest budget that both strategies reached."""
    out = []
    for m in maps:
        if m.empty:
            continue
        label = "with pretraining FLOPs" if bool(m["with_pretraining"].iloc[0]) else "without pretraining FLOPs"
        measured = m[m["winner"] != NOT_MEASURED]
        if measured.empty:
            out.append(f"{label}: no budget was reached by both strategies at any size")
            continue
        last = measured.sort_values("budget_flops").groupby("n_train").tail(1)
        counts = last["winner"].value_counts().to_dict()
        out.append(f"At each size's largest budget both strategies reached, {label}: "
                   + ", ".join(f"{_WINNER_TEXT.get(k, k)} at {v} size(s)" for k, v in sorted(counts.items())))
    return out

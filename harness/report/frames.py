"""The per-trial and per-cell frames (trials.csv, cells.csv): search-space edge flags, whether a
size compares the strategies at equal effort, and parameter importances."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.report.learning_curves import mean_ci95
from harness.store.records import BudgetRecord, RerunRecord, TrialRecord
from harness.report.anytime import Anytime
from harness.report.cells import STRATEGIES, UNKNOWN, Cell, describe, iso

EDGE_FRACTION = 0.05  # a best value within 5% of its range (log-aware) of an end is flagged
MIN_TRIALS_FOR_IMPORTANCE = 4
FLOPS_RATIO_FLAG = 1.5  # a size whose strategies' tuning FLOPs differ by more than this is flagged


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
            for key in ("flops", "train_flops", "eval_flops", "wall_s", "steps", "flops_per_step", "samples_seen"):
                row[key] = t.compute[key]
            row["recipe"] = t.recipe
            row["recipe_name"] = t.recipe_name
            row["members"] = t.members
            row["fail_reason"] = t.fail_reason
            row["n_reports"] = len(t.intermediate_values)
            row["last_step"] = max(t.intermediate_values) if t.intermediate_values else None
            row["datetime_start"] = iso(t.datetime_start)
            row["datetime_complete"] = iso(t.datetime_complete)
            row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
            rows.append(row)
    columns = (["study_name", "strategy", "n_train", "n_val", "number", "state", "value"]
               + [f"params_{p}" for p in param_names]
               + ["flops", "train_flops", "eval_flops", "wall_s", "steps", "flops_per_step", "samples_seen",
                  "recipe", "recipe_name", "members", "fail_reason", "n_reports", "last_step", "datetime_start", "datetime_complete",
                  "duration_s"])
    return pd.DataFrame(rows, columns=columns)


def cells_frame(cells: Sequence[Cell], metric: str, curves: Mapping[str, Anytime]) -> pd.DataFrame:
    rows = []
    for c in cells:
        best = c.best_trial()
        flops_to_best, wall_to_best = curves[c.name].at_trial(best.number) if best else (math.nan, math.nan)
        values = [r.value(metric) for r in c.final]
        values = [v for v in values if math.isfinite(v)]
        mean, lo, hi = mean_ci95(values) if values else (math.nan, math.nan, math.nan)
        flags = edge_flags(c.best_params(), c.search_space())
        budget = c.record.budget or BudgetRecord(None, None, None)  # none stored: kind trials, no limits
        rows.append({
            "study_name": c.name, "strategy": c.strategy, "n_train": c.n_train, "n_val": c.n_val,
            "selection": c.selection, "n_labelled": c.n_labelled, "n_test": c.record.n_test,
            "n_trials": len(c.trials), "n_complete": c.count(TrialState.COMPLETE),
            "n_pruned": c.count(TrialState.PRUNED), "n_failed": c.count(TrialState.FAIL),
            "n_unfinished": sum(not t.state.is_finished() for t in c.trials),
            "best_val": best.value if best else math.nan, "best_trial": best.number if best else None,
            "flops_total": float(sum(t.spent_flops for t in c.trials)),
            "wall_s_total": float(sum(t.spent_wall_s for t in c.trials)),
            "flops_to_best": flops_to_best, "wall_s_to_best": wall_to_best,
            f"{metric}_mean": mean, f"{metric}_ci95_low": lo, f"{metric}_ci95_high": hi,
            "n_seeds": len(values), "failed_reruns": failed_reruns(c.final),
            "rerun_flops": float(sum(r.flops for r in c.final)),
            "rerun_wall_s": float(sum(r.wall_s for r in c.final)),
            "pretrain_flops": math.nan if c.pretrain_flops is None or c.weights is None else c.pretrain_flops,
            "pretraining": _pretraining_text(c),
            "budget_kind": budget.kind, "budget_n_trials": budget.n_trials, "budget_max_flops": budget.max_flops,
            "budget_max_wall_s": budget.max_wall_s,
            "pruner": c.record.pruner.name if c.record.pruner else None,
            "pruner_max_resource": c.record.pruner.max_resource if c.record.pruner else None,
            "edge_flags": ";".join(f"{f.param}@{f.side}" for f in flags),
        })
    frame = pd.DataFrame(rows)
    fair = {c.name: fairness(c, cells, frame) for c in cells}
    if not frame.empty:
        frame["tuning_flops_ratio"] = [fair[n].ratio for n in frame["study_name"]]
        frame["fairness_flags"] = [";".join(fair[n].flags) for n in frame["study_name"]]
    return frame


def failed_reruns(final: Sequence[RerunRecord]) -> int:
    """Re-runs stored as failed or diverged (a `collapsed` one, at chance accuracy, is a measurement and kept)."""
    return sum(not r.counted for r in final)


def _pretraining_text(c: Cell) -> str:
    """cells.csv's word on a fine-tune cell's weights: origin, and FLOPs or "unknown"."""
    w = c.weights
    if w is None:
        return ""
    flops = w.pretrain_flops
    return f"{describe(w.origin, w.ref)}: " + (f"{flops:.3g} FLOPs ({w.pretrain_flops_from})" if flops is not None
                                                else f"FLOPs {UNKNOWN}")


def _other(c: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The other strategy's cell of the same size (finetune <-> scratch)."""
    if c.strategy not in STRATEGIES:
        return None
    other = STRATEGIES[1 - STRATEGIES.index(c.strategy)]
    return next((o for o in cells if o.strategy == other and o.n_train == c.n_train and o.tuning == c.tuning), None)


@dataclass(frozen=True)
class Fairness:
    """Whether a cell's size compares the strategies at equal effort: the ratio of its tuning FLOPs to
    the other strategy's, and flags: tuning_flops_differ (beyond FLOPS_RATIO_FLAG either way),
    pruner_max_resource_differs, pruner_not_recorded (so that cannot be checked), budgets_differ."""

    ratio: float = math.nan
    flags: tuple[str, ...] = ()


def fairness(c: Cell, cells: Sequence[Cell], frame: pd.DataFrame) -> Fairness:
    """This cell's Fairness against the other strategy's cell of its size and tuning run."""
    other = _other(c, cells)
    if other is None:
        return Fairness()
    total = frame.set_index("study_name")["flops_total"]
    mine, theirs = float(total[c.name]), float(total[other.name])
    ratio = mine / theirs if theirs > 0 else math.nan
    flags = []
    if mine > 0 and theirs > 0 and max(mine, theirs) / min(mine, theirs) > FLOPS_RATIO_FLAG:
        flags.append("tuning_flops_differ")
    pruners = (c.record.pruner, other.record.pruner)
    if pruners[0] is None or pruners[1] is None:
        flags.append("pruner_not_recorded")
    elif pruners[0].max_resource != pruners[1].max_resource:
        flags.append("pruner_max_resource_differs")
    if c.record.budget != other.record.budget:
        flags.append("budgets_differ")
    return Fairness(ratio, tuple(flags))


def split_by_use(trials: Sequence[FrozenTrial | TrialRecord]) -> tuple[list[str], list[str], list[str]]:
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

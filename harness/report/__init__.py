"""The report: everything a study measured, read from the Optuna storage and nothing else.

One cell of a study is one Optuna study named ``<study>/<strategy>/n<n_train>`` (harness/tuning.py
writes it). From those cells this module derives

- tables: every trial (trials.csv), one row per cell (cells.csv), the crossover (crossover.json);
- figures: learning curves with the crossover, effective data transferred, a winner map over data
  size x compute (with and without pretraining FLOPs), best-so-far accuracy against compute;
- report.md and a self-contained report.html with the verdict, the compute spent, search-space
  checks (best parameters at an edge of their range, parameter importances) and the comparison
  table; optionally one W&B run (job_type "report") holding the same.

Because the storage is the single source of truth, the report works however the cells were
launched (one command, a shell multirun, many machines) and can be rebuilt at any time.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from harness.errors import ConfigError
from harness.learning_curves import (
    CrossoverEstimate,
    effective_data_transferred,
    estimate_crossover,
    fit_learning_curve,
    mean_ci95,
)
from harness.storage import open_storage, redact_url, resolve_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

METRICS = ("test_acc", "val_acc")
STRATEGIES = ("finetune", "scratch")
LABELS = {"finetune": "fine-tune", "scratch": "from scratch"}
COLORS = {"finetune": "#1f77b4", "scratch": "#d95f02"}
EDGE_FRACTION = 0.05  # a best value within 5% of its range (log-aware) of an end is flagged
MIN_TRIALS_FOR_IMPORTANCE = 4
BUDGET_LEVELS = 10  # rows of the winner map
CROSSOVER_HORIZON = 1000.0  # estimate_crossover searches up to this x the largest measured n
Z95 = 1.96
PLOT_FILES = {
    "learning_curves": "learning_curves.png",
    "effective_data": "effective_data.png",
    "winner_map": "winner_map.png",
    "anytime": "anytime.png",
}
_CELL_NAME = re.compile(r"^(?P<study>.+)/(?P<strategy>[^/]+)/n(?P<n>\d+)$")


# ============================================================================ reading the storage


@dataclass(frozen=True)
class Cell:
    """One cell (strategy x n_train) of a study, as stored: the study's attrs and its trials."""

    name: str
    strategy: str
    n_train: int
    attrs: dict[str, Any]
    trials: list[FrozenTrial]

    @property
    def n_val(self) -> int | None:
        v = self.attrs.get("n_val")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def final(self) -> list[dict[str, Any]]:
        """Re-runs of the best configuration (empty until tuning re-ran it)."""
        final = self.attrs.get("final")
        return [r for r in final if isinstance(r, Mapping)] if isinstance(final, list) else []

    @property
    def pretrain(self) -> dict[str, Any] | None:
        p = self.attrs.get("pretrain")
        return dict(p) if isinstance(p, Mapping) else None

    @property
    def pretrain_flops(self) -> float:
        return _num(self.pretrain.get("flops"), 0.0) if self.pretrain else 0.0

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]

    def best_trial(self) -> FrozenTrial | None:
        """The trial tuning re-ran (``best_trial`` attr), else the best complete trial."""
        complete = self.complete()
        wanted = self.attrs.get("best_trial")
        for t in complete:
            if t.number == wanted:
                return t
        return max(complete, key=lambda t: t.value, default=None)

    def best_params(self) -> dict[str, Any]:
        params = self.attrs.get("best_params")
        if isinstance(params, Mapping):
            return dict(params)
        best = self.best_trial()
        return dict(best.params) if best else {}

    def search_space(self) -> dict[str, BaseDistribution]:
        """The space stored with the cell; failing that, the distributions the trials used."""
        space: dict[str, BaseDistribution] = {}
        stored = self.attrs.get("search_space")
        if isinstance(stored, Mapping):
            for name, spec in stored.items():
                try:
                    raw = spec["distribution"] if isinstance(spec, Mapping) else spec
                    space[name] = json_to_distribution(raw if isinstance(raw, str) else json.dumps(raw))
                except (KeyError, TypeError, ValueError):
                    continue
        if not space:
            for t in self.trials:
                for name, dist in t.distributions.items():
                    space.setdefault(name, dist)
        return space


def load_cells(storage: optuna.storages.BaseStorage, study: str, shown_url: str) -> list[Cell]:
    """All cells of `study`, sorted by (strategy, n_train); ConfigError if there are none."""
    names = sorted(optuna.get_all_study_names(storage=storage))
    cells: list[Cell] = []
    for name in names:
        match = _CELL_NAME.match(name)
        if match is None or match["study"] != study:
            continue
        loaded = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(0))
        attrs = dict(loaded.user_attrs)
        strategy = str(attrs.get("strategy") or match["strategy"])
        n_train = int(_num(attrs.get("n_train"), float(match["n"])))
        trials = sorted(loaded.get_trials(deepcopy=False), key=lambda t: t.number)
        cells.append(Cell(name, strategy, n_train, attrs, trials))
    if not cells:
        present = sorted({n.split("/", 1)[0] for n in names})
        if present:
            raise ConfigError(
                f"study {study!r} has no cells in storage {shown_url}; studies present: "
                f"{', '.join(present)}: set study.name to one of them"
            )
        raise ConfigError(
            f"study {study!r} has no cells: storage {shown_url} holds no studies at all; run "
            "harness-tune (or harness-study) first, or point storage.url at the right database"
        )
    return sorted(cells, key=lambda c: (_strategy_rank(c.strategy), c.n_train))


def _open(storage_url: str, sqlite_wal: bool) -> tuple[optuna.storages.BaseStorage, str]:
    """Open an existing storage; a SQLite path that does not exist is an error, not a new file."""
    url = resolve_url(storage_url)
    shown = redact_url(url)
    parsed = make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        raise ConfigError(
            f"storage {shown}: no such database file {database!r}: point storage.url at the "
            "database the tuning wrote (e.g. sqlite:///outputs/harness.db)"
        )
    return open_storage(url, heartbeat_interval=None, sqlite_wal=sqlite_wal), shown


# ============================================================================ derived numbers


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
        flops=np.cumsum([_num(t.user_attrs.get("flops"), 0.0) for t in finished]).astype(float),
        wall_s=np.cumsum([_num(t.user_attrs.get("wall_s"), 0.0) for t in finished]).astype(float),
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


def final_values(cells: Sequence[Cell], metric: str) -> dict[str, dict[int, list[float]]]:
    """{strategy: {n_train: [metric per re-run seed]}}; cells without `final` are left out."""
    out: dict[str, dict[int, list[float]]] = {}
    for c in cells:
        values = [_num(r.get(metric)) for r in c.final]
        values = [v for v in values if math.isfinite(v)]
        if values:
            out.setdefault(c.strategy, {})[c.n_train] = values
    return out


def pretraining(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """The pretraining runs the fine-tune cells used, each counted once (by config hash)."""
    runs: dict[str, dict[str, Any]] = {}
    for c in cells:
        p = c.pretrain
        if p is None:
            continue
        key = str(p.get("config_hash") or json.dumps(p, sort_keys=True, default=str))
        runs.setdefault(key, {"config_hash": key, "flops": _num(p.get("flops"), 0.0),
                              "wall_s": _num(p.get("wall_s"), 0.0), "steps": p.get("steps"),
                              "source_val_acc": _num(p.get("source_val_acc")),
                              "source_classes": p.get("source_classes"), "cells": []})
        runs[key]["cells"].append(c.name)
    return list(runs.values())


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
                row[key] = _num(ua.get(key))
            row["recipe"] = bool(ua.get("recipe", False))
            row["fail_reason"] = ua.get("fail_reason")
            row["n_reports"] = len(t.intermediate_values)
            row["last_step"] = max(t.intermediate_values) if t.intermediate_values else None
            row["datetime_start"] = _iso(t.datetime_start)
            row["datetime_complete"] = _iso(t.datetime_complete)
            row["duration_s"] = t.duration.total_seconds() if t.duration is not None else None
            rows.append(row)
    columns = (["study_name", "strategy", "n_train", "n_val", "number", "state", "value"]
               + [f"params_{p}" for p in param_names]
               + ["flops", "train_flops", "eval_flops", "wall_s", "steps", "flops_per_step", "samples_seen",
                  "recipe", "fail_reason", "n_reports", "last_step", "datetime_start", "datetime_complete",
                  "duration_s"])
    return pd.DataFrame(rows, columns=columns)


def cells_frame(cells: Sequence[Cell], metric: str, curves: Mapping[str, Anytime]) -> pd.DataFrame:
    rows = []
    for c in cells:
        best = c.best_trial()
        flops_to_best, wall_to_best = curves[c.name].at_trial(best.number) if best else (math.nan, math.nan)
        values = [_num(r.get(metric)) for r in c.final]
        values = [v for v in values if math.isfinite(v)]
        mean, lo, hi = mean_ci95(values) if values else (math.nan, math.nan, math.nan)
        budget = c.attrs.get("budget") if isinstance(c.attrs.get("budget"), Mapping) else {}
        flags = edge_flags(c.best_params(), c.search_space())
        rows.append({
            "study_name": c.name, "strategy": c.strategy, "n_train": c.n_train, "n_val": c.n_val,
            "n_test": c.attrs.get("n_test"),
            "n_trials": len(c.trials), "n_complete": c.count(TrialState.COMPLETE),
            "n_pruned": c.count(TrialState.PRUNED), "n_failed": c.count(TrialState.FAIL),
            "n_unfinished": sum(not t.state.is_finished() for t in c.trials),
            "best_val": best.value if best else math.nan, "best_trial": best.number if best else None,
            "flops_total": float(sum(_num(t.user_attrs.get("flops"), 0.0) for t in c.trials)),
            "wall_s_total": float(sum(_num(t.user_attrs.get("wall_s"), 0.0) for t in c.trials)),
            "flops_to_best": flops_to_best, "wall_s_to_best": wall_to_best,
            f"{metric}_mean": mean, f"{metric}_ci95_low": lo, f"{metric}_ci95_high": hi,
            "n_seeds": len(values),
            "rerun_flops": float(sum(_num(r.get("flops"), 0.0) for r in c.final)),
            "rerun_wall_s": float(sum(_num(r.get("wall_s"), 0.0) for r in c.final)),
            "pretrain_flops": c.pretrain_flops if c.pretrain else math.nan,
            "budget_n_trials": budget.get("n_trials"), "budget_max_flops": budget.get("max_flops"),
            "budget_max_wall_s": budget.get("max_wall_s"),
            "edge_flags": ";".join(f"{f.param}@{f.side}" for f in flags),
        })
    return pd.DataFrame(rows)


def budget_levels(cells: Sequence[Cell], curves: Mapping[str, Anytime], levels: int = BUDGET_LEVELS) -> np.ndarray:
    """Log-spaced FLOPs levels from the cheapest first finished trial to the largest cumulative
    compute of any cell with its pretraining added (so both winner-map panels share one axis)."""
    lows, highs = [], []
    for c in cells:
        a = curves[c.name]
        positive = a.flops[a.flops > 0]
        if positive.size:
            lows.append(float(positive[0]))
            highs.append(float(positive[-1]) + c.pretrain_flops)
    if not lows:
        return np.array([])
    lo, hi = min(lows), max(highs)
    return np.geomspace(lo, hi, levels) if hi > lo else np.array([lo])


def winner_map(cells: Sequence[Cell], curves: Mapping[str, Anytime], budgets: np.ndarray,
               with_pretraining: bool) -> pd.DataFrame:
    """Fine-tune minus scratch best-so-far validation accuracy per (n_train, compute budget).

    A gap within 1.96 * sqrt(se_f^2 + se_s^2), se = sqrt(p (1 - p) / n_val), is a tie; a budget at
    which either strategy had not completed a trial is n/a.
    """
    by = {(c.strategy, c.n_train): c for c in cells}
    sizes = sorted({c.n_train for c in cells if c.strategy in STRATEGIES})
    rows = []
    for n in sizes:
        f, s = by.get(("finetune", n)), by.get(("scratch", n))
        for b in budgets:
            pf = curves[f.name].best_at(b, f.pretrain_flops if with_pretraining else 0.0) if f else math.nan
            ps = curves[s.name].best_at(b) if s else math.nan
            if math.isnan(pf) or math.isnan(ps):
                gap, half, verdict = math.nan, math.nan, "n/a"
            else:
                gap = pf - ps
                half = Z95 * math.sqrt(_binom_var(pf, f.n_val) + _binom_var(ps, s.n_val))
                verdict = "tie" if abs(gap) <= half else ("finetune" if gap > 0 else "scratch")
            rows.append({"n_train": n, "budget_flops": float(b), "with_pretraining": with_pretraining,
                         "finetune_best_val": pf, "scratch_best_val": ps, "gap": gap,
                         "tie_halfwidth": half, "winner": verdict})
    return pd.DataFrame(rows, columns=["n_train", "budget_flops", "with_pretraining", "finetune_best_val",
                                       "scratch_best_val", "gap", "tie_halfwidth", "winner"])


def _binom_var(p: float, n_val: int | None) -> float:
    return p * (1.0 - p) / n_val if n_val else 0.0


def importances(cells: Sequence[Cell], storage: optuna.storages.BaseStorage) -> tuple[pd.DataFrame, list[str]]:
    """fANOVA parameter importances per cell (>= MIN_TRIALS_FOR_IMPORTANCE complete trials),
    averaged per strategy. Returns (frame: param x strategy, notes on cells skipped)."""
    per_strategy: dict[str, list[dict[str, float]]] = {}
    notes: list[str] = []
    for c in cells:
        if len(c.complete()) < MIN_TRIALS_FOR_IMPORTANCE:
            notes.append(f"{c.name}: {len(c.complete())} complete trials (< {MIN_TRIALS_FOR_IMPORTANCE})")
            continue
        try:
            study = optuna.load_study(study_name=c.name, storage=storage, sampler=optuna.samplers.RandomSampler(0))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0))
        except Exception as err:  # noqa: BLE001 - importances are optional; say why and go on
            notes.append(f"{c.name}: not computable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})")
            continue
        if imp:
            per_strategy.setdefault(c.strategy, []).append({k: float(v) for k, v in imp.items()})
    table: dict[str, dict[str, float]] = {}
    for strategy, dicts in per_strategy.items():
        params = sorted({p for d in dicts for p in d})
        table[f"{strategy}"] = {p: float(np.mean([d.get(p, 0.0) for d in dicts])) for p in params}
        table[f"{strategy}_cells"] = {p: float(len(dicts)) for p in params}
    frame = pd.DataFrame(table)
    if not frame.empty:
        order = [s for s in STRATEGIES if s in frame.columns]
        frame = frame.fillna({s: 0.0 for s in order})
        frame = frame.sort_values(order[0] if order else frame.columns[0], ascending=False)
    return frame, notes


# ============================================================================ verdict text


def verdict(crossover: Mapping[str, Any]) -> str:
    """The crossover in one line (what harness-report prints)."""
    status = crossover.get("status")
    metric = crossover.get("metric", "test_acc")
    lo, hi = crossover.get("measured_range") or (None, None)
    n_star, ci = crossover.get("n_star"), crossover.get("ci95")
    ci_text = f" (95% CI {_fmt_n(ci[0])}-{_fmt_n(ci[1])})" if ci else ""
    if status == "crossover":
        text = f"crossover: scratch catches up with fine-tuning at n* = {_fmt_n(n_star)}{ci_text} training examples, inside the measured range {lo}-{hi}"
    elif status == "no_crossover_in_range":
        text = (f"no crossover in the measured range {lo}-{hi}; the fitted curves extrapolate one at "
                f"n* = {_fmt_n(n_star)}{ci_text} (an extrapolation)")
    elif status == "scratch_never_catches_up":
        text = (f"scratch never catches up under the fitted curves (searched to {CROSSOVER_HORIZON:g}x the "
                f"largest measured n, {lo}-{hi} measured)")
    elif status == "scratch_always_better":
        text = f"scratch is already at or ahead of fine-tuning at the smallest measured n ({lo})"
    else:
        text = ("insufficient data for a crossover: need re-run results (`final`) for >= 3 sizes per "
                "strategy, >= 2 of them shared")
    ahead = crossover.get("first_n_scratch_ahead")
    if status != "insufficient_data":
        text += (f"; first measured n where scratch is ahead beyond the noise: {ahead}" if ahead is not None
                 else "; at no measured n is scratch ahead beyond the noise")
    return f"[{metric}] {text}"


def short_verdict(crossover: Mapping[str, Any]) -> str:
    """A few words for a plot title."""
    status, n_star, ci = crossover.get("status"), crossover.get("n_star"), crossover.get("ci95")
    ci_text = f" (95% CI {_fmt_n(ci[0])}-{_fmt_n(ci[1])})" if ci else ""
    return {
        "crossover": f"scratch catches up at n* = {_fmt_n(n_star)}{ci_text}",
        "no_crossover_in_range": f"no crossover in the measured range; extrapolated n* = {_fmt_n(n_star)}{ci_text}",
        "scratch_never_catches_up": "scratch never catches up under the fitted curves",
        "scratch_always_better": "scratch at or ahead of fine-tune from the smallest n",
    }.get(str(status), "insufficient data for a crossover")


# ============================================================================ figures


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


def plot_learning_curves(values: Mapping[str, Mapping[int, list[float]]], crossover: Mapping[str, Any],
                         metric: str, study: str, n_val: Mapping[int, Any]) -> bytes:
    sizes = sorted({n for s in STRATEGIES for n in values.get(s, {})})
    if not sizes:
        return _placeholder("Learning curves", "No cell has re-run results (`final`) yet:\nnothing to plot.")
    fig = _figure(8.5, 5.5)
    _margins(fig, left=0.8, right=0.2, top=0.65, bottom=0.6)
    ax = fig.add_subplot()
    lo_n, hi_n = sizes[0], sizes[-1]
    x_max = hi_n * 2.0
    n_star, ci = crossover.get("n_star"), crossover.get("ci95")
    for v in [n_star] + list(ci or []):
        if v is not None and math.isfinite(v):
            x_max = max(x_max, float(v) * 1.5)
    x_max = min(x_max, hi_n * CROSSOVER_HORIZON)
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
        ax.errorbar(ns, means, yerr=err, fmt="o", color=color, capsize=3, label=f"{label}: mean and 95% CI over seeds")
        if len(ns) >= 2:
            try:
                fit = fit_learning_curve([n for n in ns for _ in curve[n]], [v for n in ns for v in curve[n]])
            except ValueError:
                continue
            inside = np.geomspace(ns[0], ns[-1], 200)
            ax.plot(inside, fit.predict(inside), color=color, lw=1.8, label=f"{label}: fitted {fit.family.replace('_', ' ')}")
            for a, b in ((x_min, ns[0]), (ns[-1], x_max)):
                if b > a:
                    xs = np.geomspace(a, b, 100)
                    ax.plot(xs, fit.predict(xs), color=color, lw=1.5, ls="--")
    ax.plot([], [], color="gray", ls="--", label="extrapolation beyond the measured range")
    if n_star is not None and math.isfinite(n_star):
        ax.axvline(n_star, color="black", lw=1.2, label=f"crossover n* = {_fmt_n(n_star)}")
        if ci:
            left = ci[0] if ci[0] is not None else x_min
            right = ci[1] if ci[1] is not None and math.isfinite(ci[1]) else x_max
            ax.axvspan(max(left, x_min), min(right, x_max), color="gray", alpha=0.18,
                       label=f"n* 95% CI [{_fmt_n(ci[0])}, {_fmt_n(ci[1])}]")
    ax.axvspan(lo_n, hi_n, color="green", alpha=0.05, label=f"measured range {lo_n}-{hi_n}")
    ax.set_xscale("log")
    ax.set_xlim(x_min, x_max)
    _plain_log_ticks(ax.xaxis, sizes)
    ax.set_xlabel("target training examples n_train (log scale)")
    ax.set_ylabel(f"{_metric_label(metric)} (fraction correct)")
    vals = sorted({int(v) for v in n_val.values() if v is not None})
    val_text = f"n_val = {vals[0]}" if len(vals) == 1 else ("n_val varies by cell" if vals else "n_val unknown")
    ax.set_title(f"{study}: best-found {_metric_label(metric)} vs training-set size ({val_text})\n"
                 f"{short_verdict(crossover)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_effective_data(rows: Sequence[Mapping[str, Any]], study: str) -> bytes:
    if not rows:
        return _placeholder("Effective data transferred",
                            "Not computable: needs re-run results of scratch at >= 2 sizes\nand of fine-tune at >= 1.")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    fig = _figure(11, 4.6)
    _margins(fig, left=0.85, right=0.2, top=0.65, bottom=0.6, wspace=0.9, ncols=2)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    n = np.array([r["n_train"] for r in rows], dtype=float)
    dt = np.array([r["effective_data_transferred"] for r in rows], dtype=float)
    mult = np.array([r["multiplier"] for r in rows], dtype=float)
    extra = np.array([bool(r["extrapolated"]) for r in rows])
    finite = np.isfinite(dt)
    for ax, y, name in ((left, dt, "D_T"), (right, mult, "multiplier")):
        ok = np.isfinite(y)
        ax.plot(n[ok], y[ok], color=COLORS["finetune"], lw=1, alpha=0.6)
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
    fig.suptitle(f"{study}: effective data transferred (Hernandez et al. 2021)", fontsize=11)
    return _png(fig)


def plot_winner_map(maps: Sequence[pd.DataFrame], study: str, n_val: Mapping[int, Any]) -> bytes:
    if not maps or all(m.empty for m in maps):
        return _placeholder("Winner map", "No finished trials with FLOPs recorded: nothing to map.")
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
    fig = _figure(max(10.0, 1.1 * len(sizes) * len(maps) + 3), 0.42 * len(budgets) + 2.6)
    _margins(fig, left=1.0, right=1.4, top=0.7, bottom=1.25, wspace=1.1, ncols=len(maps))
    axes = [fig.add_subplot(1, len(maps), i + 1) for i in range(len(maps))]
    for ax, m in zip(axes, maps):
        for _, r in m.iterrows():
            x, y = sizes.index(r["n_train"]), budgets.index(r["budget_flops"])
            if r["winner"] == "n/a":
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="#d9d9d9", edgecolor="white"))
                ax.text(x, y, "n/a", ha="center", va="center", fontsize=7, color="#555555")
                continue
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=cmap(norm(r["gap"])), edgecolor="white",
                                   hatch="///" if r["winner"] == "tie" else None))
            label = "tie" if r["winner"] == "tie" else f"{r['gap']:+.2f}"
            dark = abs(float(norm(r["gap"])) - 0.5) > 0.3  # saturated background: white text
            ax.text(x, y, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_ylim(-0.5, len(budgets) - 0.5)
        ax.set_xticks(range(len(sizes)), [f"{n}\n(val {n_val.get(n, '?')})" for n in sizes], fontsize=8)
        ax.set_yticks(range(len(budgets)), [f"{b:.2g}" for b in budgets], fontsize=8)
        ax.set_xlabel("target training examples n_train (measured cells)")
        ax.set_ylabel("compute budget per cell (FLOPs, log-spaced)")
        with_pt = bool(m["with_pretraining"].iloc[0]) if not m.empty else False
        ax.set_title("fine-tune compute incl. pretraining FLOPs" if with_pt else "tuning compute only (pretraining free)",
                     fontsize=10)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - 1.1 / w, 1.25 / h, 0.18 / w, 1 - 1.95 / h))
    fig.colorbar(sm, cax=cax, label="best val. accuracy: fine-tune minus scratch")
    fig.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch="///", label="tie (within 95% binomial noise)"),
                        Patch(facecolor="#d9d9d9", label="n/a: a strategy had no completed trial yet")],
               loc="lower center", ncols=2, fontsize=8, bbox_to_anchor=(0.5, 0.0))
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
    by = {(c.strategy, c.n_train): c for c in cells}
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
            if strategy == "finetune" and c.pretrain_flops > 0:
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
    fig.legend(handles=handles, loc="lower center", ncols=3, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{study}: best validation accuracy found vs compute spent on tuning (trials in completion order)",
                 fontsize=11)
    return _png(fig)


# ============================================================================ the document


@dataclass
class Document:
    """A small block list rendered to both Markdown and one self-contained HTML page."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def image(self, filename: str, alt: str, png: bytes) -> None:
        self.blocks.append(("img", (filename, alt, png)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, body in self.blocks:
            if kind == "h":
                out += [f"{'#' * body[0]} {body[1]}", ""]
            elif kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in body] + [""]
            elif kind == "table":
                cols = [str(c) for c in body.columns]
                out.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
                out.append("|" + "|".join("---" for _ in cols) + "|")
                for row in body.itertuples(index=False):
                    out.append("| " + " | ".join(_md_cell(_cell_text(v)) for v in row) + " |")
                out.append("")
            elif kind == "img":
                out += [f"![{body[1]}]({body[0]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        parts = [f"<h1>{_inline(self.title)}</h1>"]
        for kind, body in self.blocks:
            if kind == "h":
                parts.append(f"<h{body[0]}>{_inline(body[1])}</h{body[0]}>")
            elif kind == "p":
                parts.append(f"<p>{_inline(body)}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in body) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in body.columns)
                rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell_text(v))}</td>" for v in row) + "</tr>"
                               for row in body.itertuples(index=False))
                parts.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
            elif kind == "img":
                data = base64.b64encode(body[2]).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(body[1], quote=True)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(body[1])} ({html.escape(body[0])})</figcaption></figure>")
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1150px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #ddd}h2{margin-top:1.8em;"
    "border-bottom:1px solid #eee}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}"
    "tr:nth-child(even){background:#fafafa}.scroll{overflow-x:auto}img{max-width:100%;height:auto}"
    "figure{margin:1em 0}figcaption{color:#666;font-size:.85em}code{background:#f3f3f3;padding:0 .2em}"
)


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


# ============================================================================ W&B


def log_to_wandb(wandb_cfg: Any, study: str, out_dir: Path, frames: Mapping[str, pd.DataFrame],
                 crossover: Mapping[str, Any], plots: Mapping[str, Path]) -> str | None:
    """One W&B run (job_type "report", group = study): tables, plots, the report folder as an
    artifact of type "report". Returns the run's local directory."""
    import wandb

    from harness.loggers import wandb_mode

    get = wandb_cfg.get if hasattr(wandb_cfg, "get") else (lambda k, d=None: getattr(wandb_cfg, k, d))
    save_dir = Path(str(get("dir") or "outputs"))
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=str(get("project") or "harness"), entity=get("entity"), mode=wandb_mode(wandb_cfg),
                     dir=str(save_dir), job_type="report", group=study, name=f"report-{study}",
                     config={"study": study, "crossover": dict(crossover)}, reinit="finish_previous")
    try:
        run.log({name: wandb.Table(dataframe=_wandb_safe(frame)) for name, frame in frames.items()})
        run.log({name: wandb.Image(str(path), caption=name) for name, path in plots.items()})
        for key in ("status", "n_star", "p_crossover", "first_n_scratch_ahead"):
            if crossover.get(key) is not None:
                run.summary[f"crossover/{key}"] = crossover[key]
        artifact = wandb.Artifact(name=re.sub(r"[^A-Za-z0-9_.-]", "-", f"report-{study}"), type="report",
                                  metadata={"study": study, "crossover": dict(crossover)})
        artifact.add_dir(str(out_dir))
        run.log_artifact(artifact)
        run_dir = str(Path(run.dir).parent) if getattr(run, "dir", None) else None
    finally:
        wandb.finish()
    return run_dir


def _wandb_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """W&B tables want one type per column: objects become strings, missing values None."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out


# ============================================================================ the report


def build_report(storage_url: str, study: str, out_dir: Path, *, metric: str = "test_acc", n_boot: int = 1000,
                 wandb_cfg: Any = None, sqlite_wal: bool = True) -> dict[str, Any]:
    """Read `study`'s cells from the storage at `storage_url` and write the report into `out_dir`.

    Reads the Optuna storage and nothing else. Returns a summary: the crossover, the one-line
    verdict, the files written, and the W&B run directory when `wandb_cfg` was given.

    Raises:
        ConfigError: bad metric or n_boot, an unreachable or malformed storage, or a study name
            with no cells (the message lists the studies present).
    """
    if metric not in METRICS:
        raise ConfigError(f"report.metric={metric!r} is not one of {', '.join(METRICS)}: pick one")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(f"report.n_boot={n_boot!r} must be a positive integer (bootstrap replicates)")
    storage, shown = _open(storage_url, sqlite_wal)
    cells = load_cells(storage, study, shown)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    curves = {c.name: anytime_curve(c.trials) for c in cells}
    trials = trials_frame(cells)
    table = cells_frame(cells, metric, curves)
    values = final_values(cells, metric)
    n_val = _n_val_by_size(cells)
    estimate: CrossoverEstimate = estimate_crossover(values.get("finetune", {}), values.get("scratch", {}),
                                                     n_boot=n_boot, seed=0, horizon=CROSSOVER_HORIZON)
    crossover = estimate.to_json()
    crossover["metric"] = metric
    distinct_val = sorted({v for v in n_val.values() if v is not None})
    crossover["n_val"] = distinct_val[0] if len(distinct_val) == 1 else None
    crossover["n_val_by_n_train"] = {str(n): v for n, v in sorted(n_val.items())}
    crossover["n_boot"] = n_boot
    crossover["cells_used"] = {s: sorted(values.get(s, {})) for s in STRATEGIES}
    line = verdict(crossover)

    try:
        d_t = effective_data_transferred(values.get("finetune", {}), values.get("scratch", {})) \
            if values.get("finetune") and len(values.get("scratch", {})) >= 2 else []
    except ValueError:
        d_t = []
    budgets = budget_levels(cells, curves)
    maps = [winner_map(cells, curves, budgets, with_pretraining=flag) for flag in (False, True)]
    imp, imp_notes = importances(cells, storage)
    pre = pretraining(cells)

    pngs = {
        "learning_curves": plot_learning_curves(values, crossover, metric, study, n_val),
        "effective_data": plot_effective_data(d_t, study),
        "winner_map": plot_winner_map(maps, study, n_val),
        "anytime": plot_anytime(cells, curves, study),
    }
    files: dict[str, Path] = {}
    for key, png in pngs.items():
        files[key] = out_dir / PLOT_FILES[key]
        files[key].write_bytes(png)
    files["trials"] = out_dir / "trials.csv"
    trials.to_csv(files["trials"], index=False)
    files["cells"] = out_dir / "cells.csv"
    table.to_csv(files["cells"], index=False)
    files["effective_data_csv"] = out_dir / "effective_data.csv"
    pd.DataFrame(d_t).to_csv(files["effective_data_csv"], index=False)
    files["winner_map_csv"] = out_dir / "winner_map.csv"
    pd.concat(maps, ignore_index=True).to_csv(files["winner_map_csv"], index=False)
    files["crossover"] = out_dir / "crossover.json"
    files["crossover"].write_text(json.dumps(crossover, indent=2) + "\n")

    doc = _document(study, shown, cells, table, values, crossover, line, d_t, maps, imp, imp_notes, pre,
                    pngs, metric, n_val)
    files["report_md"] = out_dir / "report.md"
    files["report_md"].write_text(doc.markdown())
    files["report_html"] = out_dir / "report.html"
    files["report_html"].write_text(doc.html())

    summary: dict[str, Any] = {
        "study": study, "storage": shown, "out_dir": str(out_dir), "metric": metric,
        "n_cells": len(cells), "n_trials": int(len(trials)), "crossover": crossover, "verdict": line,
        "files": {k: str(v) for k, v in files.items()}, "report_html": str(files["report_html"]),
        "wandb_run_dir": None,
    }
    if wandb_cfg is not None:
        frames = {"trials": trials, "cells": table,
                  "crossover": pd.DataFrame([{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                              for k, v in crossover.items()}])}
        summary["wandb_run_dir"] = log_to_wandb(wandb_cfg, study, out_dir, frames, crossover,
                                                {k: files[k] for k in PLOT_FILES})
    return summary


def _document(study: str, shown: str, cells: Sequence[Cell], table: pd.DataFrame,
              values: Mapping[str, Mapping[int, list[float]]], crossover: Mapping[str, Any], line: str,
              d_t: Sequence[Mapping[str, Any]], maps: Sequence[pd.DataFrame], imp: pd.DataFrame,
              imp_notes: Sequence[str], pre: Sequence[Mapping[str, Any]], pngs: Mapping[str, bytes],
              metric: str, n_val: Mapping[int, int | None]) -> Document:
    doc = Document(f"Fine-tune vs from scratch: {study}")
    sizes = sorted({c.n_train for c in cells})
    first = cells[0].attrs
    seeds = sorted({len(c.final) for c in cells if c.final})
    doc.para(
        f"Storage `{shown}`, {len(cells)} cells ({', '.join(sorted({c.strategy for c in cells}, key=_strategy_rank))} "
        f"x n_train in {sizes}), model `{first.get('model', '?')}`, data `{first.get('data', '?')}`, "
        f"{'/'.join(map(str, seeds)) or 'no'} re-run seeds per cell. Generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the Optuna storage alone."
    )
    val_sizes = sorted({v for v in n_val.values() if v is not None})
    val_text = (f"{val_sizes[0]} labelled examples" if len(val_sizes) == 1
                else "per cell: " + ", ".join(f"n_train {n}: {v}" for n, v in sorted(n_val.items())))
    bigger = [n for n, v in n_val.items() if v is not None and v > n]
    doc.para(
        f"**Labelled data used for model selection:** every cell's hyperparameters were chosen on a validation set "
        f"of {val_text}, in addition to n_train (Perez et al. 2021). "
        + (f"At n_train in {sorted(bigger)} the validation set is larger than the training set, so the tuned "
           "results there use more labelled data than n_train suggests." if bigger else
           "The validation set is never larger than the training set.")
    )

    doc.heading("Verdict: how much data until scratch catches up")
    doc.para(f"**{line}.**")
    doc.bullets(_verdict_details(crossover))

    doc.heading("Learning curves")
    doc.image(PLOT_FILES["learning_curves"], "Best-found accuracy vs n_train, fitted curves and crossover",
              pngs["learning_curves"])
    doc.table(_performance_table(values, n_val, metric))

    doc.heading("Effective data transferred")
    doc.para("D_E is the n at which the fitted scratch curve reaches fine-tune's mean accuracy at D_F = n_train; "
             "D_T = D_E - D_F (negative: pretraining hurts), multiplier = (D_F + D_T) / D_F. Rows marked "
             "extrapolated rest on the fitted curve beyond scratch's measured sizes.")
    doc.image(PLOT_FILES["effective_data"], "Effective data transferred D_T and the data multiplier",
              pngs["effective_data"])
    if d_t:
        doc.table(pd.DataFrame([{"n_train": r["n_train"], "n_val": n_val.get(int(r["n_train"])),
                                 "fine-tune acc": r["finetune_acc"], "scratch n equivalent D_E": r["scratch_n_equivalent"],
                                 "D_T": r["effective_data_transferred"], "multiplier": r["multiplier"],
                                 "extrapolated": r["extrapolated"]} for r in d_t]))

    doc.heading("Winner map: data size x compute")
    doc.para("Each square compares the best validation accuracy each strategy had found once its cell had spent "
             "that many FLOPs (trials in completion order; pruned and failed trials' FLOPs count). A gap within "
             "1.96 sqrt(se_f^2 + se_s^2), se = sqrt(p(1-p)/n_val), is a tie; n/a means a strategy had not "
             "completed a trial by then. Right panel: fine-tune's compute includes its pretraining.")
    doc.image(PLOT_FILES["winner_map"], "Winner map without and with pretraining FLOPs", pngs["winner_map"])
    doc.bullets(_winner_summary(maps))

    doc.heading("Anytime performance")
    doc.image(PLOT_FILES["anytime"], "Best-so-far validation accuracy vs cumulative FLOPs per cell", pngs["anytime"])

    doc.heading("The comparison, measured")
    doc.table(_comparison_table(table, crossover, d_t, pre, metric))
    doc.table(_per_size_comparison(table, metric))

    doc.heading("Compute")
    doc.para("Per cell: all trials (complete, pruned, failed) of tuning, then the re-runs of the best configuration. "
             "Pretraining is listed once per pretrained checkpoint.")
    doc.table(_compute_table(table, pre))
    doc.bullets(_budget_notes(cells, table))

    doc.heading("Search-space checks")
    edge_rows = []
    for c in cells:
        for f in edge_flags(c.best_params(), c.search_space()):
            edge_rows.append({"cell": c.name, "parameter": f.param, "best value": f.value, "range low": f.low,
                              "range high": f.high, "at edge": f.side, "position in range": f.position})
    if edge_rows:
        doc.para(f"**{len(edge_rows)} best parameter value(s) lie within {EDGE_FRACTION:.0%} of an end of their range** "
                 "(log-aware): the optimum may lie outside the search space; consider widening it.")
        doc.table(pd.DataFrame(edge_rows))
    else:
        doc.para(f"No best parameter lies within {EDGE_FRACTION:.0%} of an end of its range.")
    if not imp.empty:
        doc.para(f"Parameter importances (fANOVA), per cell with >= {MIN_TRIALS_FOR_IMPORTANCE} complete trials, "
                 "averaged per strategy (`*_cells`: how many cells were averaged).")
        doc.table(imp.reset_index(names="parameter"))
    else:
        doc.para("Parameter importances: not computable (too few complete trials).")
    doc.bullets([f"importance skipped for {n}" for n in imp_notes])

    doc.heading("Files")
    doc.bullets(["`trials.csv`: every trial of every cell", "`cells.csv`: one row per cell",
                 "`crossover.json`: the crossover estimate", "`effective_data.csv`, `winner_map.csv`: plotted numbers"]
                + [f"`{f}`" for f in PLOT_FILES.values()])
    return doc


def _verdict_details(c: Mapping[str, Any]) -> list[str]:
    out = [f"Measured range (sizes both strategies re-ran): {c['measured_range'][0]}-{c['measured_range'][1]}."]
    if c.get("n_star") is not None:
        ci = c.get("ci95")
        out.append(f"n* = {_fmt_n(c['n_star'])}, 95% bootstrap interval "
                   f"[{_fmt_n(ci[0]) if ci else '?'}, {_fmt_n(ci[1]) if ci else '?'}] ({c.get('n_boot')} replicates over seeds; "
                   "an open end (inf) means > 2.5% of replicates never cross).")
    if c.get("p_crossover") is not None:
        out.append(f"Share of bootstrap replicates whose curves cross within {CROSSOVER_HORIZON:g}x the largest "
                   f"measured n: {c['p_crossover']:.2f}.")
    ahead = c.get("first_n_scratch_ahead")
    out.append(f"First measured n where scratch's mean is ahead beyond the noise (one-sided Welch t-test, Holm-corrected): "
               f"{ahead if ahead is not None else 'none'}.")
    return out


def _performance_table(values: Mapping[str, Mapping[int, list[float]]], n_val: Mapping[int, Any], metric: str) -> pd.DataFrame:
    rows = []
    for n in sorted({n for s in STRATEGIES for n in values.get(s, {})}):
        row: dict[str, Any] = {"n_train": n, "n_val": n_val.get(n)}
        means = {}
        for s in STRATEGIES:
            v = values.get(s, {}).get(n)
            if v:
                m, lo, hi = mean_ci95(v)
                means[s] = m
                row[f"{LABELS[s]} {metric}"] = f"{m:.4f} [{lo:.4f}, {hi:.4f}] ({len(v)} seeds)"
            else:
                row[f"{LABELS[s]} {metric}"] = "-"
        row["gap (fine-tune - scratch)"] = (f"{means['finetune'] - means['scratch']:+.4f}"
                                            if len(means) == 2 else "-")
        rows.append(row)
    return pd.DataFrame(rows)


def _per_size_comparison(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = []
    for n in sorted(table["n_train"].unique()):
        vals = sorted({int(v) for v in table.loc[table["n_train"] == n, "n_val"].dropna()})
        row: dict[str, Any] = {"n_train": int(n), "n_val": "/".join(map(str, vals)) or None}
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


def _comparison_table(table: pd.DataFrame, crossover: Mapping[str, Any], d_t: Sequence[Mapping[str, Any]],
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

    pre_flops = float(sum(p["flops"] for p in pre))
    pre_wall = float(sum(p["wall_s"] for p in pre))
    total = {s: float(col(s, "flops_total").sum() + col(s, "rerun_flops").sum()) for s in STRATEGIES}
    wall = {s: float(col(s, "wall_s_total").sum() + col(s, "rerun_wall_s").sum()) for s in STRATEGIES}
    mult_text = ("data multiplier (D_F + D_T) / D_F: "
                 + "; ".join(f"n={r['n_train']}: {_fmt_mult(r['multiplier'])}" + (" (extrap.)" if r["extrapolated"] else "")
                             for r in d_t)) if d_t else "data multiplier: not computable"
    n_star = crossover.get("n_star")
    return pd.DataFrame([
        {"aspect": "training time: FLOPs to reach the best (median over n)",
         "fine-tune": median("finetune", "flops_to_best", ".3g"), "from scratch": median("scratch", "flops_to_best", ".3g")},
        {"aspect": "training time: wall s to reach the best (median over n, summed over trials)",
         "fine-tune": median("finetune", "wall_s_to_best", ".1f"), "from scratch": median("scratch", "wall_s_to_best", ".1f")},
        {"aspect": "data requirement",
         "fine-tune": mult_text,
         "from scratch": (f"matches fine-tune at n* = {_fmt_n(n_star)} ({crossover.get('status')})" if n_star is not None
                          else str(crossover.get("status")))},
        {"aspect": f"performance ({metric}, mean over seeds)", "fine-tune": perf("finetune"), "from scratch": perf("scratch")},
        {"aspect": "resources: total FLOPs (tuning + re-runs; fine-tune incl. pretraining)",
         "fine-tune": f"{total['finetune'] + pre_flops:.3g} (pretraining {pre_flops:.3g})", "from scratch": f"{total['scratch']:.3g}"},
        {"aspect": "resources: total wall s (tuning + re-runs; fine-tune incl. pretraining)",
         "fine-tune": f"{wall['finetune'] + pre_wall:.1f} (pretraining {pre_wall:.1f})", "from scratch": f"{wall['scratch']:.1f}"},
    ])


def _compute_table(table: pd.DataFrame, pre: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in table.itertuples(index=False):
        rows.append({"cell": r.study_name, "n_train": r.n_train, "n_val": r.n_val,
                     "trials (complete/pruned/failed)": f"{r.n_trials} ({r.n_complete}/{r.n_pruned}/{r.n_failed})",
                     "tuning FLOPs": r.flops_total, "tuning wall s": r.wall_s_total,
                     "re-run FLOPs": r.rerun_flops, "re-run wall s": r.rerun_wall_s,
                     "pretraining FLOPs": None, "pretraining wall s": None,
                     "total FLOPs": r.flops_total + r.rerun_flops, "total wall s": r.wall_s_total + r.rerun_wall_s})
    for p in pre:
        rows.append({"cell": f"pretraining {str(p['config_hash'])[:12]} (counted once; used by {len(p['cells'])} cells)",
                     "pretraining FLOPs": p["flops"], "pretraining wall s": p["wall_s"],
                     "total FLOPs": p["flops"], "total wall s": p["wall_s"]})
    for s in STRATEGIES:
        part = table[table["strategy"] == s]
        if part.empty:
            continue
        pf = float(sum(p["flops"] for p in pre)) if s == "finetune" else 0.0
        pw = float(sum(p["wall_s"] for p in pre)) if s == "finetune" else 0.0
        rows.append({"cell": f"total {LABELS[s]}" + (" incl. pretraining" if pre and s == "finetune" else ""),
                     "trials (complete/pruned/failed)": f"{int(part.n_trials.sum())} ({int(part.n_complete.sum())}/"
                                                        f"{int(part.n_pruned.sum())}/{int(part.n_failed.sum())})",
                     "tuning FLOPs": float(part.flops_total.sum()), "tuning wall s": float(part.wall_s_total.sum()),
                     "re-run FLOPs": float(part.rerun_flops.sum()), "re-run wall s": float(part.rerun_wall_s.sum()),
                     "pretraining FLOPs": pf if s == "finetune" else None, "pretraining wall s": pw if s == "finetune" else None,
                     "total FLOPs": float(part.flops_total.sum() + part.rerun_flops.sum()) + pf,
                     "total wall s": float(part.wall_s_total.sum() + part.rerun_wall_s.sum()) + pw})
    columns = ["cell", "n_train", "n_val", "trials (complete/pruned/failed)", "tuning FLOPs", "tuning wall s",
               "re-run FLOPs", "re-run wall s", "pretraining FLOPs", "pretraining wall s", "total FLOPs", "total wall s"]
    return pd.DataFrame(rows, columns=columns).astype(object).where(lambda f: f.notna(), None)


def _budget_notes(cells: Sequence[Cell], table: pd.DataFrame) -> list[str]:
    notes = []
    budgets = {s: sorted({json.dumps(c.attrs.get("budget"), sort_keys=True) for c in cells if c.strategy == s})
               for s in STRATEGIES}
    for s in STRATEGIES:
        if budgets[s]:
            notes.append(f"{LABELS[s]} tuning budget per cell: {', '.join(budgets[s])}")
    if budgets["finetune"] and budgets["scratch"] and budgets["finetune"] != budgets["scratch"]:
        notes.append("**The two strategies were tuned with different budgets: the comparison is not at equal effort.**")
    unfinished = int(table["n_unfinished"].sum()) if "n_unfinished" in table else 0
    if unfinished:
        notes.append(f"{unfinished} trial(s) are still RUNNING or WAITING (a worker may be alive or was killed).")
    missing = [c.name for c in cells if not c.final]
    if missing:
        notes.append(f"Cells without re-run results (left out of the crossover): {', '.join(missing)}")
    return notes


_WINNER_TEXT = {"finetune": "fine-tune ahead", "scratch": "scratch ahead", "tie": "tie", "n/a": "n/a"}


def _winner_summary(maps: Sequence[pd.DataFrame]) -> list[str]:
    out = []
    for m in maps:
        if m.empty:
            continue
        top = m[m["budget_flops"] == m["budget_flops"].max()]
        counts = top["winner"].value_counts().to_dict()
        label = "with pretraining FLOPs" if bool(m["with_pretraining"].iloc[0]) else "without pretraining FLOPs"
        out.append(f"At the largest budget ({top['budget_flops'].iloc[0]:.3g} FLOPs), {label}: "
                   + ", ".join(f"{_WINNER_TEXT.get(k, k)} at {v} size(s)" for k, v in sorted(counts.items())))
    return out


# ============================================================================ small helpers


def _num(v: Any, default: float = math.nan) -> float:
    if isinstance(v, bool) or v is None:
        return default
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if not math.isnan(f) else default


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


def _fmt_n(v: Any) -> str:
    if v is None:
        return "inf"
    v = float(v)
    if not math.isfinite(v):
        return "inf"
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def _plain_log_ticks(axis: Any, values: Sequence[int]) -> None:
    """Label a log axis at the measured sizes with plain numbers (16, 32, ...), minor ticks unlabelled."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = sorted(set(values))
    if len(ticks) > 12:
        ticks = ticks[:: math.ceil(len(ticks) / 12)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _fmt_mult(v: float) -> str:
    return f"{v:.2g}x" if math.isfinite(v) else "inf (scratch never reaches it)"


def _metric_label(metric: str) -> str:
    return {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(metric, metric)


def _strategy_rank(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES), strategy)


def _n_val_by_size(cells: Sequence[Cell]) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for c in cells:
        if out.get(c.n_train) is None:
            out[c.n_train] = c.n_val
    return out

"""Anytime curves (best validation accuracy so far against compute) and the winner map read off
them: which strategy leads at each size and compute budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from harness.store.records import TrialRecord
from harness.report.cells import STRATEGIES, Cell
from harness.report.verdict import EQUIVALENT, FINETUNE_BETTER, INCONCLUSIVE, MARGIN, SCRATCH_BETTER, classify

BUDGET_LEVELS = 10  # rows of the winner map
Z95 = 1.96
NOT_MEASURED = "not_measured"  # a winner-map square no trial measured


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


def anytime_curve(trials: Iterable[TrialRecord]) -> Anytime:
    finished = [t for t in trials if t.state.is_finished()]
    far = datetime.max

    def when(t: TrialRecord) -> tuple[datetime, int]:
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
        flops=np.cumsum([t.spent_flops for t in finished]).astype(float),
        wall_s=np.cumsum([t.spent_wall_s for t in finished]).astype(float),
        best=np.array(out, dtype=float),
    )


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
    by = {(c.strategy, c.n_train): c for c in cells if c.tuning == 0}  # tuning run 0: one search per cell
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

"""Where the next measurement pays: the size an adaptive study adds next.

A fixed grid a factor of 2 apart pins n* no closer than between two sizes a factor of 2 apart, and
a finer grid everywhere spends its compute where the verdict is already clear. An adaptive study
measures the coarse grid, adds replicates where an undecided size decides the headline (the top-up,
harness/study/orchestrator.py), then adds one size at a time at the geometric midpoint of the two measured sizes
that bracket n*, until they are within `study.bracket` of each other or its budget is spent.

The policy is a pure function of the verdict (`harness.report.verdict.Comparison`), so the study
and the simulated benchmark (benchmarks/bench_adaptive.py) follow the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from harness.report.verdict import Comparison, predicted_variance


@dataclass(frozen=True)
class Addition:
    """One size's next top-up: `replicates` (every tuning run of both strategies to `target`
    replicates) or `tuning_runs` (both strategies to `target` runs), and why, in words."""

    n: int
    action: str
    target: int
    reason: str


def topup_plan(comparison: Comparison, runs: Mapping[int, int], reps: Mapping[int, int], *, max_tunings: int,
               max_seeds: int, step: int, trial_flops: float, replicate_flops: float, trials_per_run: int) -> list[Addition]:
    """Value of information: for every undecided size that decides the headline and that the caps
    can decide (comparison.needs), the addition that narrows the gap's interval most per FLOP, from
    the size's own measured variances (tuning runs, replicates, test examples): `step` more
    replicates on every tuning run, or one more tuning run (its whole tuning budget plus its
    replicates). `runs` / `reps`: the fewest tuning runs / replicates per run either strategy has."""
    out = []
    for p in comparison.per_n:
        if p.n not in comparison.needs or not p.parts:
            continue
        k, r = runs.get(p.n, 0), reps.get(p.n, 0)
        if k < 1 or r < 1:
            continue  # a cell not re-run yet: the tuning finishes it first
        now = predicted_variance(p.parts, k, r)
        options = []
        if r < max_seeds:
            more = min(max_seeds, r + step)
            gain = now - predicted_variance(p.parts, k, more)
            cost = 2 * k * (more - r) * replicate_flops
            options.append((gain / cost if cost > 0 else 0.0, "replicates", more, gain, cost))
        if k < max_tunings:
            gain = now - predicted_variance(p.parts, k + 1, r)
            cost = 2 * (trials_per_run * trial_flops + r * replicate_flops)
            options.append((gain / cost if cost > 0 else 0.0, "tuning_runs", k + 1, gain, cost))
        if not options:
            continue
        _, action, target, gain, cost = max(options, key=lambda o: o[0])
        what = f"{target} replicates per tuning run" if action == "replicates" else f"{target} tuning runs"
        out.append(Addition(p.n, action, target,
                            f"n = {p.n}: {what} (sd of the gap {math.sqrt(now):.4f} -> "
                            f"{math.sqrt(max(0.0, now - gain)):.4f} for {cost:.2g} FLOPs; {p.decide.text})"))
    return out


def topup_targets(needs: Sequence[int], counts: Mapping[tuple[str, int], int], strategies: Sequence[str],
                  cap: int, step: int) -> list[tuple[str, int, int]]:
    """(strategy, n, replicates wanted) for the next top-up round: every cell of an undecided size
    that decides the headline gets `step` more replicates, up to `cap`; cells not re-run yet wait."""
    return [(s, n, min(cap, counts[(s, n)] + step)) for n in needs for s in strategies
            if 0 < counts.get((s, n), 0) < cap]


@dataclass(frozen=True)
class Refinement:
    """What to measure next: `size` (None: nothing), between `bracket`, and why, in words."""

    size: int | None
    reason: str
    bracket: tuple[int, int] | None = None


def n_star_bracket(comparison: Comparison) -> tuple[int, int] | None:
    """The two neighbouring measured sizes with n* between them (lower < n* <= upper); None when n*
    is unknown, at or below the smallest size, or beyond the largest."""
    n_star = comparison.n_star
    sizes = sorted(p.n for p in comparison.per_n)
    if n_star is None or not math.isfinite(n_star) or len(sizes) < 2:
        return None
    for lower, upper in zip(sizes, sizes[1:]):
        if lower < n_star <= upper:
            return lower, upper
    return None


def next_size(comparison: Comparison, ratio: float) -> Refinement:
    """The geometric midpoint of the measured sizes bracketing n*, while they are more than `ratio`
    apart; only where n* has a finite interval: a size added to bracket a point whose interval is
    open above pins nothing down."""
    if comparison.n_star is not None and math.isfinite(comparison.n_star) and comparison.ci95 is not None \
            and not math.isfinite(comparison.ci95[1]):
        return Refinement(None, f"n* = {comparison.n_star:.0f} has an open interval ({comparison.n_star_text}): "
                                "no finite decision point to bracket")
    if comparison.n_star is None or not math.isfinite(comparison.n_star):
        return Refinement(None, "no n* to bracket (" + ("n* lies beyond the search horizon"
                                                        if comparison.n_star is not None else
                                                        f"the verdict is {comparison.status}") + ")")
    bracket = n_star_bracket(comparison)
    if bracket is None:
        low, high = comparison.measured_range or (0, 0)
        where = "at or below the smallest" if comparison.n_star <= low else "beyond the largest"
        return Refinement(None, f"n* = {comparison.n_star:.0f} lies {where} measured size ({low}-{high}): "
                                "no measured pair brackets it")
    lower, upper = bracket
    if upper / lower <= ratio:
        return Refinement(None, f"n* = {comparison.n_star:.0f} is bracketed by n = {lower} and {upper} "
                                f"({upper / lower:.2f}x <= study.bracket {ratio:g})", bracket)
    mid = int(round(math.sqrt(lower * upper)))
    if mid <= lower or mid >= upper:
        return Refinement(None, f"no whole size lies between n = {lower} and {upper}", bracket)
    return Refinement(mid, f"n* = {comparison.n_star:.0f} lies between n = {lower} and {upper} "
                           f"({upper / lower:.2f}x > study.bracket {ratio:g}): adding n = {mid}", bracket)

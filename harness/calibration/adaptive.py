"""An adaptive study against a fixed grid, on simulated studies with known truth, in compute units.

Both procedures measure a `Lab` (harness/calibration/simulate.py) and decide with the report's own
statistics (`verdict.compare`); the adaptive one follows harness/study/orchestrator.py's rule: the grid at
`seeds` replicates, the top-up (`adaptive.topup_targets`, the rule harness-study uses), then
`harness.study.adaptive.next_size` with the top-up again after each added size, within `max_cells`.

Compute is counted in training runs: tuning a cell costs `trials` runs (its budget), a replicate
one more. Precision is what the issue's user asks for: n* bracketed (the measured sizes either side
of the estimated n* within `bracket`, holding the true n*) and every per-size verdict decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.study.adaptive import n_star_bracket, next_size, topup_targets
from harness.calibration.simulate import Lab, Scenario, truth
from harness.report.verdict import INCONCLUSIVE, Comparison, compare

STRATEGIES = ("finetune", "scratch")


@dataclass(frozen=True)
class Policy:
    trials: int = 10       # tuning runs per cell (tune.n_trials)
    seeds: int = 3
    max_seeds: int = 10
    topup_step: int = 2
    bracket: float = 1.5
    max_cells: int = 4     # cells the refinement may add
    n_boot: int = 300


@dataclass(frozen=True)
class Outcome:
    runs: int              # training runs spent: tuning and replicates
    cells: int
    bracket: tuple[int, int] | None
    bracketed: bool        # the bracket is within the factor and holds the true n*
    decided: float         # share of per-size verdicts decided
    status: str


def _verdict(lab: Lab, s: Scenario, p: Policy, seed: int) -> Comparison:
    return compare(lab.replicates("finetune"), lab.replicates("scratch"), margin=s.margin, n_boot=p.n_boot, seed=seed)


def _top_up(lab: Lab, s: Scenario, p: Policy, seed: int) -> tuple[Comparison, int]:
    runs = 0
    while True:
        c = _verdict(lab, s, p, seed)
        counts = {(st, n): lab.count(st, n) for st in STRATEGIES for n in c.needs}
        jobs = topup_targets(c.needs, counts, STRATEGIES, p.max_seeds, p.topup_step)
        if not jobs:
            return c, runs
        for st, n, target in jobs:
            lab.measure(st, n, target - counts[(st, n)])
            runs += target - counts[(st, n)]


def _outcome(c: Comparison, s: Scenario, p: Policy, runs: int, cells: int) -> Outcome:
    true_n_star = truth(s).n_star
    b = n_star_bracket(c)
    held = b is not None and b[1] / b[0] <= p.bracket * (1 + 1e-9) and b[0] < true_n_star <= b[1]
    decided = sum(x.verdict != INCONCLUSIVE for x in c.per_n) / max(1, len(c.per_n))
    return Outcome(runs, cells, b, held, decided, c.status)


def adaptive(s: Scenario, p: Policy, rng: np.random.Generator, seed: int = 0) -> Outcome:
    lab = Lab(s, rng)
    runs = 0
    for n in s.sizes:
        for st in STRATEGIES:
            lab.measure(st, n, p.seeds)
            runs += p.trials + p.seeds
    c, extra = _top_up(lab, s, p, seed)
    runs, added = runs + extra, 0
    while True:
        plan = next_size(c, p.bracket)
        if plan.size is None or added + len(STRATEGIES) > p.max_cells:
            break
        for st in STRATEGIES:
            lab.measure(st, plan.size, p.seeds)
            runs += p.trials + p.seeds
        added += len(STRATEGIES)
        c, extra = _top_up(lab, s, p, seed)
        runs += extra
    return _outcome(c, s, p, runs, len(s.sizes) * len(STRATEGIES) + added)


def fine_grid(sizes: tuple[int, ...], ratio: float) -> tuple[int, ...]:
    """Geometric sizes over the same range, neighbours at most `ratio` apart: what a fixed grid
    needs to bracket an n* it cannot know in advance."""
    low, high = sizes[0], sizes[-1]
    steps = math.ceil(math.log(high / low) / math.log(ratio) - 1e-9)
    return tuple(sorted({int(round(low * (high / low) ** (k / steps))) for k in range(steps + 1)}))


def fixed(s: Scenario, p: Policy, replicates: int, rng: np.random.Generator, seed: int = 0) -> Outcome:
    lab = Lab(s, rng)
    sizes = fine_grid(s.sizes, p.bracket)
    for n in sizes:
        for st in STRATEGIES:
            lab.measure(st, n, replicates)
    c = _verdict(lab, s, p, seed)
    return _outcome(c, s, p, len(sizes) * len(STRATEGIES) * (p.trials + replicates), len(sizes) * len(STRATEGIES))

"""Simulated studies whose truth is known, to measure how often the verdict is right.

A simulated study has, per strategy and size, replicates whose population accuracy scatters around
a true learning curve (sd shrinking as 1/sqrt(n), like re-runs on digits), each evaluated on one
shared test split of T examples drawn from a population. Whether a model gets an example right
depends on the example's difficulty, shared by every model, and on the model: latent
rho * difficulty + sqrt(1 - rho^2) * own noise below the probit of its accuracy. So test accuracies
carry binomial test noise, two models' errors overlap as real ones do, and the population accuracy
of a model is exactly its drawn accuracy.

`calibrate` runs the report's statistics (`verdict.compare`) on many such studies and counts what
the figures that matter are: how often each status is declared, how often a winner is named
where there is none, how often a per-size verdict contradicts the true gap, and how often the n*
interval covers the true n*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import special

from harness.learning_curves import power_law
from harness.report.verdict import (
    EQUIVALENT,
    FINETUNE_BETTER,
    GRID_POINTS,
    HORIZON,
    MARGIN,
    SCRATCH_BETTER,
    WINNER_STATUSES,
    Replicates,
    compare,
    headline,
    stays_below,
)

Curve = tuple[float, float, float]  # acc(n) = a - b * n**-c
DIGITS_SIZES = (10, 20, 40, 80, 160, 320)


@dataclass(frozen=True)
class Scenario:
    name: str
    finetune: Curve
    scratch: Curve
    sizes: tuple[int, ...] = DIGITS_SIZES
    replicates: int = 3
    sd16: float = 0.04    # sd of a replicate's population accuracy at n = 16 ...
    sd_power: float = 0.5  # ... scaling as (16 / n) ** sd_power
    finetune_sd_scale: float = 1.0  # fine-tune's sd relative to scratch's
    spike_at: int | None = None     # a size whose sd is 4x the trend (noise that breaks the trend)
    n_test: int = 250
    rho: float = 0.9      # how much models' errors share the examples' difficulty
    margin: float = MARGIN


SCRATCH = (0.975, 2.0, 1.2)
SCENARIOS: dict[str, Scenario] = {
    "null": Scenario("null", SCRATCH, SCRATCH),
    "catch_up": Scenario("catch_up", (0.975, 0.2, 1.2), SCRATCH),
    "crossover": Scenario("crossover", (0.96, 0.2, 1.2), (0.99, 2.0, 1.2)),
    "finetune_ahead": Scenario("finetune_ahead", (0.99, 0.3, 1.0), (0.93, 2.0, 1.0)),
    "negative_transfer": Scenario("negative_transfer", (0.92, 2.0, 1.0), (0.985, 0.5, 1.0)),
    "null_noise_spike": Scenario("null_noise_spike", SCRATCH, SCRATCH, spike_at=40),
    "catch_up_uneven_noise": Scenario("catch_up_uneven_noise", (0.975, 0.2, 1.2), SCRATCH, finetune_sd_scale=0.25,
                                      sd_power=0.0, sd16=0.03),
    "null_low_noise": Scenario("null_low_noise", SCRATCH, SCRATCH, replicates=10, sd16=0.003, n_test=1000, rho=0.995),
}


@dataclass(frozen=True)
class Truth:
    gaps: dict[int, float]
    verdicts: dict[int, str]
    status: str
    n_star: float


def truth(s: Scenario, horizon: float = HORIZON) -> Truth:
    """What a perfect measurement would say: true gaps, their verdicts, the status, the true n*."""
    sizes = np.array(s.sizes, dtype=float)
    gaps = power_law(s.finetune, sizes) - power_law(s.scratch, sizes)
    verdicts = {int(n): (FINETUNE_BETTER if g > s.margin else SCRATCH_BETTER if g < -s.margin else EQUIVALENT)
                for n, g in zip(s.sizes, gaps)}
    grid = np.linspace(math.log(s.sizes[0]), math.log(s.sizes[-1] * horizon), GRID_POINTS)
    curve_gap = power_law(s.finetune, np.exp(grid)) - power_law(s.scratch, np.exp(grid))
    n_star = float(stays_below(curve_gap[None, :], s.margin, grid)[0])
    return Truth({int(n): float(g) for n, g in zip(s.sizes, gaps)}, verdicts,
                 headline([verdicts[n] for n in s.sizes])[0], n_star)


class Lab:
    """A simulated study measured a cell at a time: replicates of any strategy at any size, on one
    shared test split, added as an adaptive study would ask for them."""

    def __init__(self, s: Scenario, rng: np.random.Generator):
        self.s, self.rng = s, rng
        self.difficulty = rng.standard_normal(s.n_test)
        self.correct: dict[tuple[str, int], np.ndarray] = {}

    def measure(self, strategy: str, n: int, replicates: int) -> None:
        """Add `replicates` re-runs to the cell (strategy is "finetune" or "scratch")."""
        s = self.s
        curve, scale = (s.finetune, s.finetune_sd_scale) if strategy == "finetune" else (s.scratch, 1.0)
        sd = scale * s.sd16 * (16.0 / n) ** s.sd_power * (4.0 if n == s.spike_at else 1.0)
        p = np.clip(power_law(curve, n) + sd * self.rng.standard_normal(replicates), 1e-4, 1 - 1e-4)
        own = math.sqrt(1.0 - s.rho ** 2)
        latent = s.rho * self.difficulty[None, :] + own * self.rng.standard_normal((replicates, s.n_test))
        new = latent < special.ndtri(p)[:, None]
        old = self.correct.get((strategy, int(n)))
        self.correct[(strategy, int(n))] = new if old is None else np.concatenate([old, new])

    def count(self, strategy: str, n: int) -> int:
        c = self.correct.get((strategy, int(n)))
        return 0 if c is None else len(c)

    def replicates(self, strategy: str) -> dict[int, Replicates]:
        return {n: Replicates(c.mean(1), c, "simulated")
                for (s, n), c in sorted(self.correct.items()) if s == strategy}


def simulate_study(s: Scenario, rng: np.random.Generator) -> tuple[dict[int, Replicates], dict[int, Replicates]]:
    """One study's replicates for both strategies, on one shared test split."""
    lab = Lab(s, rng)
    for strategy in ("finetune", "scratch"):
        for n in s.sizes:
            lab.measure(strategy, n, s.replicates)
    return lab.replicates("finetune"), lab.replicates("scratch")


@dataclass
class Calibration:
    scenario: str
    studies: int
    truth: Truth
    status_counts: dict[str, int] = field(default_factory=dict)
    winner_named: int = 0          # a winner status where the truth is a different status
    wrong_decided: int = 0         # any decided status that is not the true one
    size_verdicts: int = 0
    size_false: int = 0            # a per-size claim the true gap contradicts
    n_star_reported: int = 0
    n_star_covered: int = 0

    def rate(self, status: str) -> float:
        return self.status_counts.get(status, 0) / max(1, self.studies)

    @property
    def false_winner_rate(self) -> float:
        return self.winner_named / max(1, self.studies)

    @property
    def coverage(self) -> float:
        return self.n_star_covered / self.n_star_reported if self.n_star_reported else math.nan

    def to_row(self) -> dict:
        return {"scenario": self.scenario, "studies": self.studies, "true status": self.truth.status,
                "true n*": self.truth.n_star,
                **{f"{k}": self.rate(k) for k in sorted(self.status_counts)},
                "false winner": self.false_winner_rate, "wrong decided status": self.wrong_decided / max(1, self.studies),
                "per-size false claims": self.size_false / max(1, self.size_verdicts),
                "n* coverage": self.coverage}


def _claim_is_false(verdict: str, gap: float, margin: float) -> bool:
    if verdict == FINETUNE_BETTER:
        return gap <= margin
    if verdict == SCRATCH_BETTER:
        return gap >= -margin
    if verdict == EQUIVALENT:
        return abs(gap) > margin
    return False


def calibrate(s: Scenario, studies: int = 200, n_boot: int = 300, seed: int = 0,
              horizon: float = HORIZON) -> Calibration:
    t = truth(s, horizon)
    rng = np.random.default_rng(seed)
    out = Calibration(s.name, studies, t)
    inside = t.status in ("catch_up", "crossover")  # the truth crosses inside the measured range
    for k in range(studies):
        ft, sc = simulate_study(s, rng)
        c = compare(ft, sc, margin=s.margin, n_boot=n_boot, seed=seed * 100_003 + k, horizon=horizon)
        out.status_counts[c.status] = out.status_counts.get(c.status, 0) + 1
        if c.status != t.status and c.status in WINNER_STATUSES:
            out.winner_named += 1
        if c.status != t.status and c.status not in ("inconclusive", "insufficient_data"):
            out.wrong_decided += 1
        for p in c.per_n:
            out.size_verdicts += 1
            out.size_false += _claim_is_false(p.verdict, t.gaps[p.n], s.margin)
        if inside and c.ci95 is not None:
            out.n_star_reported += 1
            lo, hi = c.ci95
            out.n_star_covered += bool(lo <= t.n_star <= hi)
    return out


def calibration_table(scenarios: Mapping[str, Scenario] = SCENARIOS, studies: int = 200, n_boot: int = 300,
                      seed: int = 0) -> list[Calibration]:
    return [calibrate(s, studies, n_boot, seed + i) for i, s in enumerate(scenarios.values())]

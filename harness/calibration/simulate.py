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
from typing import Sequence

import numpy as np
from scipy import special

from harness.report.learning_curves import power_law
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
NINE_SIZES = (10, 17, 28, 48, 80, 135, 226, 381, 640)  # 10 * 2**(0.75 k), k = 0..8


@dataclass(frozen=True)
class Sigmoid:
    """Accuracy as a logistic in log n: lo + (hi - lo) / (1 + exp(-(log n - m) / s))."""
    lo: float
    hi: float
    m: float
    s: float

    def __call__(self, n):
        x = np.log(np.asarray(n, dtype=float))
        return self.lo + (self.hi - self.lo) / (1.0 + np.exp(-(x - self.m) / self.s))


@dataclass(frozen=True)
class TwoPhase:
    """Flat at `floor` up to n0, then rising as a power law towards `top`:
    top - (top - floor) * (n / n0) ** -c beyond n0 (a learner that starts late)."""
    floor: float
    top: float
    n0: float
    c: float

    def __call__(self, n):
        x = np.maximum(np.asarray(n, dtype=float) / self.n0, 1.0)
        return self.top - (self.top - self.floor) * x ** -self.c


def curve_fn(curve, family: str = "power"):
    """A callable n -> true accuracy: a 3-tuple is the power law a - b n^-c, a 4-tuple under family
    "sigmoid" a Sigmoid, and a callable (Sigmoid, TwoPhase, ...) is itself."""
    if callable(curve):
        return curve
    if family == "sigmoid":
        return Sigmoid(*curve)
    if family == "two_phase":
        return TwoPhase(*curve)
    return lambda n, p=tuple(curve): power_law(p, np.asarray(n, dtype=float))


@dataclass(frozen=True)
class Scenario:
    name: str
    finetune: object  # a power-law Curve tuple, or a callable n -> accuracy (Sigmoid, TwoPhase)
    scratch: object
    sizes: tuple[int, ...] = DIGITS_SIZES
    replicates: int = 3    # re-runs per tuning run
    sd16: float = 0.04    # sd of a replicate's population accuracy at n = 16 ...
    sd_power: float = 0.5  # ... scaling as (16 / n) ** sd_power
    finetune_sd_scale: float = 1.0  # fine-tune's sd relative to scratch's
    spike_at: int | None = None     # a size whose sd is 4x the trend (noise that breaks the trend)
    n_test: int = 250
    rho: float = 0.9      # how much models' errors share the examples' difficulty
    margin: float = MARGIN
    tunings: int = 1      # K tuning runs per cell
    tune_sd: float = 0.0      # sd of a tuning run's offset, accuracy units ...
    tune_sd_rel: float = 0.0  # ... plus this times the replicate sd at that size (the two add in variance)
    family: str = "power"     # "power", "sigmoid" or "two_phase" (the true curves' family)
    fail_rate: float = 0.0    # share of re-runs that fail and end at chance
    chance: float = 0.1
    noise_df: float | None = None  # Student t noise with this df (scaled to the same sd); None: normal


SCRATCH = (0.975, 2.0, 1.2)
AT_MARGIN = (SCRATCH[0] + MARGIN, SCRATCH[1], SCRATCH[2])  # fine-tune exactly `margin` ahead everywhere
_NINE = dict(sizes=NINE_SIZES, replicates=3)
_K3 = dict(_NINE, tunings=3)
# fine-tune a sigmoid that saturates early, scratch a sigmoid catching up around n = 150
SIGMOID_FT = Sigmoid(0.60, 0.975, math.log(12.0), 0.6)
SIGMOID_SC = Sigmoid(0.30, 0.985, math.log(60.0), 0.55)
# scratch flat at 0.60 up to n = 200, then improving: the true n* (about 3,850) lies beyond the largest size (640)
TWO_PHASE_FT = Sigmoid(0.70, 0.975, math.log(8.0), 0.6)
TWO_PHASE_SC = TwoPhase(0.60, 0.985, 200.0, 1.0)

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
    # issue 21: tuning runs (an offset per run shared by its re-runs), nine sizes
    "null_tune_abs_k3": Scenario("null_tune_abs_k3", SCRATCH, SCRATCH, tune_sd=0.005, **_K3),
    "null_tune_rel_k3": Scenario("null_tune_rel_k3", SCRATCH, SCRATCH, tune_sd_rel=0.5, **_K3),
    "margin_tune_abs_k3": Scenario("margin_tune_abs_k3", AT_MARGIN, SCRATCH, tune_sd=0.005, **_K3),
    "margin_tune_rel_k3": Scenario("margin_tune_rel_k3", AT_MARGIN, SCRATCH, tune_sd_rel=0.5, **_K3),
    "null_tune_abs_k1": Scenario("null_tune_abs_k1", SCRATCH, SCRATCH, tune_sd=0.005, **_NINE),
    "null_tune_rel_k1": Scenario("null_tune_rel_k1", SCRATCH, SCRATCH, tune_sd_rel=0.5, **_NINE),
    "margin_tune_abs_k1": Scenario("margin_tune_abs_k1", AT_MARGIN, SCRATCH, tune_sd=0.005, **_NINE),
    "margin_tune_rel_k1": Scenario("margin_tune_rel_k1", AT_MARGIN, SCRATCH, tune_sd_rel=0.5, **_NINE),
    # curves outside the fitted power law
    "sigmoid_catch_up_k3": Scenario("sigmoid_catch_up_k3", SIGMOID_FT, SIGMOID_SC, family="sigmoid",
                                    tune_sd_rel=0.5, **_K3),
    "two_phase_k3": Scenario("two_phase_k3", TWO_PHASE_FT, TWO_PHASE_SC, family="two_phase", tune_sd_rel=0.5, **_K3),
    # failed re-runs at chance, heavy tails
    "null_failures_k3": Scenario("null_failures_k3", SCRATCH, SCRATCH, tune_sd_rel=0.5, fail_rate=0.05, **_K3),
    "null_heavy_tails_k3": Scenario("null_heavy_tails_k3", SCRATCH, SCRATCH, tune_sd_rel=0.5, noise_df=3.0, **_K3),
    "catch_up_heavy_tails_k3": Scenario("catch_up_heavy_tails_k3", (0.975, 0.2, 1.2), SCRATCH, tune_sd_rel=0.5,
                                        noise_df=3.0, **_K3),
}
TUNE_NOISE_SCENARIOS = tuple(n for n in SCENARIOS if "_tune_" in n)


@dataclass(frozen=True)
class Truth:
    gaps: dict[int, float]
    verdicts: dict[int, str]
    status: str
    n_star: float

    def n_star_scored(self, sizes: Sequence[int]) -> bool:
        """Whether the truth has an n* to cover: the true gap exceeds the margin somewhere and stops
        doing so within the horizon (inside the measured range or beyond it)."""
        return bool(sizes[0] * (1 + 1e-9) < self.n_star < math.inf)


def truth(s: Scenario, horizon: float = HORIZON) -> Truth:
    """What a perfect measurement would say: true gaps, their verdicts, the status, the true n*
    (searched on the estimator's log grid, up to `horizon` x the largest size)."""
    ft, sc = curve_fn(s.finetune, s.family), curve_fn(s.scratch, s.family)
    sizes = np.array(s.sizes, dtype=float)
    gaps = np.round(np.asarray(ft(sizes)) - np.asarray(sc(sizes)), 12)  # a gap at the margin is at it
    verdicts = {int(n): (FINETUNE_BETTER if g > s.margin else SCRATCH_BETTER if g < -s.margin else EQUIVALENT)
                for n, g in zip(s.sizes, gaps)}
    grid = np.linspace(math.log(s.sizes[0]), math.log(s.sizes[-1] * horizon), GRID_POINTS)
    curve_gap = np.round(np.asarray(ft(np.exp(grid))) - np.asarray(sc(np.exp(grid))), 12)
    n_star = float(stays_below(curve_gap[None, :], s.margin, grid)[0])
    return Truth({int(n): float(g) for n, g in zip(s.sizes, gaps)}, verdicts,
                 headline([verdicts[n] for n in s.sizes])[0], n_star)


class Lab:
    """A simulated study measured a cell at a time: tuning runs and their re-runs of any strategy at
    any size, on one shared test split, added as an adaptive study would ask for them."""

    def __init__(self, s: Scenario, rng: np.random.Generator):
        self.s, self.rng = s, rng
        self.difficulty = rng.standard_normal(s.n_test)
        self.correct: dict[tuple[str, int], np.ndarray] = {}
        self.runs: dict[tuple[str, int], np.ndarray] = {}
        self.offsets: dict[tuple[str, int, int], float] = {}
        self._curves = {"finetune": curve_fn(s.finetune, s.family), "scratch": curve_fn(s.scratch, s.family)}

    def _noise(self, size) -> np.ndarray:
        df = self.s.noise_df
        if df is None:
            return self.rng.standard_normal(size)
        return self.rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)  # unit variance (df > 2)

    def replicate_sd(self, strategy: str, n: int) -> float:
        s = self.s
        scale = s.finetune_sd_scale if strategy == "finetune" else 1.0
        return scale * s.sd16 * (16.0 / n) ** s.sd_power * (4.0 if n == s.spike_at else 1.0)

    def tune_sd(self, strategy: str, n: int) -> float:
        s = self.s
        return math.sqrt(s.tune_sd ** 2 + (s.tune_sd_rel * self.replicate_sd(strategy, n)) ** 2)

    def offset(self, strategy: str, n: int, run: int) -> float:
        """The tuning run's offset from the curve, drawn once and shared by all its re-runs."""
        key = (strategy, int(n), int(run))
        if key not in self.offsets:
            sd = self.tune_sd(strategy, n)
            self.offsets[key] = float(sd * self._noise(1)[0]) if sd > 0 else 0.0
        return self.offsets[key]

    def measure(self, strategy: str, n: int, replicates: int, run: int = 0) -> None:
        """Add `replicates` re-runs of tuning run `run` to the cell (strategy "finetune" or "scratch")."""
        s = self.s
        if replicates <= 0:
            return
        sd = self.replicate_sd(strategy, n)
        mean = float(self._curves[strategy](n)) + self.offset(strategy, n, run)
        p = np.clip(mean + sd * self._noise(replicates), 1e-4, 1 - 1e-4)
        own = math.sqrt(1.0 - s.rho ** 2)
        latent = s.rho * self.difficulty[None, :] + own * self.rng.standard_normal((replicates, s.n_test))
        new = latent < special.ndtri(p)[:, None]
        if s.fail_rate > 0:
            failed = self.rng.random(replicates) < s.fail_rate
            if failed.any():  # a collapsed re-run: right on each example with prob chance, whatever its difficulty
                new[failed] = self.rng.random((int(failed.sum()), s.n_test)) < s.chance
        key = (strategy, int(n))
        old = self.correct.get(key)
        self.correct[key] = new if old is None else np.concatenate([old, new])
        ids = np.full(replicates, int(run))
        self.runs[key] = ids if old is None else np.concatenate([self.runs[key], ids])

    def measure_cell(self, strategy: str, n: int, replicates: int | None = None, tunings: int | None = None) -> None:
        """Add `tunings` new tuning runs (default the scenario's K) of `replicates` re-runs each."""
        start = self.n_runs(strategy, n)
        for k in range(self.s.tunings if tunings is None else tunings):
            self.measure(strategy, n, self.s.replicates if replicates is None else replicates, run=start + k)

    def count(self, strategy: str, n: int) -> int:
        c = self.correct.get((strategy, int(n)))
        return 0 if c is None else len(c)

    def n_runs(self, strategy: str, n: int) -> int:
        r = self.runs.get((strategy, int(n)))
        return 0 if r is None else int(np.unique(r).size)

    def replicates(self, strategy: str) -> dict[int, Replicates]:
        return {n: Replicates.of(c.mean(1), c, "simulated", runs=self.runs[(s, n)])
                for (s, n), c in sorted(self.correct.items()) if s == strategy}


def simulate_study(s: Scenario, rng: np.random.Generator) -> tuple[dict[int, Replicates], dict[int, Replicates]]:
    """One study's replicates for both strategies (K tuning runs x R re-runs a cell), on one shared test split."""
    lab = Lab(s, rng)
    for strategy in ("finetune", "scratch"):
        for n in s.sizes:
            lab.measure_cell(strategy, n)
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
    size_decided: int = 0          # per-size verdicts that decide (not inconclusive)
    n_star_reported: int = 0       # studies (with a scored true n*) whose report gives an n* interval
    n_star_covered: int = 0
    n_star_open: int = 0           # ... of which the interval is open above ("n* > lo")
    n_star_not_estimable: int = 0  # studies whose report gives no n* interval
    n_star_scored: int = 0         # studies with a true n* to cover
    ci_covered: dict[int, int] = field(default_factory=dict)   # per size: pointwise ci95 holds the true gap
    ci_seen: dict[int, int] = field(default_factory=dict)
    band_all_covered: int = 0      # studies whose band95 holds the true gap at every size at once
    family_false: int = 0          # studies with >= 1 false per-size claim
    right_headline: int = 0
    between: dict[str, int] = field(default_factory=dict)  # how the report got the between-run variance

    def rate(self, status: str) -> float:
        return self.status_counts.get(status, 0) / max(1, self.studies)

    @property
    def false_winner_rate(self) -> float:
        return self.winner_named / max(1, self.studies)

    @property
    def coverage(self) -> float:
        """n* coverage among studies that report an interval."""
        return self.n_star_covered / self.n_star_reported if self.n_star_reported else math.nan

    @property
    def n_star_ok(self) -> float:
        """Share of studies with a true n* whose interval holds it or whose report says not estimable."""
        return ((self.n_star_covered + self.n_star_not_estimable) / self.n_star_scored
                if self.n_star_scored else math.nan)

    @property
    def size_coverage(self) -> dict[int, float]:
        return {n: self.ci_covered.get(n, 0) / k for n, k in sorted(self.ci_seen.items()) if k}

    @property
    def min_size_coverage(self) -> tuple[int | None, float]:
        cov = self.size_coverage
        if not cov:
            return None, math.nan
        n = min(cov, key=lambda m: (cov[m], m))
        return n, cov[n]

    @property
    def band_coverage(self) -> float:
        return self.band_all_covered / max(1, self.studies)

    @property
    def familywise_false(self) -> float:
        return self.family_false / max(1, self.studies)

    @property
    def false_among_decided(self) -> float:
        return self.size_false / self.size_decided if self.size_decided else 0.0

    @property
    def power(self) -> float:
        return self.right_headline / max(1, self.studies)

    def to_row(self) -> dict:
        n_min, cov_min = self.min_size_coverage
        return {"scenario": self.scenario, "studies": self.studies, "true status": self.truth.status,
                "true n*": self.truth.n_star,
                **{f"{k}": self.rate(k) for k in sorted(self.status_counts)},
                "false winner": self.false_winner_rate, "wrong decided status": self.wrong_decided / max(1, self.studies),
                "per-size false claims": self.size_false / max(1, self.size_verdicts),
                "n* coverage": self.coverage,
                "min per-size coverage": cov_min, "at n": n_min, "band joint coverage": self.band_coverage,
                "family-wise false claims": self.familywise_false, "false among decided": self.false_among_decided,
                "n* covered or not estimable": self.n_star_ok, "n* not estimable": self.n_star_not_estimable,
                "power": self.power, "between runs": dict(self.between)}


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
    scored = t.n_star_scored(s.sizes)
    for k in range(studies):
        ft, sc = simulate_study(s, rng)
        c = compare(ft, sc, margin=s.margin, n_boot=n_boot, seed=seed * 100_003 + k, horizon=horizon)
        out.status_counts[c.status] = out.status_counts.get(c.status, 0) + 1
        out.between[c.between_runs] = out.between.get(c.between_runs, 0) + 1
        out.right_headline += c.status == t.status
        if c.status != t.status and c.status in WINNER_STATUSES:
            out.winner_named += 1
        if c.status != t.status and c.status not in ("inconclusive", "insufficient_data"):
            out.wrong_decided += 1
        any_false, band_ok = False, True
        for p in c.per_n:
            g = t.gaps[p.n]
            out.size_verdicts += 1
            out.size_decided += p.verdict in (FINETUNE_BETTER, SCRATCH_BETTER, EQUIVALENT)
            false = _claim_is_false(p.verdict, g, s.margin)
            out.size_false += false
            any_false |= false
            out.ci_seen[p.n] = out.ci_seen.get(p.n, 0) + 1
            out.ci_covered[p.n] = out.ci_covered.get(p.n, 0) + bool(p.ci95[0] <= g <= p.ci95[1])
            band_ok &= bool(p.band95[0] <= g <= p.band95[1])
        out.family_false += any_false
        out.band_all_covered += band_ok and len(c.per_n) == len(s.sizes)
        if scored:
            out.n_star_scored += 1
            if c.ci95 is None or c.n_star is None or not math.isfinite(c.ci95[0]):
                out.n_star_not_estimable += 1
            else:
                lo, hi = c.ci95
                out.n_star_reported += 1
                out.n_star_open += not math.isfinite(hi)
                out.n_star_covered += bool(lo <= t.n_star <= hi)
    return out

"""The noise a measured gap carries, as bootstrap draws of every cell's mean.

The unit of replication is the *tuning run* (Bouthillier et al. 2021): a user who runs the study
again tunes again, and which configuration wins a 150-image validation split is the largest
difference between two runs of one study. A cell (strategy x n_train) holds K tuning runs, each
with its own sampler seed, tuning subset and validation draw, whose best configuration is re-run
as replicates (seed and training subset).

- K >= 2 at every cell: each cell's mean is the mean of its tuning runs' means, drawn from its
  Student-t sampling distribution with the run-mean variance moderated across sizes (empirical
  Bayes along its trend in n, Smyth 2004): three runs alone give an sd with 2 degrees of freedom.
  The between-run variance is *measured*.
- Otherwise (one tuning run per cell, study.tunings=1): each cell's mean is drawn
  from its replicates as before, and the between-run variance tau^2 is *estimated* from the lack of
  fit of the cell means around the fitted learning curves, as the 80% upper Q-profile bound
  (Viechtbauer 2007), not the point estimate, and added to every cell; with fewer than four sizes
  per strategy it is *not estimable* and the intervals hold replicate and test noise only.
- Test examples: the examples of the shared test split, one normal draw per split shared by every
  cell evaluated on it (so cells are compared paired), with the covariance of the cells'
  per-example means less the part the replicate (or run) draw already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

TAU_LEVEL = 0.80  # the one-sided upper confidence level of an estimated between-run variance
MEASURED, ESTIMATED, NOT_ESTIMABLE = "measured", "estimated", "not estimable"


@dataclass(frozen=True)
class Replicates:
    """One cell's re-runs: the metric per replicate, the tuning run each belongs to and, where
    stored, whether each test example was right (rows: replicates, columns: the test split in
    order; a row of NaN for a replicate without a record), with the split's identity."""

    acc: np.ndarray
    correct: np.ndarray | None = None
    test_split: str | None = None
    runs: np.ndarray | None = None

    @classmethod
    def of(cls, acc: Sequence[float], correct: np.ndarray | None = None, test_split: str | None = None,
           runs: Sequence[int] | None = None) -> "Replicates":
        a = np.asarray(acc, dtype=float).ravel()
        keep = np.isfinite(a)
        r = None if runs is None else np.asarray(runs, dtype=int).ravel()
        if r is not None and r.size != a.size:
            raise ValueError(f"runs has {r.size} entries for {a.size} replicates")
        c = None
        if correct is not None:
            c = np.asarray(correct)
            c = c.astype(float) if c.dtype != bool else c
            if c.ndim != 2 or c.shape[0] != a.size or c.shape[1] == 0:
                c = None
            else:
                c = c[keep]
                if c.dtype != bool and np.isnan(c).all(axis=1).all():
                    c = None
        return cls(a[keep], c, test_split if c is not None else None, None if r is None else r[keep])

    @property
    def n(self) -> int:
        return int(self.acc.size)

    @property
    def run_ids(self) -> np.ndarray:
        return np.zeros(self.n, dtype=int) if self.runs is None else self.runs

    @property
    def n_runs(self) -> int:
        return int(np.unique(self.run_ids).size) if self.n else 0

    def unit_means(self) -> np.ndarray:
        """The mean of each tuning run's replicates, in run order."""
        ids = self.run_ids
        return np.array([float(self.acc[ids == k].mean()) for k in np.unique(ids)])

    def unit_rows(self) -> np.ndarray | None:
        """Per tuning run, the share of its replicates right on each test example (runs x T)."""
        if self.correct is None:
            return None
        rows = np.asarray(self.correct, dtype=float)
        ids = self.run_ids
        with np.errstate(invalid="ignore"):
            out = np.stack([np.nanmean(rows[ids == k], axis=0) for k in np.unique(ids)])
        return None if np.isnan(out).any() else out

    def within_run_variance(self) -> tuple[float, float]:
        """(pooled variance of one replicate within a tuning run, its degrees of freedom)."""
        ids = self.run_ids
        ss = df = 0.0
        for k in np.unique(ids):
            a = self.acc[ids == k]
            if a.size >= 2:
                ss += float(((a - a.mean()) ** 2).sum())
                df += a.size - 1
        return (ss / df if df else math.nan), df

    def replicates_per_run(self) -> float:
        """The harmonic mean of the runs' replicate counts (what a run mean's replicate noise divides by)."""
        counts = np.bincount(np.unique(self.run_ids, return_inverse=True)[1])
        return float(counts.size / (1.0 / counts).sum()) if counts.size else math.nan


@dataclass(frozen=True)
class Draws:
    point: np.ndarray      # (C,) cell means
    boot: np.ndarray       # (C, B) bootstrap cell means, clipped to [0, 1]
    tested: np.ndarray     # (C,) bool: test examples resampled for this cell
    known_sd: np.ndarray   # (C,) bool: a replicate sd was available (own or borrowed)
    var_tune: np.ndarray   # (C,) between-run variance of one tuning run's mean (tau^2)
    var_rep: np.ndarray    # (C,) variance of one replicate within a tuning run
    runs: np.ndarray       # (C,) tuning runs per cell
    reps: np.ndarray       # (C,) replicates per run (harmonic mean)
    test_cov: np.ndarray   # (C, C) covariance of the cell means from the test examples (0 where untested)
    between: str = MEASURED  # how the between-run variance entered: measured / estimated / not estimable
    estimate: BetweenRuns | None = None  # the estimated between-run variance (between == "estimated")
    n_test: int | None = None


def _replicate_sd(cells: Sequence[tuple[str, int, Replicates]]) -> tuple[np.ndarray, np.ndarray]:
    """(sd, df) of one unit, per cell, moderated across sizes (empirical Bayes, Smyth 2004).

    Three units give an sd with 2 degrees of freedom, whose t quantile (4.3) buries any real
    difference. The sds of a strategy's cells follow a trend in n (they shrink as data grows), so
    each cell's variance is pulled towards that trend by as much as the cells' scatter around it
    allows: the prior's weight d0 is estimated from that scatter, and is small (little pooling)
    when the trend does not hold. A cell with one unit takes the trend's value. Falls back to the
    raw sds, borrowing the nearest size's for single units, when too few cells have units to fit a
    trend; NaN where nothing can be said."""
    var = np.array([float(r.acc.var(ddof=1)) if r.n >= 2 else np.nan for _, _, r in cells])
    d = np.array([float(r.n - 1) for _, _, r in cells])
    moderated = _moderate(cells, var, d)
    if moderated is not None:
        return moderated
    sd, df = np.sqrt(var), np.where(d >= 1, d, np.nan)
    for i, (strategy, n, r) in enumerate(cells):
        donors = [j for j, (s, _, x) in enumerate(cells) if s == strategy and x.n >= 2]
        if r.n < 2 and donors:
            j = min(donors, key=lambda k: abs(math.log(cells[k][1] / n)))
            sd[i], df[i] = sd[j] * math.sqrt(cells[j][1] / n), df[j]
    return sd, df
def _moderate(cells: Sequence[tuple[str, int, Replicates]], var: np.ndarray,
              d: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    from scipy import stats

    has = d >= 1
    prior = _variance_prior(cells, var, d, has)
    if prior is None:
        return None
    # A cell far above its trend (an F test at 5%) is noise the trend does not describe: it keeps
    # its own variance, and the trend is fitted again without it.
    trend, d0 = prior
    outlier = has & (var / trend > stats.f.ppf(0.95, np.maximum(d, 1), d0))
    if outlier.any():
        prior = _variance_prior(cells, var, d, has & ~outlier)
        if prior is None:
            return None
        trend, d0 = prior
    own = np.where(has, np.nan_to_num(var), 0.0)
    post = np.where(outlier, own, (d0 * trend + d * own) / (d0 + d))
    return np.sqrt(post), np.where(outlier, d, d0 + d)


def _variance_prior(cells: Sequence[tuple[str, int, Replicates]], var: np.ndarray, d: np.ndarray,
                    use: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The trend of a replicate's variance in log n, per strategy, at every cell, and the prior's
    degrees of freedom d0 (from the cells' scatter around it); None when too few cells fit it."""
    from scipy import optimize, special

    strategies = sorted({s for s, _, _ in cells})
    per = {s: [i for i, (x, _, _) in enumerate(cells) if x == s and use[i]] for s in strategies}
    if any(len(v) < 2 for v in per.values()) or use.sum() < 5:
        return None
    dd = np.maximum(d, 1.0)  # cells without a variance get a placeholder; only `use` cells are fitted
    # log s^2 is unbiased for log sigma^2 after the chi-square correction digamma(d/2) - log(d/2).
    z = np.log(np.maximum(np.nan_to_num(var), 1e-10)) - special.digamma(dd / 2) + np.log(dd / 2)
    log_n = np.log([float(n) for _, n, _ in cells])
    trend = np.full(len(cells), np.nan)
    residual_sq, trigamma_d, fitted = [], [], 0
    for s, members in per.items():
        slope = len(members) >= 3

        def design(rows: list[int]) -> np.ndarray:
            return np.column_stack([np.ones(len(rows)), log_n[rows]]) if slope else np.ones((len(rows), 1))

        x = design(members)
        coef, *_ = np.linalg.lstsq(x, z[members], rcond=None)
        rows = [i for i, (c, _, _) in enumerate(cells) if c == s]
        trend[rows] = design(rows) @ coef
        leverage = np.einsum("ij,jk,ik->i", x, np.linalg.pinv(x.T @ x), x)
        e = z[members] - x @ coef
        residual_sq += list(e ** 2 / np.maximum(1 - leverage, 1e-6))
        trigamma_d += list(special.polygamma(1, d[members] / 2))
        fitted += x.shape[1]
    excess = float(np.mean(residual_sq) - np.mean(trigamma_d))
    d_max = float(d[use].sum() - fitted)  # never more prior weight than the cells that fit it
    if d_max < 1:
        return None
    d0 = d_max if excess <= 0 else min(d_max, 2 * optimize.brentq(lambda h: special.polygamma(1, h) - excess, 1e-8, 1e8))
    return np.exp(trend + special.digamma(d0 / 2) - np.log(d0 / 2)), d0



def _units(cells: Sequence[tuple[str, int, Replicates]]) -> list[tuple[str, int, Replicates]]:
    """Each cell with its tuning runs as the replicates: the run means and per-run example rows."""
    out = []
    for s, n, r in cells:
        rows = r.unit_rows()
        out.append((s, n, Replicates(r.unit_means(), rows, r.test_split if rows is not None else None)))
    return out


TAU2_RANGE = (1e-9, 1.0)  # accuracy units squared: from a thousandth of a point to the whole scale
TAU2_GRID = 120           # log-spaced points 19% apart; the crossing is interpolated between two (within 0.1%)


@dataclass(frozen=True)
class BetweenRuns:
    """The estimated between-run variance of one cell mean: the larger of a constant tau^2 and a
    multiple of the cell mean's replicate variance (tuning noise that grows with the replicate
    noise, as at small sizes), each the `level` upper Q-profile bound from the lack of fit."""
    tau2: float    # constant part
    ratio: float   # relative part: ratio x the cell mean's replicate variance

    def per_cell(self, mean_var: np.ndarray) -> np.ndarray:
        return np.maximum(self.tau2, np.where(np.isfinite(mean_var), self.ratio * mean_var, 0.0))


def between_run_variance(cells: Sequence[tuple[str, int, Replicates]], mean_var: np.ndarray,
                         level: float = TAU_LEVEL) -> BetweenRuns | None:
    """What a single run per cell cannot show, from the lack of fit of the cell means around each
    strategy's fitted learning curve. Q(tau^2) is the weighted residual sum of squares, refitted with
    weights 1 / (mean_var + tau^2); the constant tau^2 is where Q falls to its (1 - level) chi-square
    quantile; the relative model scales every variance by 1 + ratio, which leaves the fit unchanged,
    so ratio = Q(0) / quantile - 1. `mean_var` is each cell mean's variance without either. None
    when no strategy has four sizes (three curve parameters leave no residual)."""
    from scipy import stats

    from harness.report.learning_curves import fit_power_law_batch

    groups = {}
    for i, (s, n, r) in enumerate(cells):
        groups.setdefault(s, []).append(i)
    groups = {s: sorted(ix, key=lambda i: cells[i][1]) for s, ix in groups.items() if len(ix) >= 4}
    if not groups:
        return None
    means = np.array([float(r.acc.mean()) for _, _, r in cells])
    v = np.where(np.isfinite(mean_var), np.maximum(mean_var, 1e-12), 1e-12)
    df = sum(len(ix) - 3 for ix in groups.values())

    def q(tau2: np.ndarray) -> np.ndarray:
        """The refitted weighted residual sum of squares at each tau^2 (one batched fit per strategy)."""
        total = np.zeros(tau2.size)
        for ix in groups.values():
            w = 1.0 / (v[ix][None, :] + tau2[:, None])
            log_n = np.log([float(cells[i][1]) for i in ix])
            y = np.repeat(means[ix][None, :], tau2.size, axis=0)
            a, b, c, _ = fit_power_law_batch(log_n, y, w / w.sum(1, keepdims=True))
            fitted = a[:, None] - b[:, None] * np.exp(-c[:, None] * log_n[None, :])
            total += (w * (y - fitted) ** 2).sum(1)
        return total

    # q falls as tau^2 grows: one batched evaluation at 0 and on a log grid, then interpolation in log tau^2
    target = float(stats.chi2.ppf(1.0 - level, df))
    grid = np.concatenate([[0.0], np.geomspace(*TAU2_RANGE, TAU2_GRID)])
    qs = q(grid)
    ratio = max(0.0, float(qs[0]) / target - 1.0)
    below = np.flatnonzero(qs <= target)
    if below.size == 0:
        return BetweenRuns(float(grid[-1]), ratio)
    i = int(below[0])
    if i <= 1:
        return BetweenRuns(float(grid[i]), ratio)
    frac = (qs[i - 1] - target) / (qs[i - 1] - qs[i])
    tau2 = float(np.exp(np.log(grid[i - 1]) + frac * (np.log(grid[i]) - np.log(grid[i - 1]))))
    return BetweenRuns(tau2, ratio)


def draw(cells: Sequence[tuple[str, int, Replicates]], n_boot: int, rng: np.random.Generator) -> Draws:
    """Bootstrap draws of every cell's mean with every noise it carries (the module docstring)."""
    measured = bool(cells) and all(r.n_runs >= 2 for _, _, r in cells)
    runs = np.array([float(max(1, r.n_runs)) for _, _, r in cells])
    reps = np.array([r.replicates_per_run() for _, _, r in cells])
    units = _units(cells) if measured else list(cells)
    point = np.array([float(r.acc.mean()) for _, _, r in units])
    sd, df = _replicate_sd(units)
    known = np.isfinite(sd)
    unit_n = np.array([float(r.n) for _, _, r in units])
    mean_var = np.where(known, sd ** 2 / unit_n, np.nan)  # the cell mean's variance from its units
    within = np.array([r.within_run_variance()[0] for _, _, r in cells])
    between, estimate = MEASURED, None
    if measured:
        # one run's mean = its offset + replicate noise; the decomposition serves the power statements
        var_rep = np.where(np.isfinite(within), within, 0.0)  # one replicate a run: all of it counts as tuning
        var_tune = np.maximum(0.0, sd ** 2 - var_rep / reps)
    else:
        estimate = between_run_variance(cells, mean_var)
        between = NOT_ESTIMABLE if estimate is None else ESTIMATED
        var_rep = sd ** 2
        var_tune = np.zeros(len(cells)) if estimate is None else estimate.per_cell(mean_var)
    boot = np.repeat(point[:, None], n_boot, axis=1)
    for i in range(len(cells)):
        if known[i] and sd[i] > 0:
            boot[i] += sd[i] / math.sqrt(unit_n[i]) * rng.standard_t(df[i], n_boot)
    if not measured and np.any(var_tune > 0):
        boot += np.sqrt(var_tune / runs)[:, None] * rng.standard_normal((len(cells), n_boot))
    # Test-example noise, one draw per test split shared by every cell evaluated on it (paired):
    # the covariance across cells of their per-example means over the split's examples, less the
    # part that is unit noise (already in the t-draw above), drawn as a normal (T is large).
    tested = np.zeros(len(cells), dtype=bool)
    test_cov = np.zeros((len(cells), len(cells)))
    splits: dict[tuple[str, int], list[int]] = {}
    for i, (_, _, r) in enumerate(units):
        if r.correct is not None and r.test_split:
            splits.setdefault((r.test_split, r.correct.shape[1]), []).append(i)
    n_test = None
    for (_, t), members in splits.items():
        n_test = t if n_test is None else max(n_test, t)
        rows = [np.asarray(units[i][2].correct, dtype=float) for i in members]
        per_example = np.stack([x.mean(0) for x in rows])  # (M, T)
        cov = np.atleast_2d(np.cov(per_example))
        noise = [float(x.var(axis=0, ddof=1).mean()) / x.shape[0] if x.shape[0] >= 2 else 0.0 for x in rows]
        values, vectors = np.linalg.eigh((cov - np.diag(noise)) / t)
        clipped = np.clip(values, 0.0, None)
        test_cov[np.ix_(members, members)] = (vectors * clipped) @ vectors.T
        boot[members] += (vectors * np.sqrt(clipped)) @ rng.standard_normal((len(members), n_boot))
        tested[members] = True
    return Draws(point, np.clip(boot, 0.0, 1.0), tested, known, var_tune, var_rep, runs, reps, test_cov,
                 between, estimate, n_test)

"""Learning curves, the fine-tune/scratch crossover, and effective data transferred.

The study's headline question is "how much target data until training from scratch catches up
with fine-tuning?". Measured sizes form a sparse geometric grid (LCDB-style), so the answer needs
a curve through each strategy's points -- a saturating power law, since error falls roughly as a
power law in data (Hestness et al. 2017) -- an explicit statement of whether the crossing lies
inside the measured range or is an extrapolation, and a bootstrap interval that carries the seed
noise through the fit. Inverting the scratch curve at fine-tune's accuracy gives Hernandez et al.'s
(2021) effective data transferred.

Inputs are per strategy ``{n_train: [test accuracy per seed]}``; seeds are re-runs of the best
configuration at that size. Non-finite accuracies (missing runs) are dropped.

Fitting uses variable projection: for a fixed exponent ``c`` the model ``a - b * n**-c`` is linear
in ``(a, b)``, so the box-constrained least squares has a closed form. A grid over ``c`` plus a
golden-section refinement is exact enough and vectorises over bootstrap replicates, which is what
makes 1000 replicates cost well under a second; the single point fit is additionally polished with
``scipy.optimize.curve_fit`` from several starts, keeping the lowest SSE.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
from scipy import optimize, stats

ArrayLike = Union[float, Sequence[float], np.ndarray]

POWER_LAW = "power_law"
LOG_LINEAR = "log_linear"

# Exponent bounds: c -> 0 degenerates into a log-linear curve (which a <= 1 already tames), c > 2
# is steeper than any learning curve reported in the literature.
C_MIN = 1e-3
C_MAX = 2.0
# inverse() of a target the curve exceeds at any size: "no data needed", but kept > 0 so that
# ratios such as D_E / D_F stay defined.
N_FLOOR = 1e-9
ALPHA = 0.05

_C_GRID = np.geomspace(C_MIN, C_MAX, 64)
_GOLDEN_STEPS = 28
_SEARCH_POINTS = 2048
_CHUNK = 256
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


# --------------------------------------------------------------------------------------------
# Curves


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve acc(n).

    ``power_law``: params ``(a, b, c)``, ``acc(n) = a - b * n**-c`` with ``0 <= a <= 1``,
    ``b >= 0``, ``C_MIN <= c <= C_MAX``; ``a`` is the asymptote.
    ``log_linear``: params ``(log n_1..log n_k, acc_1..acc_k)``, knots of an isotonic
    (non-decreasing) fit to the per-size means, interpolated linearly in log n and extended
    beyond the knots with the end segments' slopes, clipped to [0, 1]. It is the fallback when
    too few sizes were measured for three parameters, so it makes no claim of saturation.
    """

    family: str
    params: tuple[float, ...]

    def predict(self, n: ArrayLike) -> np.ndarray:
        """Accuracy at size(s) ``n`` (> 0); same shape as ``n``."""
        x = np.asarray(n, dtype=float)
        if self.family == POWER_LAW:
            a, b, c = self.params
            with np.errstate(divide="ignore", over="ignore"):
                return np.asarray(a - b * np.power(x, -c))
        if self.family == LOG_LINEAR:
            xs, ys, s0, s1 = self._knots()
            with np.errstate(divide="ignore", invalid="ignore"):
                lx = np.log(x)
                y = np.interp(lx, xs, ys)
                y = np.where(lx < xs[0], ys[0] + s0 * (lx - xs[0]), y)
                y = np.where(lx > xs[-1], ys[-1] + s1 * (lx - xs[-1]), y)
            return np.asarray(np.clip(y, 0.0, 1.0))
        raise ValueError(f"unknown curve family {self.family!r}")

    @property
    def asymptote(self) -> float:
        """Supremum of the curve: targets at or above it are never reached."""
        if self.family == POWER_LAW:
            return float(self.params[0])
        _, ys, _, s1 = self._knots()
        return 1.0 if s1 > 0 else float(ys[-1])

    def inverse(self, acc: ArrayLike) -> np.ndarray:
        """Smallest n at which the curve reaches ``acc``.

        ``inf`` when ``acc`` is at or above the asymptote. Below the measured range the curve is
        extrapolated, so results may be smaller than the smallest measured n (even < 1); they are
        clipped at ``N_FLOOR`` so they stay positive.
        """
        y = np.asarray(acc, dtype=float)
        if self.family == POWER_LAW:
            a, b, c = self.params
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                gap = a - y
                out = np.where(gap > 0, np.power(b / np.where(gap > 0, gap, 1.0), 1.0 / c), np.inf)
            out = np.where(np.isnan(y), np.nan, out)
            return np.asarray(np.maximum(out, N_FLOOR))
        if self.family == LOG_LINEAR:
            flat = np.array([self._inverse_log_linear(float(v)) for v in y.ravel()])
            return flat.reshape(y.shape)
        raise ValueError(f"unknown curve family {self.family!r}")

    def _knots(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        k = len(self.params) // 2
        xs = np.asarray(self.params[:k], dtype=float)
        ys = np.asarray(self.params[k:], dtype=float)
        s0 = float((ys[1] - ys[0]) / (xs[1] - xs[0]))
        s1 = float((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return xs, ys, s0, s1

    def _inverse_log_linear(self, target: float) -> float:
        if math.isnan(target):
            return math.nan
        xs, ys, s0, s1 = self._knots()
        if target >= self.asymptote:
            return math.inf
        if target <= 0.0:
            return N_FLOOR
        if target <= ys[0]:
            lx = xs[0] - (ys[0] - target) / s0 if s0 > 0 else -math.inf
        elif target > ys[-1]:
            lx = xs[-1] + (target - ys[-1]) / s1
        else:
            j = int(np.argmax(ys >= target))
            lx = xs[j - 1] + (target - ys[j - 1]) / (ys[j] - ys[j - 1]) * (xs[j] - xs[j - 1])
        return max(math.exp(lx), N_FLOOR) if lx > -745 else N_FLOOR


def fit_learning_curve(n: Sequence[float], acc: Sequence[float]) -> CurveFit:
    """Fit acc(n) through raw (n, accuracy) points; several points per n are allowed.

    Three or more distinct sizes give a saturating power law; two give the ``log_linear``
    fallback (as does a power-law fit that fails), so callers always get a curve.

    Raises:
        ValueError: fewer than two distinct sizes, mismatched lengths, or a size that is not
            a finite positive number.
    """
    x, y = _as_points(n, acc)
    sizes, means, counts = _group(x, y)
    if sizes.size < 2:
        raise ValueError(f"a learning curve needs at least 2 distinct n, got {sizes.size}")
    if sizes.size >= 3:
        try:
            fit = _fit_power_point(x, y, sizes, means, counts)
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError):
            fit = None
        if fit is not None and all(math.isfinite(p) for p in fit.params):
            return fit
    return _fit_log_linear(sizes, means, counts)


def _as_points(n: Sequence[float], acc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(n, dtype=float).ravel()
    y = np.asarray(acc, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"n and acc differ in length ({x.size} vs {y.size})")
    if not np.all(np.isfinite(x) & (x > 0)):
        raise ValueError("every n must be a finite positive number")
    keep = np.isfinite(y)
    return x[keep], y[keep]


def _group(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes, inv = np.unique(x, return_inverse=True)
    counts = np.bincount(inv, minlength=sizes.size).astype(float)
    means = np.bincount(inv, weights=y, minlength=sizes.size) / np.maximum(counts, 1.0)
    return sizes, means, counts


def _fit_log_linear(sizes: np.ndarray, means: np.ndarray, counts: np.ndarray) -> CurveFit:
    ys = _isotonic(means, counts)
    knots = np.concatenate([np.log(sizes), ys])
    return CurveFit(LOG_LINEAR, tuple(float(v) for v in knots))


def _isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: accuracy should not fall with more data."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for yi, wi in zip(y, w):
        blocks.append([float(yi), float(wi), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, l2 = blocks.pop()
            m1, w1, l1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, l1 + l2])
    return np.concatenate([np.full(int(length), mean) for mean, _, length in blocks])


def _solve_ab(
    y: np.ndarray, z: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-constrained weighted LS of y on a + beta * z (0 <= a <= 1, beta >= 0), exactly.

    The optimum of a convex quadratic on a box is either the unconstrained one or lies on an
    edge, where the 1-D problem is solved by clipping; the cheapest feasible candidate wins.
    Works on broadcast stacks (..., N), so one call covers every replicate and every exponent.
    """
    sw = float(w.sum())
    ybar = (w * y).sum(-1) / sw
    zbar = (w * z).sum(-1) / sw
    yc = y - ybar[..., None]
    zc = z - zbar[..., None]
    cyy = (w * yc * yc).sum(-1)
    czz = (w * zc * zc).sum(-1)
    cyz = (w * yc * zc).sum(-1)
    szz = czz + sw * zbar * zbar

    def sse(a: np.ndarray, beta: np.ndarray) -> np.ndarray:
        return cyy + beta * beta * czz - 2.0 * beta * cyz + sw * (ybar - a - beta * zbar) ** 2

    with np.errstate(divide="ignore", invalid="ignore"):
        beta_u = np.where(czz > 0, cyz / np.where(czz > 0, czz, 1.0), 0.0)
    a_u = ybar - beta_u * zbar
    beta_1 = np.maximum((cyz + sw * (ybar - 1.0) * zbar) / szz, 0.0)
    beta_0 = np.maximum((cyz + sw * ybar * zbar) / szz, 0.0)
    shape = a_u.shape
    a_all = np.stack([np.broadcast_to(v, shape) for v in (a_u, np.clip(ybar, 0.0, 1.0), 1.0, 0.0)])
    b_all = np.stack([np.broadcast_to(v, shape) for v in (beta_u, 0.0, beta_1, beta_0)])
    s_all = sse(a_all, b_all)
    feasible_u = (beta_u >= 0) & (a_u >= 0) & (a_u <= 1)
    s_all[0] = np.where(feasible_u, s_all[0], np.inf)
    pick = np.argmin(s_all, axis=0)[None]
    a = np.take_along_axis(a_all, pick, 0)[0]
    beta = np.take_along_axis(b_all, pick, 0)[0]
    return a, beta, np.maximum(np.take_along_axis(s_all, pick, 0)[0], 0.0)


def fit_power_law_batch(
    log_sizes: np.ndarray, means: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Power-law fits for a stack of mean curves (R, N): returns a, b, c, weighted SSE (R,)."""
    z_grid = -np.exp(-_C_GRID[:, None] * log_sizes[None, :])
    _, _, s_grid = _solve_ab(means[:, None, :], z_grid[None], weights)
    k = np.argmin(s_grid, axis=1)
    lo = _C_GRID[np.maximum(k - 1, 0)]
    hi = _C_GRID[np.minimum(k + 1, _C_GRID.size - 1)]

    def profile(c: np.ndarray) -> np.ndarray:
        return _solve_ab(means, -np.exp(-c[:, None] * log_sizes[None, :]), weights)[2]

    c1 = hi - _INV_PHI * (hi - lo)
    c2 = lo + _INV_PHI * (hi - lo)
    f1, f2 = profile(c1), profile(c2)
    for _ in range(_GOLDEN_STEPS):
        left = f1 < f2
        hi = np.where(left, c2, hi)
        lo = np.where(left, lo, c1)
        c2n = np.where(left, c1, lo + _INV_PHI * (hi - lo))
        c1n = np.where(left, hi - _INV_PHI * (hi - lo), c2)
        f_new = profile(np.where(left, c1n, c2n))
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
        c1, c2 = c1n, c2n
    c = 0.5 * (lo + hi)
    a, b, s = _solve_ab(means, -np.exp(-c[:, None] * log_sizes[None, :]), weights)
    grid_best = s_grid[np.arange(k.size), k]
    worse = s > grid_best
    if np.any(worse):  # never trust the refinement over the grid point it started from
        ck = _C_GRID[k]
        ag, bg, sg = _solve_ab(means, -np.exp(-ck[:, None] * log_sizes[None, :]), weights)
        a, b, c, s = (np.where(worse, u, v) for u, v in ((ag, a), (bg, b), (ck, c), (sg, s)))
    return a, b, c, s


def _power(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(n, -c)


def _fit_power_point(
    x: np.ndarray, y: np.ndarray, sizes: np.ndarray, means: np.ndarray, counts: np.ndarray
) -> CurveFit:
    """Profile fit, then curve_fit from several starts; the lowest raw-point SSE wins."""
    log_sizes = np.log(sizes)
    a, b, c, _ = fit_power_law_batch(log_sizes, means[None], counts)
    best = np.array([a[0], b[0], c[0]])

    # Other starts: the next-best local minima of the exponent profile, and a generic guess.
    z_grid = -np.exp(-_C_GRID[:, None] * log_sizes[None, :])
    ga, gb, gs = _solve_ab(means[None, :], z_grid, counts)
    is_min = np.r_[True, gs[1:] <= gs[:-1]] & np.r_[gs[:-1] <= gs[1:], True]
    local = [int(i) for i in np.argsort(gs) if is_min[i]][:3]
    starts = [best] + [np.array([ga[i], gb[i], _C_GRID[i]]) for i in local]
    a0 = min(1.0, float(means.max()) + 0.05)
    starts.append(np.array([a0, (a0 - float(means.min())) * math.sqrt(sizes[0]), 0.5]))

    def sse(p: np.ndarray) -> float:
        r = y - _power(x, *p)
        return float(r @ r)

    best_sse = sse(best)
    lower, upper = np.array([0.0, 0.0, C_MIN]), np.array([1.0, np.inf, C_MAX])
    for p0 in starts:
        p0 = np.clip(p0, lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = optimize.curve_fit(
                    _power, x, y, p0=p0, bounds=(lower, upper), method="trf", maxfev=2000
                )
        except (RuntimeError, ValueError, optimize.OptimizeWarning):
            continue
        if np.all(np.isfinite(p)):
            s = sse(p)
            if s < best_sse:
                best, best_sse = np.clip(p, lower, upper), s
    return CurveFit(POWER_LAW, (float(best[0]), float(best[1]), float(best[2])))


# --------------------------------------------------------------------------------------------
# Crossover


@dataclass(frozen=True)
class CrossoverEstimate:
    """Where scratch's fitted curve meets fine-tune's, with a seed-bootstrap interval.

    ``status``: ``crossover`` (n_star inside ``measured_range``), ``no_crossover_in_range``
    (extrapolated beyond it, within the horizon), ``scratch_never_catches_up`` (no meeting
    within the horizon), ``scratch_always_better`` (scratch at or above fine-tune at the smallest
    shared n, in the fits and in the measured means), ``insufficient_data``.
    ``n_star``/``ci95`` are None unless the status is ``crossover`` or ``no_crossover_in_range``;
    ``ci95`` may hold ``inf`` when over 2.5% of replicates never cross.
    ``measured_range`` spans the sizes both strategies measured.
    ``first_n_scratch_ahead``: smallest shared n where scratch's mean is ahead by a one-sided
    Welch t-test, Holm-corrected over the shared sizes at family-wise alpha 0.05 (so a grid of
    many sizes does not manufacture a lead); sizes with fewer than 2 seeds in either strategy are
    not tested.
    ``p_crossover``: share of bootstrap replicates whose curves meet within the horizon (a
    replicate already ahead at the smallest n counts as meeting there); NaN when not computed.
    """

    status: str
    n_star: float | None
    ci95: tuple[float, float] | None
    measured_range: tuple[int, int]
    first_n_scratch_ahead: int | None
    p_crossover: float

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict; non-finite numbers (an unbounded ci95 end, NaN) become null."""
        return {
            "metric": "test_acc",
            "status": self.status,
            "n_star": _finite_or_none(self.n_star),
            "ci95": None if self.ci95 is None else [_finite_or_none(v) for v in self.ci95],
            "measured_range": [int(self.measured_range[0]), int(self.measured_range[1])],
            "first_n_scratch_ahead": (
                None if self.first_n_scratch_ahead is None else int(self.first_n_scratch_ahead)
            ),
            "p_crossover": _finite_or_none(self.p_crossover),
        }


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def estimate_crossover(
    finetune: Mapping[int, Sequence[float]],
    scratch: Mapping[int, Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
    horizon: float = 1000.0,
) -> CrossoverEstimate:
    """Smallest n where scratch's fitted curve reaches fine-tune's, searched on a log grid from
    the smallest shared n to ``horizon`` x the largest shared n.

    The bootstrap resamples seeds within each (strategy, n) and refits; a strategy with any
    size measured only once is bootstrapped over the residuals of its fit instead, so the
    interval stays defined. Intervals are percentile intervals (2.5, 97.5) over all replicates,
    counting those that never cross as +inf.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not horizon >= 1.0:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    ft, sc = _clean(finetune), _clean(scratch)
    shared = sorted(set(ft) & set(sc))
    first_ahead = _first_n_scratch_ahead(ft, sc, shared)
    if len(ft) < 3 or len(sc) < 3 or len(shared) < 2:
        every = shared or sorted(set(ft) | set(sc))
        rng_ = (every[0], every[-1]) if every else (0, 0)
        return CrossoverEstimate("insufficient_data", None, None, rng_, first_ahead, math.nan)

    lo, hi = shared[0], shared[-1]
    fit_f = _fit_mapping(ft)
    fit_s = _fit_mapping(sc)
    log_grid = np.linspace(math.log(lo), math.log(hi * horizon), _SEARCH_POINTS)
    n_star = _point_crossing(fit_f, fit_s, log_grid)
    if n_star is not None and n_star <= lo * (1 + 1e-12):
        n_star = float(lo)  # exp(log(lo)) need not round-trip exactly

    rng = np.random.default_rng(seed)
    boot = _bootstrap_crossings(ft, sc, fit_f, fit_s, log_grid, n_boot, rng)
    p_cross = float(np.mean(np.isfinite(boot)))

    if n_star is None:
        status = "scratch_never_catches_up"
        return CrossoverEstimate(status, None, None, (lo, hi), first_ahead, p_cross)
    if n_star <= lo and float(np.mean(sc[lo])) >= float(np.mean(ft[lo])):
        status = "scratch_always_better"
        return CrossoverEstimate(status, None, None, (lo, hi), first_ahead, p_cross)
    status = "crossover" if n_star <= hi else "no_crossover_in_range"
    ci = (_percentile_inf(boot, 2.5), _percentile_inf(boot, 97.5))
    return CrossoverEstimate(status, float(n_star), ci, (lo, hi), first_ahead, p_cross)


def _clean(curve: Mapping[int, Sequence[float]]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for n, values in curve.items():
        if not (math.isfinite(float(n)) and float(n) > 0):
            raise ValueError(f"n_train must be a positive number, got {n!r}")
        v = np.atleast_1d(np.asarray(values, dtype=float)).ravel()
        v = v[np.isfinite(v)]
        if v.size:
            out[int(n)] = v
    return dict(sorted(out.items()))


def _points(curve: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.full(v.size, float(n)) for n, v in curve.items()])
    y = np.concatenate(list(curve.values()))
    return x, y


def _fit_mapping(curve: Mapping[int, np.ndarray]) -> CurveFit:
    return fit_learning_curve(*_points(curve))


def _point_crossing(fit_f: CurveFit, fit_s: CurveFit, log_grid: np.ndarray) -> float | None:
    def gap(lx: float) -> float:
        return float(fit_s.predict(math.exp(lx)) - fit_f.predict(math.exp(lx)))

    d = fit_s.predict(np.exp(log_grid)) - fit_f.predict(np.exp(log_grid))
    ahead = d >= 0
    if not ahead.any():
        return None
    i = int(np.argmax(ahead))
    if i == 0:
        return float(math.exp(log_grid[0]))
    root = optimize.brentq(gap, log_grid[i - 1], log_grid[i], xtol=1e-10)
    return float(math.exp(root))


def _bootstrap_means(
    curve: Mapping[int, np.ndarray], fit: CurveFit, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, N) resampled per-size means, N = sizes in ``curve`` order."""
    values = list(curve.values())
    if min(v.size for v in values) >= 2:
        # Resampled deviations are scaled by sqrt(k/(k-1)): plain resampling of k seeds shrinks
        # the variance of their mean by (k-1)/k, which with 3-5 seeds visibly narrows the interval.
        cols = []
        for v in values:
            dev = (v - v.mean()) * math.sqrt(v.size / (v.size - 1))
            cols.append(v.mean() + dev[rng.integers(0, v.size, (n_boot, v.size))].mean(1))
        return np.stack(cols, 1)
    # Residual bootstrap: with single seeds, seed resampling would freeze those means.
    x, y = _points(curve)
    fitted = np.asarray(fit.predict(x), dtype=float)
    res = y - fitted
    res = res - res.mean()
    m = res.size
    if m > 3:
        res = res * math.sqrt(m / (m - 3))
    draws = fitted[None, :] + res[rng.integers(0, m, (n_boot, m))]
    counts = np.array([v.size for v in values])
    member = np.repeat(np.arange(len(values)), counts)
    onehot = (member[:, None] == np.arange(len(values))[None, :]).astype(float)
    return (draws @ onehot) / counts[None, :]


def _bootstrap_crossings(
    ft: Mapping[int, np.ndarray],
    sc: Mapping[int, np.ndarray],
    fit_f: CurveFit,
    fit_s: CurveFit,
    log_grid: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """First crossing per replicate (inf when none), refitting power laws in one vectorised pass."""
    params = []
    for curve, fit in ((ft, fit_f), (sc, fit_s)):
        means = _bootstrap_means(curve, fit, n_boot, rng)
        weights = np.array([v.size for v in curve.values()], dtype=float)
        log_sizes = np.log(np.array(list(curve), dtype=float))
        params.append(fit_power_law_batch(log_sizes, means, weights)[:3])
    (fa, fb, fc), (sa, sb, sc_) = params
    out = np.full(n_boot, np.inf)
    for start in range(0, n_boot, _CHUNK):
        sl = slice(start, start + _CHUNK)
        d = (sa[sl] - fa[sl])[:, None] - sb[sl][:, None] * np.exp(-sc_[sl][:, None] * log_grid)
        d += fb[sl][:, None] * np.exp(-fc[sl][:, None] * log_grid)
        ahead = d >= 0
        has = ahead.any(1)
        i = np.argmax(ahead, axis=1)
        rows = np.arange(d.shape[0])
        prev = np.maximum(i - 1, 0)
        d0, d1 = d[rows, prev], d[rows, i]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(i > 0, d0 / (d0 - d1), 0.0)
        lx = log_grid[prev] + np.clip(t, 0.0, 1.0) * (log_grid[i] - log_grid[prev])
        out[sl] = np.where(has, np.exp(lx), np.inf)
    return out


def _percentile_inf(values: np.ndarray, q: float) -> float:
    """np.percentile that treats +inf as a value (interpolating towards it gives inf)."""
    finite = np.isfinite(values)
    if not finite.any():
        return math.inf
    top = float(values[finite].max())
    p = float(np.percentile(np.where(finite, values, np.finfo(float).max), q))
    return math.inf if p > top else p


def _first_n_scratch_ahead(
    ft: Mapping[int, np.ndarray], sc: Mapping[int, np.ndarray], shared: Sequence[int]
) -> int | None:
    tested: list[tuple[int, float]] = []
    for n in shared:
        f, s = ft[n], sc[n]
        if f.size < 2 or s.size < 2:
            continue
        diff = float(s.mean() - f.mean())
        vf, vs = float(f.var(ddof=1)) / f.size, float(s.var(ddof=1)) / s.size
        if vf + vs == 0.0:  # deterministic reruns: any difference is beyond the noise
            p = 0.0 if diff > 0 else 1.0
        else:
            df = (vf + vs) ** 2 / (vf**2 / (f.size - 1) + vs**2 / (s.size - 1))
            p = float(stats.t.sf(diff / math.sqrt(vf + vs), df))
        tested.append((n, p))
    # Holm step-down: reject in order of p while p <= alpha / (m - rank).
    m = len(tested)
    rejected: list[int] = []
    for rank, (n, p) in enumerate(sorted(tested, key=lambda t: t[1])):
        if p > ALPHA / (m - rank):
            break
        rejected.append(n)
    return min(rejected) if rejected else None


# --------------------------------------------------------------------------------------------
# Effective data transferred and summaries


def effective_data_transferred(
    finetune: Mapping[int, Sequence[float]], scratch: Mapping[int, Sequence[float]]
) -> list[dict[str, object]]:
    """Hernandez et al. (2021) effective data transferred, one row per fine-tune size D_F.

    D_E is the n at which the fitted scratch curve reaches fine-tune's mean accuracy at D_F
    (``inf`` when above scratch's asymptote); D_T = D_E - D_F is negative under negative
    transfer; ``multiplier`` = D_E / D_F. ``extrapolated`` flags D_E outside the measured
    scratch range, where the number rests on the fitted curve's shape alone.

    Raises:
        ValueError: scratch has fewer than 2 distinct sizes.
    """
    ft, sc = _clean(finetune), _clean(scratch)
    fit_s = _fit_mapping(sc)
    s_lo, s_hi = min(sc), max(sc)
    rows: list[dict[str, object]] = []
    for n, values in ft.items():
        acc = float(values.mean())
        d_e = float(fit_s.inverse(acc))
        rows.append(
            {
                "n_train": int(n),
                "finetune_acc": acc,
                "scratch_n_equivalent": d_e,
                "effective_data_transferred": d_e - n,
                "multiplier": d_e / n,
                "extrapolated": bool(not (s_lo <= d_e <= s_hi)),
            }
        )
    return rows


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval over seeds (a single value gives (v, v, v))."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("mean_ci95 needs at least one value, all finite")
    m = float(v.mean())
    if v.size == 1:
        return m, m, m
    half = float(stats.t.ppf(0.975, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    # Accuracies live in [0, 1]: an interval past either end says nothing more than the end itself.
    return m, max(0.0, m - half), min(1.0, m + half)

"""Learning curves: saturating power laws acc(n) = a - b * n**-c fitted to per-size means.

Error falls roughly as a power law in data (Hestness et al. 2017), so a saturating power law is the
curve through each strategy's measured sizes; the verdict (harness.report.verdict) fits one per
strategy for its point estimate and for every bootstrap replicate at once.

Fitting uses variable projection: for a fixed exponent ``c`` the model is linear in ``(a, b)``, so
the box-constrained least squares has a closed form. A grid over ``c`` plus a golden-section
refinement is exact enough and vectorises over replicates, which is what makes thousands of fits
cost well under a second.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

# Exponent bounds: c -> 0 degenerates into a log-linear curve (which a <= 1 already tames), c > 2
# is steeper than any learning curve reported in the literature.
C_MIN = 1e-3
C_MAX = 2.0

_C_GRID = np.geomspace(C_MIN, C_MAX, 64)
_GOLDEN_STEPS = 28
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def power_law(params: Sequence[float], n: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """acc(n) = a - b * n**-c for params (a, b, c)."""
    a, b, c = params
    with np.errstate(divide="ignore", over="ignore"):
        return np.asarray(a - b * np.power(np.asarray(n, dtype=float), -c))


def _solve_ab(
    y: np.ndarray, z: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-constrained weighted LS of y on a + beta * z (0 <= a <= 1, beta >= 0), exactly.

    The optimum of a convex quadratic on a box is either the unconstrained one or lies on an
    edge, where the 1-D problem is solved by clipping; the cheapest feasible candidate wins.
    Works on broadcast stacks (..., N), so one call covers every replicate and every exponent;
    the weights too may differ per curve (..., N).
    """
    sw = w.sum(-1)
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
    """Power-law fits for a stack of mean curves (R, N) with weights (N,) or one row per curve (R, N):
    returns a, b, c, weighted SSE (R,)."""
    z_grid = -np.exp(-_C_GRID[:, None] * log_sizes[None, :])
    grid_weights = weights[:, None, :] if weights.ndim == 2 else weights
    _, _, s_grid = _solve_ab(means[:, None, :], z_grid[None], grid_weights)
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

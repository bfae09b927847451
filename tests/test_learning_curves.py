"""harness.report.learning_curves: the batched saturating power-law fit the verdict relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report.learning_curves import C_MAX, C_MIN, fit_power_law_batch, mean_ci95, power_law

GRID = np.array([10, 20, 40, 80, 160, 320], dtype=float)


def test_fit_recovers_noiseless_power_laws_in_one_batch() -> None:
    truths = np.array([(0.95, 0.8, 0.4), (0.975, 2.0, 1.2), (0.9, 0.3, 0.05)])
    means = np.stack([power_law(t, GRID) for t in truths])
    a, b, c, sse = fit_power_law_batch(np.log(GRID), means, np.ones(GRID.size))
    np.testing.assert_allclose(np.stack([a, b, c], 1), truths, rtol=2e-3)
    assert np.all(sse < 1e-8)


def test_fit_respects_the_box_and_weights() -> None:
    rising_past_one = np.array([[0.9, 0.95, 0.99, 1.0, 1.0, 1.0]])
    a, b, c, _ = fit_power_law_batch(np.log(GRID), rising_past_one, np.ones(GRID.size))
    assert 0.0 <= a[0] <= 1.0 and b[0] >= 0.0 and C_MIN <= c[0] <= C_MAX
    falling = np.array([[0.8, 0.78, 0.75, 0.7, 0.69, 0.6]])  # no rising curve fits: flat at the weighted mean
    a, b, _, _ = fit_power_law_batch(np.log(GRID), falling, np.ones(GRID.size))
    assert b[0] == pytest.approx(0.0, abs=1e-9) and a[0] == pytest.approx(falling.mean())
    weights = np.array([100.0, 1, 1, 1, 1, 1])  # a heavy first size pulls the flat line to it
    a, _, _, _ = fit_power_law_batch(np.log(GRID), falling, weights)
    assert a[0] == pytest.approx(float((falling[0] * weights).sum() / weights.sum()))


def test_noisy_replicates_scatter_around_the_truth() -> None:
    rng = np.random.default_rng(0)
    truth = (0.97, 1.5, 0.9)
    means = power_law(truth, GRID)[None, :] + 0.003 * rng.standard_normal((500, GRID.size))
    a, b, c, _ = fit_power_law_batch(np.log(GRID), means, np.ones(GRID.size))
    fitted_at_50 = a - b * 50.0 ** -c
    assert abs(np.median(fitted_at_50) - float(power_law(truth, 50.0))) < 0.002


def test_mean_ci95() -> None:
    assert mean_ci95([0.7]) == (0.7, 0.7, 0.7)
    m, lo, hi = mean_ci95([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6)
    assert hi - m == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert lo == pytest.approx(2 * m - hi)
    # near the ceiling the t-interval is clipped to the range an accuracy can take
    m, lo, hi = mean_ci95([0.99, 1.0, 0.9])
    assert hi == 1.0 and 0.0 < lo < m
    with pytest.raises(ValueError):
        mean_ci95([])

"""Tests for harness.learning_curves: curve fits, crossover status and interval, effective data."""

from __future__ import annotations

import json
import math
import time
from typing import Callable

import numpy as np
import pytest
from scipy import optimize

from harness.learning_curves import (
    LOG_LINEAR,
    POWER_LAW,
    CrossoverEstimate,
    CurveFit,
    effective_data_transferred,
    estimate_crossover,
    fit_learning_curve,
    mean_ci95,
)

GRID = [10, 20, 40, 80, 160, 320]
Curve = Callable[[np.ndarray], np.ndarray]


def ft_curve(n: np.ndarray) -> np.ndarray:
    return 0.9 - 0.3 * np.power(n, -0.3)


def sample(curve: Curve, seeds: int, sd: float, rng: np.random.Generator) -> dict[int, list[float]]:
    return {n: list(curve(float(n)) + rng.normal(0.0, sd, seeds)) for n in GRID}


def true_crossing(f: Curve, s: Curve) -> float:
    def gap(lx: float) -> float:
        return float(s(math.exp(lx)) - f(math.exp(lx)))

    return math.exp(optimize.brentq(gap, math.log(10), math.log(1e7)))


def test_fit_recovers_noiseless_power_law() -> None:
    n = np.array(GRID, dtype=float)
    fit = fit_learning_curve(np.repeat(n, 3), np.repeat(0.95 - 0.8 * n**-0.4, 3))
    assert fit.family == POWER_LAW
    np.testing.assert_allclose(fit.params, (0.95, 0.8, 0.4), rtol=1e-4)
    np.testing.assert_allclose(fit.inverse(fit.predict(n)), n, rtol=1e-6)
    assert np.asarray(fit.predict(100.0)).shape == ()


def test_inverse_edges() -> None:
    fit = CurveFit(POWER_LAW, (0.9, 0.3, 0.3))
    assert np.isinf(fit.inverse(0.9)) and np.isinf(fit.inverse(0.95))
    below = float(fit.inverse(0.5))  # below the curve's value at n = 10
    assert 0.0 < below < 10.0
    assert float(CurveFit(POWER_LAW, (0.8, 0.0, 0.5)).inverse(0.7)) > 0.0  # flat curve


def test_log_linear_fallback_and_too_few_sizes() -> None:
    fit = fit_learning_curve([10, 10, 40, 40], [0.5, 0.52, 0.6, 0.62])
    assert fit.family == LOG_LINEAR
    np.testing.assert_allclose(fit.predict([10, 40]), [0.51, 0.61], atol=1e-12)
    assert fit.predict(20) == pytest.approx(0.56)
    assert float(fit.inverse(0.56)) == pytest.approx(20.0)
    assert 0.0 < float(fit.inverse(0.3)) < 10.0
    assert np.isinf(fit.inverse(1.0))
    # Accuracy falling with data is pooled: the fallback never predicts less with more data.
    falling = fit_learning_curve([10, 40], [0.6, 0.5])
    assert np.all(np.diff(falling.predict([5, 10, 40, 100])) >= 0)
    with pytest.raises(ValueError):
        fit_learning_curve([10, 10, 10], [0.5, 0.6, 0.7])


def test_crossover_inside_range() -> None:
    def scratch(n: np.ndarray) -> np.ndarray:
        return 0.99 - 2.0 * np.power(n, -0.5)

    truth = true_crossing(ft_curve, scratch)
    assert 100 < truth < 250
    rng = np.random.default_rng(0)
    ft, sc = sample(ft_curve, 5, 0.01, rng), sample(scratch, 5, 0.01, rng)
    est = estimate_crossover(ft, sc, n_boot=200)
    assert est.status == "crossover"
    assert est.measured_range == (10, 320)
    assert est.ci95 is not None and est.ci95[0] <= truth <= est.ci95[1]
    assert est.n_star is not None and truth / 1.5 < est.n_star < truth * 1.5
    assert est.p_crossover > 0.9


def test_crossover_beyond_range() -> None:
    def scratch(n: np.ndarray) -> np.ndarray:
        return 0.97 - 1.5 * np.power(n, -0.4)

    truth = true_crossing(ft_curve, scratch)
    assert truth > 320
    rng = np.random.default_rng(1)
    ft, sc = sample(ft_curve, 5, 0.01, rng), sample(scratch, 5, 0.01, rng)
    est = estimate_crossover(ft, sc, n_boot=200)
    assert est.status == "no_crossover_in_range"
    assert est.n_star is not None and est.n_star > 320
    assert est.ci95 is not None and est.ci95[0] <= truth <= est.ci95[1]


@pytest.mark.parametrize(
    "finetune, scratch",
    [
        (lambda n: 0.85 - 0.3 * np.power(n, -0.3), lambda n: 0.75 - 0.3 * np.power(n, -0.3)),
        (lambda n: 0.8 + 0.0 * n, lambda n: 0.7 + 0.0 * n),
    ],
    ids=["same-shape-gap", "flat"],
)
def test_noise_does_not_create_a_crossing(finetune: Curve, scratch: Curve) -> None:
    rng = np.random.default_rng(2)
    ft, sc = sample(finetune, 3, 0.01, rng), sample(scratch, 3, 0.01, rng)
    est = estimate_crossover(ft, sc, n_boot=200)
    assert est.status == "scratch_never_catches_up"
    assert est.n_star is None and est.ci95 is None
    # Replicates may still meet far out (1000x the largest n is a long extrapolation), not most.
    assert est.p_crossover < 0.5
    assert est.first_n_scratch_ahead is None


def test_scratch_always_better() -> None:
    rng = np.random.default_rng(3)
    ft = sample(lambda n: 0.8 - 0.3 * np.power(n, -0.3), 3, 0.01, rng)
    sc = sample(lambda n: 0.9 - 0.2 * np.power(n, -0.3), 3, 0.01, rng)
    est = estimate_crossover(ft, sc, n_boot=200)
    assert est.status == "scratch_always_better"
    assert est.n_star is None
    assert est.first_n_scratch_ahead == 10


def test_insufficient_data() -> None:
    two = {10: [0.5, 0.51], 20: [0.6, 0.61]}
    est = estimate_crossover(two, two, n_boot=50)
    assert est.status == "insufficient_data"
    assert est.n_star is None and est.ci95 is None
    # Three sizes each, but only one in common.
    est = estimate_crossover(
        {10: [0.5], 20: [0.6], 40: [0.7]}, {40: [0.5], 80: [0.6], 160: [0.7]}, n_boot=50
    )
    assert est.status == "insufficient_data"


def test_first_n_scratch_ahead() -> None:
    offsets = np.array([-0.01, -0.005, 0.0, 0.005, 0.01])
    ft_means = {10: 0.6, 20: 0.65, 40: 0.7, 80: 0.73, 160: 0.75, 320: 0.76}
    lead = {10: -0.1, 20: -0.05, 40: 0.0, 80: 0.04, 160: 0.06, 320: 0.08}
    ft = {n: list(m + offsets) for n, m in ft_means.items()}
    ahead = {n: list(m + lead[n] + offsets[::-1]) for n, m in ft_means.items()}
    assert estimate_crossover(ft, ahead, n_boot=100).first_n_scratch_ahead == 80
    # A lead of 0.2 standard deviations of seed noise is not "ahead".
    close = {n: list(m + 0.002 + offsets) for n, m in ft_means.items()}
    assert estimate_crossover(ft, close, n_boot=100).first_n_scratch_ahead is None


def test_effective_data_transferred_matches_analytic_inverse() -> None:
    n = np.array(GRID, dtype=float)
    rng = np.random.default_rng(4)
    scratch = {int(k): list(0.95 - 0.8 * k**-0.4 + rng.normal(0, 0.001, 3)) for k in n}
    ft = {10: [0.60, 0.61], 40: [0.70, 0.71], 160: [0.875, 0.885]}
    rows = effective_data_transferred(ft, scratch)
    assert [r["n_train"] for r in rows] == [10, 40, 160]
    for row in rows:
        analytic = (0.8 / (0.95 - float(row["finetune_acc"]))) ** (1 / 0.4)
        assert float(row["scratch_n_equivalent"]) == pytest.approx(analytic, rel=0.05)
        d_e, d_f = float(row["scratch_n_equivalent"]), float(row["n_train"])
        assert float(row["effective_data_transferred"]) == pytest.approx(d_e - d_f)
        assert float(row["multiplier"]) == pytest.approx(d_e / d_f)
        assert row["extrapolated"] is (not 10 <= d_e <= 320)
    assert rows[-1]["extrapolated"] is True  # 0.88 needs ~ 440 scratch examples
    assert float(rows[-1]["multiplier"]) > 2.0


def test_negative_transfer_and_unreachable_target() -> None:
    n = np.array(GRID, dtype=float)
    scratch = {int(k): [0.95 - 0.8 * k**-0.4] * 2 for k in n}
    worse = {int(k): [0.95 - 0.8 * (k / 4) ** -0.4] for k in n}  # needs a quarter of the data
    rows = effective_data_transferred(worse, scratch)
    for row in rows:
        assert float(row["effective_data_transferred"]) < 0
        assert float(row["multiplier"]) == pytest.approx(0.25, rel=0.01)
    above = effective_data_transferred({10: [0.97]}, scratch)[0]
    assert math.isinf(float(above["scratch_n_equivalent"])) and above["extrapolated"] is True


def test_single_seed_still_gives_an_interval() -> None:
    def scratch(n: np.ndarray) -> np.ndarray:
        return 0.99 - 2.0 * np.power(n, -0.5)

    rng = np.random.default_rng(5)
    ft, sc = sample(ft_curve, 1, 0.01, rng), sample(scratch, 1, 0.01, rng)
    est = estimate_crossover(ft, sc, n_boot=200)
    assert est.status == "crossover"
    assert est.ci95 is not None and est.n_star is not None
    assert est.ci95[0] < est.ci95[1]
    assert est.ci95[0] <= true_crossing(ft_curve, scratch) <= est.ci95[1]


def test_to_json_is_strict_json_in_every_status() -> None:
    rng = np.random.default_rng(6)
    cases = {
        "crossover": (ft_curve, lambda n: 0.99 - 2.0 * np.power(n, -0.5)),
        "no_crossover_in_range": (ft_curve, lambda n: 0.97 - 1.5 * np.power(n, -0.4)),
        "scratch_never_catches_up": (ft_curve, lambda n: ft_curve(n) - 0.1),
        "scratch_always_better": (ft_curve, lambda n: ft_curve(n) + 0.1),
    }
    seen = set()
    for status, (f, s) in cases.items():
        est = estimate_crossover(sample(f, 3, 0.01, rng), sample(s, 3, 0.01, rng), n_boot=100)
        assert est.status == status
        seen.add(est.status)
        doc = json.loads(json.dumps(est.to_json(), allow_nan=False))
        assert doc["metric"] == "test_acc" and doc["status"] == status
        assert doc["measured_range"] == [10, 320]
    insufficient = estimate_crossover({10: [0.5], 20: [0.6]}, {10: [0.5], 20: [0.6]}, n_boot=10)
    json.dumps(insufficient.to_json(), allow_nan=False)
    unbounded = CrossoverEstimate(
        "no_crossover_in_range", 900.0, (500.0, math.inf), (10, 320), None, 0.9
    )
    doc = json.loads(json.dumps(unbounded.to_json(), allow_nan=False))
    assert doc["ci95"] == [500.0, None]
    assert len(seen) == 4


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


def test_bootstrap_of_1000_replicates_is_fast() -> None:
    rng = np.random.default_rng(7)
    ft = sample(ft_curve, 5, 0.01, rng)
    sc = sample(lambda n: 0.99 - 2.0 * np.power(n, -0.5), 5, 0.01, rng)
    start = time.perf_counter()
    est = estimate_crossover(ft, sc, n_boot=1000)
    assert time.perf_counter() - start < 10.0
    assert est.status == "crossover"

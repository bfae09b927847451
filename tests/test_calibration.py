"""The verdict's calibration on simulated studies with known truth (harness.calibration.simulate):
coverage of the per-size intervals and the n* interval, winners named where there are none,
per-size claims the truth contradicts, one at a time and as a family.

Study counts: 150 a scenario for the ones with tuning noise (the issue's targets), 60 for the rest;
the whole module runs in about a minute and a half on 2 cores. Bounds are the target -/+ two
binomial standard errors at that count: per-size coverage >= 0.876 at 150 (a true 0.92 fails it
with probability ~2.5%; 0.82, what intervals blind to tuning noise give here, with near certainty,
see test_the_coverage_check_fails_intervals_blind_to_tuning_noise), family-wise false claims
<= 0.086 at 150."""

from __future__ import annotations

import math

import pytest

from harness.calibration.simulate import SCENARIOS, TUNE_NOISE_SCENARIOS, calibrate

STUDIES = 60        # the benchmark runs >= 500 a scenario; here what the suite affords
TARGET_STUDIES = 150  # the scenarios with tuning noise, whose targets the issue sets
N_BOOT = 120
OLD = ("null", "catch_up", "crossover", "finetune_ahead", "negative_transfer", "null_noise_spike",
       "catch_up_uneven_noise", "null_low_noise")
NEW = tuple(n for n in SCENARIOS if n not in OLD)


def _studies(name: str) -> int:
    return TARGET_STUDIES if name in TUNE_NOISE_SCENARIOS else STUDIES


class _Lazy(dict):
    """Each scenario calibrated on first use, so a -k selection runs only what it needs."""

    def __missing__(self, name):
        self[name] = calibrate(SCENARIOS[name], studies=_studies(name), n_boot=N_BOOT,
                               seed=11)
        return self[name]


@pytest.fixture(scope="module")
def results():
    return _Lazy()


def _coverage_bound(c) -> float:
    """92% (the target) less about two binomial standard errors at this study count."""
    return 0.92 - 2 * math.sqrt(0.92 * 0.08 / c.studies)


def _familywise_bound(c) -> float:
    """5% (the target) plus about two binomial standard errors at this study count."""
    return 0.05 + 2 * math.sqrt(0.05 * 0.95 / c.studies)


@pytest.mark.parametrize("name", OLD)
def test_no_scenario_makes_false_claims(results, name) -> None:
    c = results[name]
    assert c.false_winner_rate <= 0.05, c.to_row()
    assert c.size_false / c.size_verdicts <= 0.05, c.to_row()


@pytest.mark.parametrize("name", ["null", "null_noise_spike", "null_low_noise"])
def test_identical_strategies_name_no_winner(results, name) -> None:
    c = results[name]
    winners = sum(c.status_counts.get(s, 0) for s in ("crossover", "finetune_ahead", "scratch_ahead"))
    assert winners / c.studies <= 0.05, c.to_row()
    assert c.status_counts.get("catch_up", 0) / c.studies <= 0.05, c.to_row()


def test_a_precise_null_is_called_equivalent(results) -> None:
    """One tuning run a cell: the between-run variance is an estimated upper bound (the larger of a
    constant and a relative model) and the claims a simultaneous band, so the power to call a precise
    null equivalent fell from 96% (pointwise, replicate-only) to about 20% (300 studies); it must
    not fall to nothing."""
    assert results["null_low_noise"].rate("equivalent") >= 0.08, results["null_low_noise"].to_row()


@pytest.mark.parametrize("name", ["catch_up", "crossover", "catch_up_uneven_noise"])
def test_the_n_star_interval_covers_the_truth(results, name) -> None:
    c = results[name]
    assert c.n_star_reported >= 0.9 * c.studies
    assert c.coverage >= 0.90, c.to_row()


@pytest.mark.parametrize("name, status", [("finetune_ahead", "finetune_ahead"), ("negative_transfer", "scratch_ahead")])
def test_clear_differences_are_found(name, status) -> None:
    """Calibrated is not the same as blind: a gap of 6+ points everywhere is named in most studies,
    under the default protocol (3 tuning runs of 2 replicates a cell). With one run a cell and 3
    replicates the estimated between-run variance (an upper bound) and the band leave 16-17% power."""
    import dataclasses

    c = calibrate(dataclasses.replace(SCENARIOS[name], tunings=3, replicates=2), studies=60, n_boot=N_BOOT, seed=11)
    assert c.rate(status) >= 0.5, c.to_row()


# ------------------------------------------------------------------ issue 21: calibration that can fail


@pytest.mark.parametrize("name", TUNE_NOISE_SCENARIOS)
def test_per_size_coverage_holds_at_every_size_with_tuning_noise(results, name) -> None:
    """Target >= 92% at every size; the bound allows binomial noise at this study count."""
    c = results[name]
    assert set(c.size_coverage) == set(SCENARIOS[name].sizes)
    n, cov = c.min_size_coverage
    assert cov >= _coverage_bound(c), (n, c.size_coverage, c.to_row())


@pytest.mark.parametrize("name", TUNE_NOISE_SCENARIOS)
def test_per_size_claims_are_controlled_as_a_family(results, name) -> None:
    """Null and gap-at-the-margin, nine sizes: <= 5% of studies make any false per-size claim."""
    c = results[name]
    assert c.familywise_false <= _familywise_bound(c), c.to_row()
    assert c.band_coverage >= _coverage_bound(c), c.to_row()


@pytest.mark.parametrize("name", [n for n in NEW if SCENARIOS[n].family != "power"])
def test_n_star_off_family_is_covered_or_said_not_estimable(results, name) -> None:
    c = results[name]
    assert c.n_star_scored == c.studies
    assert c.n_star_ok >= 0.85, c.to_row()


@pytest.mark.parametrize("name", ["null_failures_k3", "null_heavy_tails_k3"])
def test_failures_and_heavy_tails_make_no_family_of_false_claims(results, name) -> None:
    c = results[name]
    assert c.familywise_false <= _familywise_bound(c), c.to_row()
    n, cov = c.min_size_coverage
    assert cov >= _coverage_bound(c), (n, c.size_coverage, c.to_row())


def test_the_coverage_check_fails_intervals_blind_to_tuning_noise(monkeypatch) -> None:
    """The checks above can fail: with the between-run variance dropped (what intervals from one
    configuration's re-runs held before issue 21), one run a cell with tuning noise of one point
    misses the coverage bound; with it estimated from the curves, the same studies pass."""
    import dataclasses

    import harness.report.noise as noise

    scenario = dataclasses.replace(SCENARIOS["null_tune_abs_k1"], name="null_tune_1pt_k1", tune_sd=0.01)
    honest = calibrate(scenario, studies=TARGET_STUDIES, n_boot=N_BOOT, seed=5)
    assert honest.min_size_coverage[1] >= _coverage_bound(honest), honest.to_row()
    assert honest.familywise_false <= _familywise_bound(honest), honest.to_row()
    monkeypatch.setattr(noise, "between_run_variance", lambda *a, **k: noise.BetweenRuns(0.0, 0.0))
    blind = calibrate(scenario, studies=TARGET_STUDIES, n_boot=N_BOOT, seed=5)
    assert blind.min_size_coverage[1] < _coverage_bound(blind), blind.to_row()


def test_the_new_scenarios_are_not_blind(results) -> None:
    """The estimator still finds what is there off the power law and with heavy tails."""
    assert results["two_phase_k3"].power >= 0.5, results["two_phase_k3"].to_row()
    assert results["catch_up_heavy_tails_k3"].rate("inconclusive") < 1.0, results["catch_up_heavy_tails_k3"].to_row()
    assert not math.isnan(results["sigmoid_catch_up_k3"].n_star_ok)

"""The verdict's calibration on simulated studies with known truth (harness.report.simulate):
coverage of the n* interval, winners named where there are none, per-size claims the truth
contradicts. 200 studies per scenario; the figures are the ones the README's table reports."""

from __future__ import annotations

import pytest

from harness.report.simulate import SCENARIOS, calibrate

STUDIES = 200
N_BOOT = 150


@pytest.fixture(scope="module")
def results():
    return {name: calibrate(s, studies=STUDIES, n_boot=N_BOOT, seed=11) for name, s in SCENARIOS.items()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
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
    assert results["null_low_noise"].rate("equivalent") >= 0.80, results["null_low_noise"].to_row()


@pytest.mark.parametrize("name", ["catch_up", "crossover", "catch_up_uneven_noise"])
def test_the_n_star_interval_covers_the_truth(results, name) -> None:
    c = results[name]
    assert c.n_star_reported >= 0.9 * c.studies
    assert c.coverage >= 0.90, c.to_row()


@pytest.mark.parametrize("name, status", [("finetune_ahead", "finetune_ahead"), ("negative_transfer", "scratch_ahead")])
def test_clear_differences_are_found(results, name, status) -> None:
    """Calibrated is not the same as blind: a gap of 6+ points everywhere is named in most studies."""
    assert results[name].rate(status) >= 0.5, results[name].to_row()

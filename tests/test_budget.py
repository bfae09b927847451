"""The budget promise, as the README words it: tune.n_trials is exact; a FLOPs or wall-clock budget
is checked before each trial starts, so one worker overshoots it by less than its last trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from harness.tuning.budget import Budget
from harness.tuning.tune import tune_cell
from tuning_helpers import compose_tune, load, set_space


def _trial(state: TrialState, **attrs: float | bool) -> optuna.trial.FrozenTrial:
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)},
                        user_attrs=attrs)


@pytest.mark.parametrize("limit, attr", [("max_flops", "flops"), ("max_wall_s", "wall_s")])
def test_a_flops_or_wall_budget_is_spent_exactly_when_the_finished_trials_reach_it(limit, attr):
    budget = Budget(None, 10.0 if limit == "max_flops" else None, 10.0 if limit == "max_wall_s" else None)
    below = [_trial(TrialState.COMPLETE, **{attr: 4.0}), _trial(TrialState.PRUNED, **{attr: 5.9})]
    assert not budget.exhausted(below)  # 9.9 of 10: one more trial may start, and may overshoot
    assert budget.exhausted(below + [_trial(TrialState.FAIL, **{attr: 0.1})])  # failed trials count
    # An interrupted trial is no verdict on its parameters: its cost does not count, its re-run's does.
    assert not budget.exhausted(below + [_trial(TrialState.FAIL, interrupted=True, **{attr: 50.0})])


def _lr_cfg(tmp_path, *budget: str):
    cfg = compose_tune(tmp_path, *budget, "study.seeds=1", "train.steps=10")
    return set_space(cfg, {"lr": {"key": "train.lr", "type": "float", "low": 0.002, "high": 0.004}})


def test_a_wall_clock_budget_lets_no_trial_start_once_spent(tmp_path):
    """tune.max_wall_s, smaller than any trial: the first trial starts (nothing was spent), no
    second does. That is the whole overshoot there is: less than one trial."""
    tune_cell(_lr_cfg(tmp_path, "tune.n_trials=null", "tune.max_wall_s=1e-6"), tmp_path / "runs")
    study = load(tmp_path)
    assert study.user_attrs["budget"] == {"n_trials": None, "max_flops": None, "max_wall_s": 1e-6}
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["wall_s"] > 1e-6
    assert len(study.user_attrs["final"]) == 1  # the spent cell still re-runs its best


def test_a_wall_clock_budget_stops_at_the_first_trial_that_reaches_it(tmp_path):
    """Resumed with a wall budget between what one and what two trials spent: exactly one more
    trial runs, and the total overshoots the budget by less than that trial."""
    tune_cell(_lr_cfg(tmp_path, "tune.n_trials=1"), tmp_path / "runs")
    first = load(tmp_path).trials[0].user_attrs["wall_s"]
    limit = first * 1.000001  # spent after the next trial, whatever its length
    tune_cell(_lr_cfg(tmp_path, "tune.n_trials=null", f"tune.max_wall_s={limit}"), tmp_path / "runs")
    walls = [t.user_attrs["wall_s"] for t in load(tmp_path).trials]
    assert len(walls) == 2
    assert sum(walls[:-1]) < limit <= sum(walls) < limit + walls[-1]


def test_a_trial_budget_is_exact(tmp_path):
    tune_cell(_lr_cfg(tmp_path, "tune.n_trials=3", "tune.enqueue_recipe=false"), tmp_path / "runs")
    tune_cell(_lr_cfg(tmp_path, "tune.n_trials=3", "tune.enqueue_recipe=false"), tmp_path / "runs")  # resumed: nothing more
    assert len(load(tmp_path).trials) == 3

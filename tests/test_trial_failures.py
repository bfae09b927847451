"""What a failing trial leaves behind: a trial that raises (out of memory included) is stored as
FAIL with its reason and the study goes on; a trial whose worker died `storage.max_retry` times
counts as one failed trial; a pruned trial's W&B run ends `pruned`."""

from __future__ import annotations

import optuna
import torch
from optuna.trial import TrialState

import harness.training.module
import harness.tuning.tune
import harness.tuning.workers
from harness.store.storage import fail_stale_trials
from harness.tuning.tune import tune_cell
from harness.store.records import spent
from test_tuning_wandb import _runs
from tuning_helpers import age_heartbeats, compose_tune, load, set_space

LRS = {"lr": {"key": "train.lr", "type": "categorical", "choices": [0.001, 0.002, 0.003]}}
RECIPES = {"a": {"lr": 0.001}, "b": {"lr": 0.002}, "c": {"lr": 0.003}}


def _cfg(tmp_path, *more: str):
    cfg = compose_tune(tmp_path, "tune.n_trials=3", "train.steps=10", "study.seeds=1", *more)
    return set_space(cfg, LRS, recipes=RECIPES)


def test_a_trial_that_raises_or_runs_out_of_memory_fails_with_its_reason_and_the_study_goes_on(tmp_path, monkeypatch):
    """Trial 0 raises inside the training step (through Lightning, as a real fault would), trial 1
    runs out of memory there (torch's own OutOfMemoryError, what CUDA raises), trial 2 is sound."""
    real_step = harness.training.module.Classifier.training_step
    faults = {0.001: RuntimeError("something broke\nsecond line"),
              0.002: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")}

    def step(self, batch, batch_idx):
        fault = faults.get(float(self.cfg.lr))
        if fault is not None and self.global_step == 3:
            raise fault
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(harness.training.module.Classifier, "training_step", step)
    tune_cell(_cfg(tmp_path), tmp_path / "runs")

    study = load(tmp_path)
    broke, oom, sound = study.trials
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert broke.user_attrs["fail_reason"] == "RuntimeError: something broke"
    assert oom.user_attrs["fail_reason"] == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    for t in (broke, oom):
        assert t.value is None and t.user_attrs["wall_s"] > 0
    assert sound.params == {"lr": 0.003} and 0 <= sound.value <= 1
    assert spent(study.trials)["n_trials"] == 3  # failed trials count
    assert study.user_attrs["best_trial"] == sound.number and len(study.user_attrs["final"]) == 1


def _dead_worker_trial(study: optuna.Study) -> optuna.Trial:
    """A trial taken the way harness-tune takes one (asked, one heartbeat), by a worker that then dies."""
    trial = study.ask()
    harness.tuning.workers._beat_once(study._storage, trial._trial_id)
    return trial


def test_a_trial_killed_max_retry_times_counts_as_one_failed_trial(tmp_path):
    cfg = _cfg(tmp_path, "tune.n_trials=2", "tune.enqueue_recipe=false", "storage.max_retry=1",
               "storage.heartbeat_interval=1", "storage.grace_period=60")
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    first = _dead_worker_trial(study)
    first.suggest_categorical("lr", [0.001, 0.002, 0.003])
    assert fail_stale_trials(study) == 0  # alive: within its grace period
    age_heartbeats(tmp_path / "tune.db")
    assert fail_stale_trials(study) == 1  # dead: failed, and re-queued once (max_retry=1)
    again = _dead_worker_trial(study)  # the re-queued copy, taken by a worker that dies too
    assert again.params == first.params
    age_heartbeats(tmp_path / "tune.db")
    assert fail_stale_trials(study) == 1  # failed again, and not re-queued: retries are spent

    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert spent(trials)["n_trials"] == 1  # the retried attempt gives way to its retry, which counts
    tune_cell(cfg, tmp_path / "runs")  # the cell's other trial, and no more
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert spent(trials)["n_trials"] == 2


class _PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report and nothing else: a pruned trial on demand."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_a_pruned_trials_wandb_run_ends_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(harness.tuning.tune, "make_pruner", lambda cfg: _PruneTrialOne())
    cfg = _cfg(tmp_path, "train.steps=20", "logger=wandb", f"logger.dir={tmp_path / 'wb'}")
    tune_cell(cfg, tmp_path / "runs")

    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    state = {r["config"]["trial"]["number"]: r["summary"]["final_state"] for r in _runs(tmp_path / "wb")
             if "trial" in r["config"]}
    assert state == {0: "complete", 1: "pruned", 2: "complete"}

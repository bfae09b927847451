"""harness-tune: one cell = one Optuna study. Every test asserts on the storage, the single source of
truth: study and trial attributes, pruning, resume, killed and concurrent workers, failures, config
errors, the test split, search spaces, multirun, secrets, FLOP budgets.

In-process tests compose the real conf/tune.yaml and call harness.tuning.tune.tune_cell; subprocess tests
(marked slow) are those where processes are the point.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from harness.settings import config
from harness.settings.schema import CellConfig, SearchSpaceConfig, has_path
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import harness.cli
import harness.tuning.budget
import harness.store.locks
import harness.store.records
import harness.tuning.pruning
import harness.tuning.rerun
import harness.training.run
import harness.training.fused
import harness.store.storage
import harness.tuning.tune
import harness.tuning.workers
from harness.data.task import build_task
from harness.errors import ConfigError
from harness.tuning.replicates import decode_correct, encode_correct
from harness.tuning.search_space import SearchSpace
from harness.tuning.tune import cell_of, tune_cell
from harness.store.records import spent
from tuning_helpers import (
    FINISHED,
    age_heartbeats,
    age_while_waiting,
    compose_tune,
    finished,
    load,
    run_tune,
    set_space,
    sqlite_trials,
    start_tune,
    study_names,
    tiny_overrides,
)

CONF = Path(harness.cli.CONFIG_DIR)
SANE_LR, DEAD_LR, EXPLODING_LR = 0.003, 1e-7, 1e6


def _lr_space(*choices: float) -> dict:
    return {"lr": {"key": "train.lr", "type": "categorical", "choices": list(choices)}}


def _steps_reported(trial: optuna.trial.FrozenTrial, val_every: int) -> set[int]:
    """The optimizer steps a trial that ran `steps` steps reports at: every val_every, and the end."""
    steps = int(trial.user_attrs["steps"])
    return set(range(val_every, steps + 1, val_every)) | {steps}


# ------------------------------------------------------------------------ the storage contract


def test_cell_study_and_trial_attrs(tmp_path):
    cfg = compose_tune(tmp_path, "tune.n_trials=3", pruner="hyperband")
    study = tune_cell(cfg, tmp_path / "runs")

    stored = load(tmp_path)
    assert cell_of(cfg).name == study.study_name == "digits/n000010/scratch/t0"
    attrs = stored.user_attrs
    assert attrs["strategy"] == "scratch" and attrs["n_train"] == 10 and attrs["study"] == "digits"
    assert (attrs["tuning"], attrs["draw"], attrs["seed"]) == (0, 0, 0)  # tuning run 0: the split cells always had
    assert attrs["budget"] == {"n_trials": 3, "max_flops": None, "max_wall_s": None}
    assert stored.direction == optuna.study.StudyDirection.MAXIMIZE

    final = attrs["final"]
    assert isinstance(final, list) and len(final) == cfg.study.seeds == 2
    assert [r["replicate"] for r in final] == [1, 2]
    assert [r["seed"] for r in final] == [1, 2]  # seed + r: never the tuning seed
    assert [r["subset"] for r in final] == [1, 2]  # training subset r: never tuning's (0)
    digest = build_task(cfg.data).test_split
    for row in final:
        assert set(row) == {"replicate", "seed", "subset", "val_acc", "test_acc", "flops", "wall_s", "n_test",
                            "test_split", "test_correct", "probe_acc", "status", "reason"}
        assert row["status"] == "ok" and row["reason"] is None or row["status"] == "collapsed"  # 10 images, 20 steps: chance is possible
        assert row["probe_acc"] is None  # scratch has no source to probe
        assert 0.0 <= row["val_acc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
        assert row["flops"] > 0 and row["wall_s"] > 0
        correct = decode_correct(row)
        assert correct is not None and len(correct) == row["n_test"] == cfg.data.n_test
        assert correct.mean() == row["test_acc"]
        assert row["test_split"] == digest  # every replicate on the one test split
    best = max((t for t in stored.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert attrs["best_trial"] == best.number and attrs["best_params"] == best.params

    trials = finished(stored)
    assert len(trials) == len(stored.trials) == 3
    # The three standard recipes go first, in their declared order, and count in the budget.
    assert [t.user_attrs.get("recipe_name") for t in trials] == ["adamw", "sgd", "adamw_long"]
    assert all(t.user_attrs.get("recipe") is True for t in trials)
    for t in trials:
        assert t.user_attrs["flops"] > 0 and t.user_attrs["wall_s"] > 0 and t.user_attrs["flops_per_step"] > 0
        assert t.intermediate_values, f"trial {t.number} reported nothing"
        if t.state == TrialState.COMPLETE:
            assert set(t.intermediate_values) == _steps_reported(t, 5)  # keyed by optimizer steps
            assert t.user_attrs["steps"] == t.params["steps"]
            assert t.value == t.intermediate_values[t.params["steps"]]
        # flops = every training step (plus evaluation) at flops_per_step
        assert t.user_attrs["flops"] >= t.user_attrs["steps"] * t.user_attrs["flops_per_step"]


def test_a_finetune_cell_runs_its_recipes_and_each_trial_carries_only_what_its_mode_uses(tmp_path):
    cfg = compose_tune(tmp_path, "strategy=finetune", "tune.n_trials=5", "study.seeds=1", "tune.n_startup_trials=5")
    tune_cell(cfg, tmp_path / "runs")

    study = load(tmp_path, "digits/n000010/finetune/t0")
    trials = finished(study)
    assert len(trials) == 5
    assert [t.user_attrs.get("recipe_name") for t in trials[:3]] == ["bit_sgd", "adamw_full", "lp_ft"]
    assert [t.params["mode"] for t in trials[:3]] == ["full", "full", "lp_ft"]
    assert trials[0].params["optimizer"] == "sgd" and trials[0].params["lr"] == 0.003
    assert trials[2].params["lp_fraction"] == 0.5
    for t in trials:
        assert set(t.params) == ALWAYS | USED_BY_MODE[t.params["mode"]], (t.number, t.params)
    best = study.user_attrs["best_params"]
    assert set(best) == ALWAYS | USED_BY_MODE[best["mode"]]  # the report's edge flags read these
    assert study.user_attrs["search_space"]["freeze_stages"]["when"] == {"mode": ["freeze"]}


@pytest.mark.parametrize("pruner", [["pruner=median", "pruner.n_startup_trials=1", "pruner.n_warmup_steps=0"],
                                    ["pruner=asha", "pruner.min_resource=5"]], ids=["median", "asha"])
def test_pruning_prunes_a_learning_rate_that_cannot_learn(tmp_path, pruner):
    cfg = compose_tune(tmp_path, "tune.n_trials=5", "train.steps=30", *pruner)
    cfg = set_space(cfg, _lr_space(SANE_LR, DEAD_LR), recipe={"lr": SANE_LR})
    tune_cell(cfg, tmp_path / "runs")

    trials = load(tmp_path).trials
    assert trials[0].params == {"lr": SANE_LR} and trials[0].state == TrialState.COMPLETE
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, f"nothing pruned: {[(t.params, t.state) for t in trials]}"
    assert all(t.params == {"lr": DEAD_LR} for t in pruned), "a sane configuration was pruned"
    assert all(t.params == {"lr": SANE_LR} for t in complete), "the dead learning rate ran to the end"
    full_flops = min(t.user_attrs["flops"] for t in complete)
    for t in pruned:
        assert t.intermediate_values, "a pruned trial lost its learning curve"
        last = max(t.intermediate_values)
        assert last < 30 and last == t.user_attrs["steps"]
        assert set(t.intermediate_values) == set(range(5, last + 1, 5))
        assert 0 < t.user_attrs["flops"] < full_flops
        assert 0 < t.user_attrs["wall_s"]


def test_resume_does_not_redo_completed_trials(tmp_path):
    def snapshot(t):
        return (t.number, t.state, t.params, t.value, t.intermediate_values, t.datetime_start,
                t.datetime_complete, t.user_attrs)

    tune_cell(compose_tune(tmp_path, "tune.n_trials=3", "study.seeds=1"), tmp_path / "runs")
    first = [snapshot(t) for t in load(tmp_path).trials]
    assert len(first) == 3

    tune_cell(compose_tune(tmp_path, "tune.n_trials=5", "study.seeds=1"), tmp_path / "runs")
    study = load(tmp_path)
    assert len(study.trials) == 5 and len(finished(study)) == 5
    assert [snapshot(t) for t in study.trials[:3]] == first
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert study.user_attrs["budget"]["n_trials"] == 5

    # A third call with the budget already spent runs nothing.
    tune_cell(compose_tune(tmp_path, "tune.n_trials=5", "study.seeds=1"), tmp_path / "runs")
    assert len(load(tmp_path).trials) == 5


def test_resume_with_a_better_trial_re_runs_the_new_best(tmp_path):
    """`final` belongs to the best trial: a resumed cell that finds a better one re-runs it."""
    def cfg_with_lr(low, high, n_trials):
        cfg = compose_tune(tmp_path, f"tune.n_trials={n_trials}", "study.seeds=1", "train.steps=15",
                           "tune.enqueue_recipe=false")
        return set_space(cfg, {"lr": {"key": "train.lr", "type": "float", "low": low, "high": high, "log": True}})

    tune_cell(cfg_with_lr(1e-7, 2e-7, 1), tmp_path / "runs")  # a learning rate that cannot learn
    before = load(tmp_path).user_attrs
    assert before["best_trial"] == 0 and len(before["final"]) == 1

    tune_cell(cfg_with_lr(0.005, 0.006, 2), tmp_path / "runs")
    study = load(tmp_path)
    assert study.trials[1].value > study.trials[0].value
    assert study.user_attrs["best_trial"] == 1
    assert study.user_attrs["best_params"] == study.trials[1].params
    assert study.user_attrs["final"] != before["final"]


def test_a_trial_taken_by_a_worker_that_dies_before_training_is_still_retried(tmp_path):
    """Between taking a trial and its first heartbeat a worker can die too; Optuna never fails a
    RUNNING trial that has no heartbeat, so taking one must record it."""
    cfg = compose_tune(tmp_path, "tune.n_trials=2", "storage.heartbeat_interval=1", "storage.grace_period=600")
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    taken = harness.tuning.tune.take_trial(study, cfg, budget)  # ...and the worker dies here
    assert load(tmp_path).trials[taken.number].state == TrialState.RUNNING

    assert harness.store.storage.fail_stale_trials(study) == 0  # within its grace period
    assert age_heartbeats(tmp_path / "tune.db") == 1  # the one heartbeat taking it recorded, now old
    assert harness.store.storage.fail_stale_trials(study) == 1
    trials = load(tmp_path).trials
    assert trials[taken.number].state == TrialState.FAIL
    assert [t.state for t in trials if t.system_attrs.get("failed_trial") == taken.number] == [TrialState.WAITING]


# --------------------------------------------------------------------------- failing trials


def test_a_diverging_trial_fails_and_the_study_continues(tmp_path):
    cfg = compose_tune(tmp_path, "tune.n_trials=5", "train.steps=10", "study.seeds=1")
    cfg = set_space(cfg, _lr_space(SANE_LR, EXPLODING_LR), recipe={"lr": SANE_LR})
    tune_cell(cfg, tmp_path / "runs")

    study = load(tmp_path)
    trials = study.trials
    assert len(trials) == 5 and all(t.state in FINISHED for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, f"lr={EXPLODING_LR} was never sampled: {[t.params for t in trials]}"
    for t in failed:
        assert t.params == {"lr": EXPLODING_LR}
        assert "diverged" in t.user_attrs["fail_reason"]
        assert t.value is None
        assert t.user_attrs["flops"] > 0 and t.user_attrs["wall_s"] > 0 and t.user_attrs["flops_per_step"] > 0
    later = [t for t in trials if t.number > failed[0].number and t.state == TrialState.COMPLETE]
    assert later, "no trial completed after the diverged one"
    assert all(t.params == {"lr": SANE_LR} for t in trials if t.state == TrialState.COMPLETE)
    assert len(study.user_attrs["final"]) == 1


@pytest.mark.parametrize("overrides, words", [
    (["tune.n_trials=0"], "tune.n_trials"),
    (["tune.n_trials=null"], "no budget"),
    (["tune.max_flops=-1"], "tune.max_flops"),
    (["search_space.params.lr.low=0.5"], "low=0.5"),
    (["search_space.params.lr.type=gaussian"], "type=gaussian"),
    (["data.n_train=5000"], "data.n_train"),
    (["strategy=finetune", "data.n_train=5000"], "data.n_train"),
    (["study.seeds=0"], "study.seeds"),
    (["pruner.name=bogus"], "pruner=bogus"),
    (["model.name=no_such_model_xyz"], "no_such_model_xyz"),
])
def test_config_errors_fail_before_any_trial(tmp_path, overrides, words):
    cfg = compose_tune(tmp_path, *overrides, typed=False)
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")) as err:
        tune_cell(config.load(CellConfig, cfg), tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert study_names(tmp_path) == []  # no study, hence no trial, for this (or any) cell
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pretrained").exists()


@pytest.mark.parametrize("fuse", [False, True])
def test_the_test_split_is_read_only_by_the_reruns_of_the_best(tmp_path, monkeypatch, fuse):
    test_splits, runs, test_reads = [], [], []
    real_build_task, real_eval_batches, real_run = harness.training.run.build_task, harness.training.run.eval_batches, harness.tuning.tune.run_training
    real_members, real_stacked = harness.tuning.rerun.train_members, harness.training.fused._stacked_eval

    def build_task(data, role="target", pool=None):
        task = real_build_task(data, role, pool)
        test_splits.append(task.test)
        return task

    def eval_batches(images, *args, **kwargs):
        if any(images is split for split in test_splits):
            test_reads.append(runs[-1][0])
        return real_eval_batches(images, *args, **kwargs)

    def run_training(cfg, run_dir, **kwargs):
        runs.append((run_dir.name, kwargs.get("evaluate_test", True)))
        return real_run(cfg, run_dir, **kwargs)

    def train_members(cfgs, run_dirs, **kwargs):
        runs.append(("+".join(d.name for d in run_dirs), True))
        return real_members(cfgs, run_dirs, **kwargs)

    def stacked_eval(tasks, split, *args):
        if split == "test":
            test_reads.append(runs[-1][0])
        return real_stacked(tasks, split, *args)

    monkeypatch.setattr(harness.training.run, "build_task", build_task)
    monkeypatch.setattr(harness.training.run, "eval_batches", eval_batches)
    monkeypatch.setattr(harness.tuning.tune, "run_training", run_training)
    monkeypatch.setattr(harness.tuning.rerun, "run_training", harness.tuning.tune.run_training)  # the replicates' runs
    monkeypatch.setattr(harness.tuning.rerun, "train_members", train_members)  # fused
    monkeypatch.setattr(harness.training.fused, "_stacked_eval", stacked_eval)

    cfg = compose_tune(tmp_path, "tune.n_trials=3", "study.seeds=2", f"trainer.fuse={str(fuse).lower()}", pruner="hyperband")
    tune_cell(cfg, tmp_path / "runs")

    trial_runs = [r for r in runs if r[0].startswith("trial-")]
    assert len(trial_runs) == 3 and all(evaluate is False for _, evaluate in trial_runs)
    # count = study.seeds (fused: one pass for both members), nothing during trials
    assert test_reads == (["final-seed1+final-seed2"] if fuse else ["final-seed1", "final-seed2"])
    final = load(tmp_path).user_attrs["final"]
    assert len(final) == 2 and all(r["test_acc"] is not None for r in final)


def test_without_the_rerun_of_the_best_nothing_reads_the_test_split(tmp_path, monkeypatch):
    """What the benchmarks use (tune_cell(rerun=False)): trials only, no `final`, no test split."""
    evaluated, real = [], harness.tuning.tune.run_training
    monkeypatch.setattr(harness.tuning.tune, "run_training",
                        lambda cfg, run_dir, **kw: evaluated.append(kw.get("evaluate_test", True)) or real(cfg, run_dir, **kw))
    monkeypatch.setattr(harness.tuning.rerun, "run_training", harness.tuning.tune.run_training)  # the replicates' runs
    tune_cell(compose_tune(tmp_path, "tune.n_trials=2", "train.steps=10", "~search_space.params.steps"), tmp_path / "runs",
              rerun=False)
    assert evaluated == [False, False] and "final" not in load(tmp_path).user_attrs


class _Replicates:
    """Wraps run_training (of harness.tuning.tune and harness.tuning.rerun) and the fused members' training
    (`members`, for harness.tuning.rerun.train_members): records each re-run's seed and subset, and can
    interrupt the n-th re-run (as Ctrl-C would; fused, the whole group it trains in) to show what an
    interrupted extension keeps."""

    def __init__(self, real, interrupt_at: int | None = None):
        self.real, self.interrupt_at, self.runs = real, interrupt_at, []
        self.real_members = harness.tuning.rerun.train_members

    def _count(self, cfg) -> None:
        self.runs.append((int(cfg.seed), int(cfg.data.subset)))
        if len(self.runs) == self.interrupt_at:
            raise KeyboardInterrupt("replicate interrupted")

    def __call__(self, cfg, run_dir, **kwargs):
        if run_dir.name.startswith("final-"):
            self._count(cfg)
        return self.real(cfg, run_dir, **kwargs)

    def members(self, cfgs, run_dirs, **kwargs):
        for cfg in cfgs:
            self._count(cfg)
        return self.real_members(cfgs, run_dirs, **kwargs)


def _track_replicates(monkeypatch, replicates: _Replicates) -> None:
    monkeypatch.setattr(harness.tuning.tune, "run_training", replicates)
    monkeypatch.setattr(harness.tuning.rerun, "run_training", replicates)  # the replicates' runs, one at a time
    monkeypatch.setattr(harness.tuning.rerun, "train_members", replicates.members)  # and fused


def _stored(records):
    """The stored form of the re-run records a call returned (None stays None)."""
    return None if records is None else [r.to_json() for r in records]


def _check_records(final: list[dict], n_test: int) -> None:
    assert [r["replicate"] for r in final] == list(range(1, len(final) + 1))
    assert [(r["seed"], r["subset"]) for r in final] == [(r, r) for r in range(1, len(final) + 1)]  # base seed 0
    assert len({r["test_split"] for r in final}) == 1
    for r in final:
        correct = decode_correct(r)
        assert correct is not None and len(correct) == n_test and correct.mean() == r["test_acc"]


@pytest.mark.parametrize("fuse", [False, True])
def test_replicates_train_on_their_own_subsets_and_extend(tmp_path, monkeypatch, fuse):
    """One at a time or fused (trainer.fuse), each replicate has its own seed and subset, an extension
    runs only the missing ones, and an interruption keeps what finished: one at a time, every
    replicate before it; fused, the groups before the interrupted one."""
    real = harness.tuning.tune.run_training
    trial_subsets = []

    def tracked(cfg, run_dir, **kwargs):
        if run_dir.name.startswith("trial-"):
            trial_subsets.append((int(cfg.seed), int(cfg.data.subset)))
        return real(cfg, run_dir, **kwargs)

    _track_replicates(monkeypatch, replicates := _Replicates(tracked))
    cfg = compose_tune(tmp_path, "tune.n_trials=1", "study.seeds=2", "train.steps=10", "~search_space.params.steps",
                       "data.n_test=60", f"trainer.fuse={str(fuse).lower()}")
    tune_cell(cfg, tmp_path / "runs")
    assert trial_subsets == [(0, 0)] and replicates.runs == [(1, 1), (2, 2)]  # tuning: seed 0, subset 0
    first = load(tmp_path).user_attrs["final"]
    _check_records(first, 60)

    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    def extend(*args, **kwargs):
        return _stored(harness.tuning.rerun.extend_replicates(*args, **kwargs))

    _track_replicates(monkeypatch, replicates := _Replicates(real))
    final = extend(load(tmp_path), cfg, space, tmp_path / "runs", target=4)
    assert replicates.runs == [(3, 3), (4, 4)]  # only the missing ones, each with its seed and subset
    assert final == load(tmp_path).user_attrs["final"] and final[:2] == first
    _check_records(final, 60)

    # Already there: nothing trains, the records come back unchanged.
    assert extend(load(tmp_path), cfg, space, tmp_path / "runs", target=4) == final
    assert extend(load(tmp_path), cfg, space, tmp_path / "runs", target=2) == final
    assert replicates.runs == [(3, 3), (4, 4)]

    # Interrupted at replicate 6: one at a time, replicate 5 is kept and the next call runs only 6;
    # fused, 5 and 6 train as one group, so neither is kept and the next call runs both.
    _track_replicates(monkeypatch, replicates := _Replicates(real, interrupt_at=2))
    with pytest.raises(KeyboardInterrupt):
        extend(load(tmp_path), cfg, space, tmp_path / "runs", target=6)
    kept = 4 if fuse else 5
    assert replicates.runs == [(5, 5), (6, 6)] and len(load(tmp_path).user_attrs["final"]) == kept
    _track_replicates(monkeypatch, replicates := _Replicates(real))
    final = extend(load(tmp_path), cfg, space, tmp_path / "runs", target=6)
    assert replicates.runs == [(r, r) for r in range(kept + 1, 7)] and len(final) == 6
    _check_records(final, 60)
    assert load(tmp_path).user_attrs["best_trial"] == 0

    # Another worker holds the cell's re-run lock: without waiting, nothing to do here.
    study = load(tmp_path)
    with harness.store.locks.rerun_lock(study._storage, study.study_name, blocking=True):
        assert extend(study, cfg, space, tmp_path / "runs", target=7, wait=False) is None
    # `final` of an earlier best: extending it would mix two configurations.
    study.set_user_attr("best_trial", -1)
    assert extend(study, cfg, space, tmp_path / "runs", target=7) is None
    assert replicates.runs == [(r, r) for r in range(kept + 1, 7)]


def test_a_cell_without_final_has_nothing_to_extend(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(harness.tuning.tune, "run_training", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(harness.tuning.rerun, "run_training", harness.tuning.tune.run_training)  # the replicates' runs
    cfg = compose_tune(tmp_path, "tune.n_trials=1")
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    assert harness.tuning.rerun.extend_replicates(study, cfg, space, tmp_path / "runs", target=3) is None  # no trial
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": lr}, value=0.5))
    assert harness.tuning.rerun.extend_replicates(study, cfg, space, tmp_path / "runs", target=3) is None  # no final
    assert calls == [] and "final" not in load(tmp_path).user_attrs


def test_two_workers_extending_one_cell_run_each_replicate_once(tmp_path, monkeypatch):
    """Both wait for the lock; the second reads `final` after taking it and finds nothing left."""
    cfg = compose_tune(tmp_path, "tune.n_trials=1", "study.seeds=1", "train.steps=10", "~search_space.params.steps")
    tune_cell(cfg, tmp_path / "runs")
    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    _track_replicates(monkeypatch, replicates := _Replicates(harness.tuning.tune.run_training))
    results = []
    workers = [threading.Thread(target=lambda: results.append(_stored(harness.tuning.rerun.extend_replicates(
        load(tmp_path), cfg, space, tmp_path / "runs", target=3)))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert sorted(replicates.runs) == [(2, 2), (3, 3)]
    assert len(results) == 2 and results[0] == results[1] == load(tmp_path).user_attrs["final"]
    _check_records(results[0], int(cfg.data.n_test))


def test_budget_by_flops_stops_once_spent(tmp_path):
    def cfg(*budget):
        c = compose_tune(tmp_path, *budget, "study.seeds=1", "train.steps=10")
        return set_space(c, {"lr": {"key": "train.lr", "type": "float", "low": 0.002, "high": 0.004}})

    tune_cell(cfg("tune.n_trials=1"), tmp_path / "runs")  # measures what one trial costs
    one_trial = load(tmp_path).trials[0].user_attrs["flops"]
    max_flops = 2.5 * one_trial  # identical trials but for lr: the third one crosses the line
    tune_cell(cfg("tune.n_trials=null", f"tune.max_flops={max_flops}"), tmp_path / "runs")

    study = load(tmp_path)
    assert study.user_attrs["budget"] == {"n_trials": None, "max_flops": max_flops, "max_wall_s": None}
    flops = [t.user_attrs["flops"] for t in study.trials]
    assert len(flops) == 3 and all(math.isclose(f, one_trial) for f in flops)
    assert sum(flops[:-1]) < max_flops <= sum(flops)  # it started a trial only while budget was left


def _spent_flops(study: optuna.Study) -> tuple[float, float]:
    """(FLOPs the cell's tuning spent, the largest single trial's FLOPs)."""
    flops = [float(t.user_attrs["flops"]) for t in study.trials if t.state in FINISHED]
    return sum(flops), max(flops)


def test_a_flops_budget_is_n_trials_reference_trials_of_the_cells_own_steps_range(tmp_path):
    """harness-tune alone: the reference trial is one full-training step of the model on a real batch
    times the midpoint of this cell's steps range (10-20 here: 15), plus that trial's validations."""
    cfg = compose_tune(tmp_path, "tune.budget=flops", "tune.n_trials=3", "study.seeds=1", pruner="hyperband")
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    ref = budget.reference
    assert (budget.kind, ref.steps, ref.steps_from, ref.validations) == ("flops", 15, "midpoint of this cell's steps range 10-20", 3)
    assert ref.batch_size == 10 and ref.trial_flops == pytest.approx(15 * ref.step_flops + ref.val_flops)
    assert budget.max_flops == pytest.approx(3 * ref.trial_flops)
    assert budget.n_trials == harness.tuning.budget.FLOPS_TRIAL_GUARD * 3  # a guard, not the budget
    # The reference's step is what a real full-training trial of that batch counts per step.
    task = build_task(cfg.data)
    real = harness.training.run.run_training(space.apply(cfg, {"steps": 15, "batch_size": 64}), tmp_path / "one", evaluate_test=False)
    assert ref.step_flops == pytest.approx(real.compute.flops_per_step)
    assert ref.val_flops == pytest.approx(real.compute.eval_flops)
    assert len(task.val) == 50

    tune_cell(cfg, tmp_path / "runs")
    study = load(tmp_path)
    assert study.user_attrs["budget"] == budget.to_json()
    stored = harness.store.records.TuningRunRecord.of(study).budget  # read back typed
    assert (stored.kind, stored.max_flops, stored.n_trials, stored.reference) == ("flops", budget.max_flops, budget.n_trials, ref)
    assert study.user_attrs["budget"]["kind"] == "flops" and study.user_attrs["budget"]["reference"] == ref.to_json()
    spent, largest = _spent_flops(study)
    assert budget.max_flops <= spent < budget.max_flops + largest  # the last trial may overshoot, by less than one
    # tune.reference_steps fixes the reference whatever the cell's own range
    fixed = compose_tune(tmp_path, "tune.budget=flops", "tune.n_trials=3", "tune.reference_steps=40")
    ref40 = harness.tuning.tune.check_cell_config(fixed)[1].reference
    assert (ref40.steps, ref40.steps_from) == (40, "tune.reference_steps")
    assert ref40.step_flops == ref.step_flops and ref40.trial_flops > ref.trial_flops


def test_tune_max_flops_is_the_flops_budget_and_trials_is_the_default(tmp_path):
    cfg = compose_tune(tmp_path, "tune.budget=flops", "tune.max_flops=1e9", "tune.n_trials=null", "tune.max_wall_s=60")
    budget = harness.tuning.tune.check_cell_config(cfg)[1]
    assert (budget.max_flops, budget.n_trials, budget.max_wall_s, budget.reference) == (1e9, None, 60.0, None)
    assert compose_tune(tmp_path).tune.budget == "trials"
    assert harness.tuning.tune.check_cell_config(compose_tune(tmp_path, "tune.n_trials=4"))[1] == harness.tuning.budget.Budget(4, None, None)


@pytest.mark.parametrize("overrides, words", [
    (["tune.budget=compute"], "tune.budget=compute is not one of trials, flops: set tune.budget=trials"),
    (["tune.budget=flops", "tune.n_trials=null", "tune.max_wall_s=60"], "tune.budget=flops needs tune.max_flops or tune.n_trials"),
    (["tune.reference_steps=0"], "tune.reference_steps=0 must be an integer >= 1"),
    (["tune.reference_steps=1.5"], "tune.reference_steps=1.5"),
    (["pruner.max_resource=0"], "pruner.max_resource=0 must be an integer >= 1"),
    (["pruner.max_resource=abc"], "pruner.max_resource=abc must be an integer"),
    (["strategy=finetune", "strategy.pretrain_flops=-1"], "strategy.pretrain_flops=-1 must be a number >= 0"),
    (["strategy=finetune", "strategy.pretrain_flops=1e18"], "own pretraining .* is measured: remove strategy.pretrain_flops"),
])
def test_budget_pruner_and_pretraining_settings_are_checked_at_start_up(tmp_path, overrides, words):
    cfg = compose_tune(tmp_path, *overrides, pruner="hyperband", typed=False)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        tune_cell(config.load(CellConfig, cfg), tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert study_names(tmp_path) == [] and not (tmp_path / "pretrained").exists()


def test_the_cell_stores_its_pruner_and_the_max_resource_it_used(tmp_path):
    cfg = compose_tune(tmp_path, "tune.n_trials=1", "study.seeds=1", pruner="hyperband")
    assert harness.tuning.pruning.make_pruner(cfg)._max_resource == 20  # null: the cell's own steps.high
    tune_cell(cfg, tmp_path / "runs")
    assert load(tmp_path).user_attrs["pruner"] == {"name": "hyperband", "min_resource": 5, "max_resource": 20,
                                                   "reduction_factor": 3, "max_resource_from": "steps.high"}
    wider = compose_tune(tmp_path, "tune.n_trials=2", "study.seeds=1", "pruner.max_resource=40", pruner="hyperband")
    assert harness.tuning.pruning.make_pruner(wider)._max_resource == 40
    tune_cell(wider, tmp_path / "runs")  # resumed with another pruner setting: the attr says what it uses now
    stored = load(tmp_path).user_attrs["pruner"]
    assert (stored["max_resource"], stored["max_resource_from"]) == (40, "pruner.max_resource")
    asha = compose_tune(tmp_path, pruner="asha")
    assert harness.tuning.pruning.pruner_attrs(asha).max_resource is None  # successive halving plans for no maximum


# ----------------------------------------------------------------------------- search spaces


def _expected(spec: dict):
    if spec["type"] == "categorical":
        return CategoricalDistribution(spec["choices"])
    if spec["type"] == "int":
        return IntDistribution(spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step", 1))
    return FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step"))


def distributions(space: SearchSpace) -> dict:
    """name -> distribution, in the order the table declares them."""
    return {p.name: p.distribution for p in space.params}


@pytest.mark.parametrize("strategy", ["scratch", "finetune"])
def test_search_space_files_parse_into_their_distributions(strategy):
    raw = yaml.safe_load((CONF / "search_space" / f"{strategy}.yaml").read_text())
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = config.load(CellConfig, compose(config_name="tune", overrides=[f"strategy={strategy}"]))
    space = SearchSpace.from_config(cfg.search_space, base=cfg)

    assert list(distributions(space)) == list(raw["params"])
    for name, spec in raw["params"].items():
        assert distributions(space)[name] == _expected(spec), name
        assert [p.key for p in space.params if p.name == name] == [spec["key"]]
        assert has_path(cfg, spec["key"])
    assert {p.name: {k: list(v) for k, v in p.when.items()} for p in space.params if p.when} == {
        name: {k: v if isinstance(v, list) else [v] for k, v in spec["when"].items()}
        for name, spec in raw["params"].items() if "when" in spec}
    # Three recipes, each inside the space as declared and carrying only what its mode uses.
    assert [r.name for r in space.recipes] == list(raw["recipes"]) and len(raw["recipes"]) == 3
    assert [(r.name, r.values) for r in space.recipes_within_space()] == list(raw["recipes"].items())
    for recipe, values in raw["recipes"].items():
        for name, value in values.items():
            d = distributions(space)[name]
            assert d._contains(d.to_internal_repr(value)), (recipe, name)
        used = [p.name for p in space.order if p.applies(values)]
        assert sorted(used) == sorted(values), f"{recipe} must set exactly the parameters its values use"


def test_search_space_shell_overrides():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = config.load(CellConfig, compose(config_name="tune", overrides=["search_space.params.lr.high=0.5",
                                                               "search_space.params.steps.step=25",
                                                               "search_space.params.augment.choices=[off,strong]",
                                                               "~search_space.params.warmup"]))
    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    declared = yaml.safe_load((CONF / "search_space" / "scratch.yaml").read_text())["params"]
    assert distributions(space)["lr"] == FloatDistribution(declared["lr"]["low"], 0.5, log=True)
    assert distributions(space)["steps"] == IntDistribution(declared["steps"]["low"], declared["steps"]["high"], step=25)
    assert distributions(space)["augment"] == CategoricalDistribution(["off", "strong"])
    assert "warmup" not in distributions(space)
    assert all("warmup" not in r.values for r in space.recipes_within_space())

    # A narrowed range moves the recipes inside it.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = config.load(CellConfig, compose(config_name="tune", overrides=["search_space.params.lr.low=0.01"]))
    fitted = {r.name: r.values["lr"] for r in SearchSpace.from_config(cfg.search_space, base=cfg).recipes_within_space()}
    assert fitted == {"adamw": 0.01, "sgd": 0.025, "adamw_long": 0.01}


@pytest.mark.parametrize("spec, words", [
    ({"key": "train.lr", "type": "gaussian", "low": 0.1, "high": 1}, "type=gaussian"),
    ({"key": "train.lr", "type": "float", "low": 0.0, "high": 1, "log": True}, "low > 0"),
    ({"key": "train.lr", "type": "float", "low": -1.0, "high": 1, "log": True}, "low > 0"),
    ({"key": "train.lr", "type": "float", "high": 1}, "needs low"),
    ({"key": "train.lr", "type": "float", "low": 1.0, "high": 0.1}, "below high"),
    ({"key": "train.lr", "type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}, "cannot be combined"),
    ({"key": "train.steps", "type": "int", "low": 1.5, "high": 10}, "integers"),
    ({"key": "train.optimizer", "type": "categorical", "choices": []}, "choices is empty"),
    ({"type": "float", "low": 0.1, "high": 1}, "needs a key"),
    ({"key": "train.learning_rate", "type": "float", "low": 0.1, "high": 1}, "not a config key"),
])
def test_bad_search_space_entries_raise_config_errors(tmp_path, spec, words):
    cfg = compose_tune(tmp_path)
    node = SearchSpaceConfig(params={"lr": spec})
    with pytest.raises(ConfigError, match=words):
        SearchSpace.from_config(node, base=cfg)


def test_an_empty_search_space_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        SearchSpace.from_config(SearchSpaceConfig(params={}), base=compose_tune(tmp_path))


# ------------------------------------------------------- conditional spaces, recipes, sampler seeds

COND = {  # a crafted conditional space on keys every run config has
    "optimizer": {"key": "train.optimizer", "type": "categorical", "choices": ["adamw", "sgd"]},
    "lr": {"key": "train.lr", "type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "momentum": {"key": "train.momentum", "type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": "sgd"}},
}


def _space(params: dict, recipes: dict | list | None = None, base=None) -> SearchSpace:
    node = {"params": params} if recipes is None else {"params": params, "recipes": recipes}
    return SearchSpace.from_config(SearchSpaceConfig(**node), base=base)


def _finetune_space() -> tuple[SearchSpace, object]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = config.load(CellConfig, compose(config_name="tune", overrides=["strategy=finetune"]))
    return SearchSpace.from_config(cfg.search_space, base=cfg), cfg


USED_BY_MODE = {"full": {"layer_decay"}, "linear_probe": set(), "lp_ft": {"layer_decay", "lp_fraction"},
                "freeze": {"layer_decay", "freeze_stages"}}
ALWAYS = {"lr", "optimizer", "weight_decay", "label_smoothing", "batch_size", "warmup", "augment", "steps", "mode"}


def test_a_conditional_parameter_is_sampled_only_where_its_condition_holds():
    space, cfg = _finetune_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.5)
        frozen = study.trials[-1]
        assert set(frozen.params) == set(values) == ALWAYS | USED_BY_MODE[values["mode"]], values
        seen.add(values["mode"])
    assert seen == set(USED_BY_MODE)

    # apply writes only what was sampled: a linear probe keeps the config's own decay and depth.
    probe = {"mode": "linear_probe", "lr": 0.01}
    out = space.apply(cfg, probe)
    assert out.strategy.mode == "linear_probe" and out.train.lr == 0.01
    assert out.strategy.layer_decay == cfg.strategy.layer_decay and out.strategy.freeze_stages == cfg.strategy.freeze_stages


def test_parents_are_sampled_before_the_parameters_that_depend_on_them():
    params = {"momentum": COND["momentum"], "lr": COND["lr"], "optimizer": COND["optimizer"]}  # child declared first
    space = _space(params)
    assert [p.name for p in space.order] == ["optimizer", "momentum", "lr"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    draws = [space.suggest(study.ask()) for _ in range(20)]
    assert {("momentum" in d) for d in draws} == {True, False}
    assert all(("momentum" in d) == (d["optimizer"] == "sgd") for d in draws)


@pytest.mark.parametrize("when, words", [
    ({"optimiser": "sgd"}, r"when names optimiser, not a parameter of this space"),
    ({"optimizer": "adam"}, r"when\.optimizer=adam is not among optimizer's choices"),
    ({"optimizer": ["sgd", "adam"]}, r"when\.optimizer=adam is not among"),
    ({"optimizer": []}, r"when\.optimizer is empty"),
    ({"lr": 0.001}, r"lr is not categorical"),
    ("sgd", r"must map parameter names"),
])
def test_bad_conditions_raise_config_errors(when, words):
    params = {**COND, "momentum": {**COND["momentum"], "when": when}}
    with pytest.raises(ConfigError, match=words) as err:
        _space(params)
    assert "search_space.params.momentum.when" in str(err.value) and "\n" not in str(err.value)


def test_a_cycle_of_conditions_is_a_config_error():
    params = {"a": {"key": "train.optimizer", "type": "categorical", "choices": ["x", "y"], "when": {"b": "u"}},
              "b": {"key": "data.augment", "type": "categorical", "choices": ["u", "v"], "when": {"a": "x"}},
              "lr": COND["lr"]}
    with pytest.raises(ConfigError, match=r"forms a cycle \((a -> b -> a|b -> a -> b)\): remove one") as err:
        _space(params)
    assert "\n" not in str(err.value)
    selfish = {"a": {"key": "train.optimizer", "type": "categorical", "choices": ["x", "y"], "when": {"a": "x"}}}
    with pytest.raises(ConfigError, match=r"cycle \(a -> a\)"):
        _space(selfish)


def test_the_old_single_recipe_key_is_refused_with_the_new_name():
    with pytest.raises(ConfigError, match="search_space.recipe is now search_space.recipes"):
        compose_tune(Path("/nonexistent"), "+search_space.recipe={lr:0.003}")


def test_recipes_are_a_named_table_or_a_list_and_are_fitted_to_the_space():
    table = {"sgd_std": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
             "adamw_std": {"optimizer": "adamw", "lr": 0.003, "momentum": 0.9, "unknown": 1}}
    listed = [{"name": n, **v} for n, v in table.items()]
    for recipes in (table, listed):
        space = _space(COND, recipes)
        assert [r.name for r in space.recipes] == ["sgd_std", "adamw_std"]
        fitted = {r.name: r.values for r in space.recipes_within_space()}
        # lr moved inside the range; adamw's momentum dropped (its condition fails); unknowns dropped
        assert fitted == {"sgd_std": {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9},
                          "adamw_std": {"optimizer": "adamw", "lr": 0.003}}
    with pytest.raises(ConfigError, match=r"recipes\[0\] needs a name"):
        _space(COND, [{"lr": 0.003}])
    with pytest.raises(ConfigError, match="names repeat"):
        _space(COND, [{"name": "a", "lr": 0.003}, {"name": "a", "lr": 0.004}])
    # A parent outside the (narrowed) choices is dropped and sampled; its child is kept, used if the draw fits.
    narrowed = {**COND, "optimizer": {**COND["optimizer"], "choices": ["sgd"]}}
    assert _space(narrowed, {"r": {"optimizer": "adamw", "momentum": 0.9}}).recipes_within_space()[0].values == {"momentum": 0.9}


def _open_scratch_cell(tmp_path: Path, *overrides: str):
    cfg = compose_tune(tmp_path, *overrides)
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    return cfg, space, budget, harness.tuning.tune.open_cell(cfg, space, budget)


@pytest.mark.parametrize("overrides, names", [
    (["tune.n_trials=10"], ["adamw", "sgd", "adamw_long"]),
    (["tune.n_trials=2"], ["adamw", "sgd"]),  # never more than the budget can take
    (["tune.n_trials=null", "tune.max_flops=1e12"], ["adamw", "sgd", "adamw_long"]),
    (["tune.n_trials=10", "tune.enqueue_recipe=false"], []),
])
def test_a_new_cell_enqueues_its_recipes(tmp_path, overrides, names):
    _, space, _, study = _open_scratch_cell(tmp_path, *overrides)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs.get("recipe_name") for t in waiting] == names
    assert all(t.user_attrs.get("recipe") is True for t in waiting)
    fitted = {r.name: r.values for r in space.recipes_within_space()}
    assert [t.system_attrs["fixed_params"] for t in waiting] == [fitted[n] for n in names]


def _first_draws(tmp_path: Path, *overrides: str, k: int = 2) -> list[dict]:
    """The first k sampled (not enqueued) parameter sets of a cell, taken as tune_cell takes them."""
    cfg, space, budget, study = _open_scratch_cell(tmp_path, "tune.enqueue_recipe=false", "tune.n_trials=10", *overrides)
    draws = []
    for _ in range(k):
        trial = harness.tuning.tune.take_trial(study, cfg, budget)
        draws.append(space.suggest(trial))
        study.tell(trial, 0.5)
    return draws


def test_each_cell_draws_its_own_start_up_parameters(tmp_path):
    n10 = _first_draws(tmp_path / "a")
    n20 = _first_draws(tmp_path / "a", "data.n_train=20")  # another cell of the same study and storage
    assert n10 != n20 and n10[0]["lr"] != n20[0]["lr"]
    assert _first_draws(tmp_path / "b") == n10  # the same cell, same settings: the same draws
    assert _first_draws(tmp_path / "c", "tune.sampler_seed=1") != n10
    assert _first_draws(tmp_path / "d", "study.name=other") != n10


def test_the_cell_seed_is_a_stable_hash_of_study_strategy_size_and_sampler_seed(tmp_path):
    seeds = {}
    for extra in ([], ["strategy=finetune"], ["data.n_train=20"], ["tune.sampler_seed=1"], ["study.name=other"]):
        cfg = compose_tune(tmp_path, *extra)
        seeds[tuple(extra)] = harness.tuning.tune.cell_sampler_seed(cfg)
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds.values())
    # sha256 of "digits\x1fscratch\x1f10\x1f0": the same in every process (hash() is not)
    assert seeds[()] == int.from_bytes(__import__("hashlib").sha256(b"digits\x1fscratch\x1f10\x1f0").digest()[:8], "big") % 2**31


def test_trials_are_sampled_by_multivariate_tpe_over_groups_without_experimental_warnings(tmp_path):
    cfg = compose_tune(tmp_path, "tune.enqueue_recipe=false", "tune.n_trials=20", "tune.n_startup_trials=4")
    cfg = set_space(cfg, COND)
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    rng = np.random.default_rng(0)
    for i in range(8):  # complete trials, half of them with the conditional parameter
        params = {"optimizer": ["adamw", "sgd"][i % 2], "lr": float(10 ** rng.uniform(-3, -2))}
        dists = {k: distributions(space)[k] for k in params}
        if params["optimizer"] == "sgd":
            params["momentum"], dists["momentum"] = float(rng.uniform(0.5, 0.99)), distributions(space)["momentum"]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(rng.uniform())))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trial = harness.tuning.tune.take_trial(study, cfg, budget)
        values = space.suggest(trial)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    sampler = study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    # Group decomposition models the conditional parameter jointly; independent or plain multivariate
    # TPE leaves it out of the relative search space (the intersection of all trials' parameters).
    relative = sampler.infer_relative_search_space(study, study.trials[trial.number])
    assert set(relative) == {"optimizer", "lr", "momentum"}
    assert ("momentum" in values) == (values["optimizer"] == "sgd")
    # Without our narrow filter, Optuna says the arguments are experimental.
    with pytest.warns(optuna.exceptions.ExperimentalWarning, match="group"):
        optuna.samplers.TPESampler(multivariate=True, group=True)


# ---------------------------------------------------------------------- processes (slow)


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_its_trial_is_retried(tmp_path):
    # A generous grace period, and the dead trial's heartbeat aged by hand: no wait on SQLite's clock.
    beat = ["storage.heartbeat_interval=1", "storage.grace_period=600", "~search_space.params.steps", "study.seeds=1"]
    tune_cell(compose_tune(tmp_path, "tune.n_trials=1", "train.steps=10", *beat), tmp_path / "runs")
    done = load(tmp_path).trials[0]
    assert done.state == TrialState.COMPLETE

    # A second worker runs a trial far too long to finish; kill -9 it once it is mid-training.
    worker = start_tune(tmp_path, *tiny_overrides(tmp_path), *beat, "tune.n_trials=3", "train.steps=200000",
                        f"hydra.run.dir={tmp_path}/killed", log=tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 180
        while not any(n == 1 and s == "RUNNING" and k > 0 for n, s, k in sqlite_trials(tmp_path / "tune.db")):
            assert worker.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "the worker never started trial 1"
            time.sleep(0.3)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    killed = study.trials[1]

    assert age_heartbeats(tmp_path / "tune.db", trial_ids=[killed._trial_id]) == 1
    tune_cell(compose_tune(tmp_path, "tune.n_trials=3", "train.steps=10", *beat), tmp_path / "runs")

    trials = load(tmp_path).trials
    assert trials[0].number == done.number and trials[0].state == TrialState.COMPLETE
    assert (trials[0].value, trials[0].params, trials[0].datetime_complete) == (done.value, done.params, done.datetime_complete)
    assert trials[1].state == TrialState.FAIL  # the stale trial, failed by the resuming worker
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    # The killed attempt is replaced by its retry, not counted: 3 trials spent, all finished.
    assert len(trials) == 4 and all(t.state in FINISHED for t in trials)
    assert spent(trials)["n_trials"] == 3


def test_a_worker_whose_cell_is_spent_waits_and_reruns_a_dead_peers_last_trial(tmp_path, capsys, monkeypatch):
    """The last trial of the budget belongs to a worker that died (it beat once, then nothing):
    the surviving worker does not exit with the cell short of a trial and that one RUNNING; it
    waits out the grace period, fails it, runs its retry, and re-runs the final best. The grace
    period passes at the worker's first pause (age_while_waiting), not on the storage's clock."""
    pauses = age_while_waiting(monkeypatch, tmp_path / "tune.db")
    beat = ["storage.heartbeat_interval=1", "storage.grace_period=600", "~search_space.params.steps", "train.steps=10",
            "study.seeds=1"]
    tune_cell(compose_tune(tmp_path, "tune.n_trials=2", *beat), tmp_path / "runs")
    cfg = compose_tune(tmp_path, "tune.n_trials=3", *beat)
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    dead = harness.tuning.tune.take_trial(study, cfg, budget)  # what a worker does before it is killed
    dead_params = space.suggest(dead)

    capsys.readouterr()
    tune_cell(compose_tune(tmp_path, "tune.n_trials=3", *beat, "tune.progress=true"), tmp_path / "runs")
    said = capsys.readouterr().err
    assert said.count("budget spent; waiting for 1 trial(s) of other workers") == 1, said  # once, not every poll
    assert len(pauses) == 1  # it waited once, and the dead trial was stale after it

    study = load(tmp_path)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].number == dead.number and trials[2].params == dead_params
    assert trials[3].system_attrs["failed_trial"] == dead.number and trials[3].params == dead_params
    assert spent(trials)["n_trials"] == 3  # the dead attempt is replaced by its retry, not counted
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert study.user_attrs["best_trial"] == best.number and len(study.user_attrs["final"]) == 1


def test_without_waiting_a_spent_cell_is_left_at_once(tmp_path, monkeypatch):
    """harness-study's first pass over the cells: a peer's running trial does not hold it up."""
    beat = ["storage.heartbeat_interval=1", "storage.grace_period=600", "tune.n_trials=1"]
    cfg = compose_tune(tmp_path, *beat)
    space, budget = harness.tuning.tune.check_cell_config(cfg)
    study = harness.tuning.tune.open_cell(cfg, space, budget)
    running = harness.tuning.tune.take_trial(study, cfg, budget)
    monkeypatch.setattr(harness.tuning.workers, "pause", lambda s: pytest.fail("a worker that need not wait paused"))
    tune_cell(cfg, tmp_path / "runs", wait_for_peers=False)
    assert [t.state for t in load(tmp_path).trials] == [TrialState.RUNNING]
    assert running.number == 0


def test_a_rerun_of_the_best_lets_other_workers_take_trials_meanwhile(tmp_path, monkeypatch):
    """Re-running a cell's best is minutes of training. Meanwhile a worker of another cell in the
    same SQLite file takes its trials, and a worker of the same cell that need not wait leaves the
    re-run to the first; one that waits gets the first one's result without training again."""
    common = ["study.seeds=1", "train.steps=10", "~search_space.params.steps"]
    cfg_a = compose_tune(tmp_path, "tune.n_trials=1", *common)
    tune_cell(cfg_a, tmp_path / "runs")
    study_a = load(tmp_path)
    study_a.set_user_attr("best_trial", -1)  # as if a better trial had come in: the best is due for a re-run

    started, release, calls = threading.Event(), threading.Event(), []

    def slow_training(cfg, run_dir, **kwargs):
        calls.append(run_dir)
        started.set()
        assert release.wait(60), "never released"
        return SimpleNamespace(val_acc=0.5, test_acc=0.25, compute=SimpleNamespace(total_flops=1.0, wall_s=2.0),
                               test_correct=np.array([True, False, False, False]), test_split="cafe")

    monkeypatch.setattr(harness.tuning.tune, "run_training", slow_training)
    monkeypatch.setattr(harness.tuning.rerun, "run_training", harness.tuning.tune.run_training)  # the replicates' runs
    space = SearchSpace.from_config(cfg_a.search_space, base=cfg_a)
    cfg_b = compose_tune(tmp_path, "tune.n_trials=1", "data.n_train=20", *common)
    space_b, budget_b = harness.tuning.tune.check_cell_config(cfg_b)
    study_b = harness.tuning.tune.open_cell(cfg_b, space_b, budget_b)
    rerun = threading.Thread(target=harness.tuning.rerun.rerun_best, args=(study_a, cfg_a, space, tmp_path / "runs"))
    rerun.start()
    try:
        assert started.wait(30)
        taken = []
        taker = threading.Thread(target=lambda: taken.append(harness.tuning.tune.take_trial(study_b, cfg_b, budget_b)))
        leaver = threading.Thread(target=tune_cell, args=(cfg_a, tmp_path / "runs"), kwargs={"wait_for_peers": False})
        for t in (taker, leaver):
            t.start()
            t.join(30)
        assert not taker.is_alive() and taken and taken[0].number == 0, "the other cell could not take a trial"
        assert not leaver.is_alive(), "a worker that need not wait waited for the re-run"
        assert rerun.is_alive() and len(calls) == 1
    finally:
        release.set()
        rerun.join(60)
    assert _stored(harness.tuning.rerun.rerun_best(load(tmp_path), cfg_a, space, tmp_path / "runs")) == [
        {"replicate": 1, "seed": 1, "subset": 1, "val_acc": 0.5, "test_acc": 0.25, "flops": 1.0, "wall_s": 2.0,
         "n_test": 4, "test_split": "cafe", "test_correct": encode_correct(np.array([True, False, False, False])),
         "probe_acc": None, "status": "collapsed",  # 0.25 on 4 examples of 5 classes: not told from chance
         "reason": "test accuracy 0.250 is at chance (0.200)"}]
    assert len(calls) == 1 and load(tmp_path).user_attrs["best_trial"] == 0


@pytest.mark.slow
def test_two_workers_share_one_cell_and_its_budget(tmp_path):
    args = [*tiny_overrides(tmp_path, pruner="hyperband"), "tune.n_trials=20", "study.seeds=1",
            "search_space.params.steps.low=5", "search_space.params.steps.high=10"]
    workers = [start_tune(tmp_path, *args, f"hydra.run.dir={tmp_path}/w{i}", log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        codes = [w.wait(300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs

    study = load(tmp_path)
    states = [t.state for t in study.trials]
    assert len(states) == 20 and sum(s in FINISHED for s in states) == 20, states
    assert TrialState.FAIL not in states, [t.user_attrs.get("fail_reason") for t in study.trials]
    ran = [{int(p.name.split("-")[1]) for p in (tmp_path / f"w{i}").glob("trial-*")} for i in range(2)]
    assert not ran[0] & ran[1], "a trial ran in both workers"
    assert ran[0] | ran[1] == set(range(20))
    # Which worker takes which trial is the lock's luck: nothing promises both take some.
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert study.user_attrs["best_trial"] == best.number and len(study.user_attrs["final"]) == 1


@pytest.mark.slow
def test_multirun_over_a_grid_with_the_joblib_launcher(tmp_path):
    result = run_tune(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                      *tiny_overrides(tmp_path, pruner="hyperband", n_train=None), "study.seeds=1",
                      "strategy=scratch,finetune", "data.n_train=10,20", "tune.n_trials=2",
                      f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr[-3000:]

    names = study_names(tmp_path)
    assert names == ["digits/n000010/finetune/t0", "digits/n000010/scratch/t0", "digits/n000020/finetune/t0", "digits/n000020/scratch/t0"]
    for name in names:
        study = load(tmp_path, name)
        _, n, strategy, _ = name.split("/")
        attrs = study.user_attrs
        assert (attrs["strategy"], attrs["n_train"], attrs["study"]) == (strategy, int(n[1:]), "digits")
        assert attrs["budget"]["n_trials"] == 2 and len(attrs["final"]) == 1
        assert len(finished(study)) == 2
        assert ("pretrain" in attrs) == (strategy == "finetune") == ("weights" in attrs)
        if strategy == "finetune":  # own pretraining: its FLOPs measured
            assert attrs["weights"] == {"origin": "own pretraining", "ref": attrs["pretrain"]["config_hash"],
                                        "pretrain_flops": attrs["pretrain"]["flops"], "pretrain_flops_from": "measured"}
    # One pretraining shared by both fine-tuning cells, made once.
    assert len(list((tmp_path / "pretrained").glob("*/weights.safetensors"))) == 1


@pytest.mark.slow
def test_a_postgres_password_is_never_printed(tmp_path):
    secret = "s3cretpw"
    result = run_tune(tmp_path, *tiny_overrides(tmp_path), f"storage.url=postgresql://user:{secret}@127.0.0.1:1/db",
                      f"hydra.run.dir={tmp_path}/run")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert secret not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "127.0.0.1" in lines[0], output


def test_the_pruner_waits_for_lp_ft_to_leave_its_head_only_phase():
    """LP-FT's linear-probe phase is not judged: a trial the pruner rejects there runs on to the
    full fine-tuning phase, and is stopped only from its first validation there."""
    from types import SimpleNamespace

    from harness.training.strategies import Phase
    from harness.tuning.pruning import PruningCallback

    asked = []
    trial = SimpleNamespace(report=lambda value, step: None, should_prune=lambda: asked.append(True) or True)
    callback = PruningCallback(trial)
    module = SimpleNamespace(phases=[Phase("linear_probe", 0, frozenset()), Phase("full", 20, frozenset())],
                             val_history=[(10, 0.3)])
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False)
    callback.on_validation_end(trainer, module)
    assert trainer.should_stop is False and not asked
    module.val_history.append((20, 0.35))
    callback.on_validation_end(trainer, module)
    assert trainer.should_stop is True
    full = SimpleNamespace(phases=[Phase("full", 0, frozenset())], val_history=[(5, 0.1)])
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False)
    PruningCallback(trial).on_validation_end(trainer, full)
    assert trainer.should_stop is True  # one-phase runs are judged from the first validation, as before


def test_a_warm_started_run_first_tries_the_winners_of_its_finished_neighbours(tmp_path):
    """tune.warm_start: after the recipes (none here), the winners of the nearest finished smaller and
    larger sizes of the same strategy and tuning run; never another tuning run's, never with it off."""
    common = ("tune.n_trials=2", "tune.enqueue_recipe=false", "train.steps=10", "~search_space.params.steps")

    def cell(n: int, *more: str):
        cfg = compose_tune(tmp_path, *common, f"data.n_train={n}", *more)
        tune_cell(cfg, tmp_path / "runs")
        return load(tmp_path, cell_of(cfg).name)

    small, large = cell(10), cell(40)
    warm = cell(20, "tune.warm_start=true")
    first = sorted(warm.trials, key=lambda t: t.number)[:2]
    assert [t.user_attrs.get("warm_from") for t in first] == ["winner of n=10", "winner of n=40"]
    space = SearchSpace.from_config(compose_tune(tmp_path, *common).search_space)
    assert [t.params for t in first] == [space.fit(small.user_attrs["best_params"]), space.fit(large.user_attrs["best_params"])]

    other_run = cell(20, "tune.warm_start=true", "tune.run=1")  # run 1 has no finished neighbours of its own
    cold = cell(80)  # warm_start off (the default)
    assert not any("warm_from" in t.user_attrs for t in other_run.trials + cold.trials)

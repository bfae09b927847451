"""harness-study: recipes compose into valid cells, the grid is checked, and a tiny study runs end to
end (pretrain, tune both strategies, re-run with seeds, report) and resumes without redoing work."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from operator import attrgetter
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from harness.cli import CONFIG_DIR
from harness.settings.config import load
from harness.settings.schema import StudyAppConfig
from harness.errors import ConfigError
from harness.study.orchestrator import cell_config, check_study, grid

STUDY = str(Path(sys.executable).with_name("harness-study"))


def compose_study(*overrides: str, recipe: str = "digits", typed: bool = True):
    """harness-study's settings as it builds them (harness.settings.config.load), or with typed=False
    the composed DictConfig."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        composed = compose("study", overrides=[f"recipe={recipe}", *overrides], return_hydra_config=False)
    return load(StudyAppConfig, composed) if typed else composed


def test_digits_recipe_is_a_geometric_grid_over_about_one_and_a_half_decades():
    cfg = compose_study()
    sizes = list(cfg.study.n_train)
    ratios = {b / a for a, b in zip(sizes, sizes[1:])}
    assert len(ratios) == 1 and ratios.pop() > 1
    assert 1.3 <= math.log10(sizes[-1] / sizes[0]) <= 2.0
    cells = grid(cfg)
    assert len(cells) == 2 * len(sizes) * cfg.study.tunings  # every cell tuned study.tunings times
    assert cfg.study.tunings == 3 and cfg.tune.n_trials == 5 and cfg.study.seeds == 2
    assert [k for _, _, k in cells[:2 * len(sizes)]] == [0] * 2 * len(sizes)  # run 0 of every cell first


def test_a_cell_gets_its_own_strategy_and_search_space():
    cfg = compose_study()
    cell = cell_config(cfg, "finetune", 40)
    assert cell.strategy.name == "finetune" and cell.data.n_train == 40
    assert "mode" in cell.search_space.params and not hasattr(cell, "strategies")
    scratch = cell_config(cfg, "scratch", 40)
    assert "mode" not in scratch.search_space.params
    assert scratch.search_space.params["lr"]["high"] > cell.search_space.params["lr"]["low"]


def test_gpu_recipe_composes_with_hub_weights_and_longer_scratch_schedules():
    cfg = compose_study(recipe="cifar10_gpu")
    assert cfg.data.name == "torchvision" and cfg.data.dataset == "CIFAR10"
    assert cfg.strategies["finetune"].weights == "hub" and "." in cfg.model.name
    ft = cell_config(cfg, "finetune", 1000).search_space.params["steps"]
    sc = cell_config(cfg, "scratch", 1000).search_space.params["steps"]
    assert sc["high"] > ft["high"]
    # The recipe's recipes merge into the search space's, key by key: the rest of each recipe stays.
    ft_recipes = cell_config(cfg, "finetune", 1000).search_space.recipes
    assert list(ft_recipes) == ["bit_sgd", "adamw_full", "lp_ft"]
    assert ft_recipes["lp_ft"]["steps"] == 500 and ft_recipes["lp_ft"]["mode"] == "lp_ft" and ft_recipes["bit_sgd"]["lr"] == 0.003
    assert cell_config(cfg, "scratch", 1000).search_space.recipes["adamw_long"]["steps"] == 20000


def test_digits_recipe_pretrains_on_glyphs_and_targets_every_digit_from_one_per_class(tmp_path):
    from harness.data.task import build_task

    cfg = compose_study(f"storage.url=sqlite:///{tmp_path}/s.db", f"pretrain.cache_dir={tmp_path}/pre")
    assert cfg.study.name == "digits" and cfg.data.source == "glyphs" and cfg.study.adaptive is True
    cell = cell_config(cfg, "finetune", 10)
    target = build_task(cell.data)
    assert target.num_classes == 10 and len(build_task(cell.data, role="source").class_names) == 52
    sizes = list(cfg.study.n_train)
    assert sizes[0] == target.num_classes  # one example per class
    assert {b / a for a, b in zip(sizes, sizes[1:])} == {2.0}
    available = 1797 - cfg.data.n_val - cfg.data.n_test
    assert sizes[-1] <= available < 4 * sizes[-1]  # up to about what the target pool allows (1,397)
    check_study(cfg)  # every cell fits the data; nothing is pretrained yet
    assert not (tmp_path / "pre").exists()


def test_digits_split_recipe_keeps_the_split_class_study_with_the_defaults_budgets():
    split, digits = compose_study(recipe="digits_split"), compose_study()
    assert split.study.name == "digits_split" and split.data.source == "classes"
    assert list(split.data.source_classes) == [0, 1, 2, 3, 4] and list(split.data.target_classes) == [5, 6, 7, 8, 9]
    assert list(split.study.n_train) == [10, 20, 40, 80, 160, 320]
    for key in ("study.seeds", "study.tunings", "tune.n_trials", "data.n_val", "model.name", "data.name", "study.adaptive"):
        assert attrgetter(key)(split) == attrgetter(key)(digits), key
    # each test split as large as its data allows: 1,797 digits less 640 + 150; 901 of 5-9 less 320 + 150
    assert (digits.data.n_test, split.data.n_test) == (1000, 400)


@pytest.mark.parametrize("sizes", ["[]", "[10,10]", "[10,abc]"])
def test_bad_grid_is_refused(sizes):
    with pytest.raises(ConfigError, match="study.n_train"):
        grid(load(StudyAppConfig, compose_study(f"study.n_train={sizes}", typed=False)))


def test_grid_value_beyond_the_data_is_refused_before_anything_runs(tmp_path):
    cfg = compose_study("study.n_train=[10,100000]", f"storage.url=sqlite:///{tmp_path}/s.db",
                        f"pretrain.cache_dir={tmp_path}/pre")
    with pytest.raises(ConfigError, match="data.n_train=100000"):
        check_study(cfg)
    assert not (tmp_path / "pre").exists()


def test_both_strategies_of_a_size_share_the_reference_trial_and_the_pruners_max_resource():
    cfg = compose_study("tune.budget=flops", "search_spaces.finetune.params.steps.high=300")
    for n in (10, 40):
        ft, sc = cell_config(cfg, "finetune", n), cell_config(cfg, "scratch", n)
        # the widest steps range across the strategies: finetune 50-300, scratch 100-600 -> 50-600
        assert ft.tune.reference_steps == sc.tune.reference_steps == 325
        assert ft.pruner.max_resource == sc.pruner.max_resource == 600  # not finetune's own 300
    kept = compose_study("tune.reference_steps=200", "pruner.max_resource=1000")
    assert cell_config(kept, "finetune", 10).tune.reference_steps == 200  # a study's own setting is kept
    assert cell_config(kept, "scratch", 10).pruner.max_resource == 1000
    asha = cell_config(compose_study("pruner=asha"), "scratch", 10)
    assert asha.pruner.max_resource is None  # successive halving takes no maximum


def test_a_flops_budget_gives_both_strategies_of_a_size_the_same_compute(tmp_path):
    """Two tiny real cells of one size, as harness-study makes them, with tune.budget=flops: the same
    budget (n_trials x one reference trial of the widest steps range, 10-40), and tuning FLOPs equal
    to within the largest single trial (the budget is checked before each trial starts)."""
    from harness.tuning.tune import tune_cell

    cfg = compose_study("tune.budget=flops", "tune.n_trials=3", "study.seeds=1", "study.n_train=[10]", "study.tunings=1",
                        f"storage.url=sqlite:///{tmp_path}/study.db", f"pretrain.cache_dir={tmp_path}/pre",
                        "pretrain.train.steps=20", "pretrain.train.val_every=10", "logger=none", "tune.progress=false",
                        "data.n_val=50", "train.val_every=5", "pruner.min_resource=5", "trainer.accelerator=cpu",
                        "search_spaces.scratch.params.steps.low=20", "search_spaces.scratch.params.steps.high=40",
                        "search_spaces.scratch.params.steps.step=10", "search_spaces.finetune.params.steps.low=10",
                        "search_spaces.finetune.params.steps.high=20", "search_spaces.finetune.params.steps.step=5",
                        "search_spaces.finetune.params.mode.choices=[linear_probe,lp_ft]",
                        "search_spaces.finetune.params.layer_decay.when.mode=[lp_ft]",
                        "~search_spaces.finetune.params.freeze_stages")
    cells = {c.strategy.name: c for c in check_study(cfg)}
    studies = {s: tune_cell(c, tmp_path / "runs" / s) for s, c in cells.items()}
    attrs = {s: study.user_attrs for s, study in studies.items()}
    assert attrs["finetune"]["budget"] == attrs["scratch"]["budget"]
    budget = attrs["scratch"]["budget"]
    assert budget["kind"] == "flops" and budget["reference"]["steps"] == 25  # midpoint of 10-40
    assert budget["max_flops"] == pytest.approx(3 * budget["reference"]["trial_flops"])
    assert attrs["finetune"]["pruner"]["max_resource"] == attrs["scratch"]["pruner"]["max_resource"] == 40

    spent, largest = {}, 0.0
    for s, study in studies.items():
        flops = [float(t.user_attrs["flops"]) for t in study.trials if t.state.is_finished()]
        spent[s], largest = sum(flops), max(largest, *flops)
        assert budget["max_flops"] <= spent[s] < budget["max_flops"] + max(flops), s
    assert abs(spent["finetune"] - spent["scratch"]) <= largest, (spent, largest)
    # cheaper trials (shorter schedules, a frozen backbone for part of them) buy more of them, not more compute
    assert len(studies["finetune"].trials) > len(studies["scratch"].trials)


@pytest.mark.slow
def test_tiny_study_end_to_end_then_resume(tmp_path):
    db = tmp_path / "study.db"
    args = [STUDY, "study.n_train=[10,20,40]", "tune.n_trials=2", "study.seeds=2", "study.max_seeds=4", "study.workers=2",
            "study.tunings=2", "study.max_tunings=3",
            "study.max_cells=0",  # the grid only: tests/test_adaptive.py covers the refinement
            f"storage.url=sqlite:///{db}", f"pretrain.cache_dir={tmp_path}/pre", "pretrain.train.steps=30",
            f"report.dir={tmp_path}/report", "report.n_boot=100", "logger=none", "data.n_val=50",
            "train.val_every=10", f"hydra.run.dir={tmp_path}/run",
            "search_spaces.scratch.params.steps.low=10", "search_spaces.scratch.params.steps.high=20",
            "search_spaces.scratch.params.steps.step=10", "search_spaces.finetune.params.steps.low=10",
            "search_spaces.finetune.params.steps.high=20", "search_spaces.finetune.params.steps.step=10"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "tuning runs done 12/12" in first.stderr and "report:" in first.stdout

    storage = f"sqlite:///{db}"
    names = sorted(optuna.get_all_study_names(storage))
    grid = {f"digits/n{n:06d}/{s}/t{k}" for s in ("finetune", "scratch") for n in (10, 20, 40) for k in (0, 1)}
    assert grid <= set(names)  # two tuning runs a cell, each its own Optuna study; the top-up may add a third
    assert all(n in grid or n.endswith("/t2") for n in names)
    trials_before, draws = {}, {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        assert len(done) == 2  # the per-run budget
        trials_before[name] = [(t.number, t.datetime_complete) for t in study.trials]
        draws[name] = (study.user_attrs["tuning"], study.user_attrs["draw"], study.user_attrs["seed"])
    assert draws["digits/n000010/scratch/t1"] == (1, 1, 1000) and draws["digits/n000010/scratch/t0"] == (0, 0, 0)
    report = tmp_path / "report"
    for name in ("report.html", "report.md", "trials.csv", "cells.csv", "crossover.json", "learning_curves.png",
                 "gap.png", "error_rate.png"):
        assert (report / name).is_file(), name
    crossover = json.loads((report / "crossover.json").read_text())
    assert crossover["measured_range"] == [10, 40]
    assert crossover["between_runs"] == "measured" and crossover["band"]["critical"] > 1.96
    import pandas as pd

    cells = pd.read_csv(report / "cells.csv")
    assert len(cells) == len(names)  # one row per tuning run
    assert len(pd.read_csv(report / "trials.csv")) == sum(len(t) for t in trials_before.values())
    from harness.report import Crossover, headline_line

    line = headline_line(Crossover.from_json(crossover))
    assert line in first.stdout.splitlines()
    # real re-runs store per-example test records: the intervals resample the shared test split
    assert crossover["intervals"].startswith("tuning runs and test examples")
    assert all(p["test_noise"] and p["tuning_runs"]["finetune"] >= 2 for p in crossover["per_n"])
    finals_before = {name: optuna.load_study(study_name=name, storage=storage).user_attrs["final"] for name in names}
    for name, final in finals_before.items():
        assert 2 <= len(final) <= 4 and [r["replicate"] for r in final] == list(range(1, len(final) + 1))
    undecided = [p for p in crossover["per_n"] if p["verdict"] == "inconclusive"]
    assert all(p["decide"]["text"] for p in undecided)

    again = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(optuna.get_all_study_names(storage)) == names or "adding:" in again.stderr
    for name in names:  # resumed: nothing re-trained, no replicate redone
        study = optuna.load_study(study_name=name, storage=storage)
        assert [(t.number, t.datetime_complete) for t in study.trials] == trials_before[name]
        assert study.user_attrs["final"][:len(finals_before[name])] == finals_before[name]


def test_a_study_worker_leaves_a_cell_a_dead_worker_holds_then_comes_back_to_rerun_its_trial(tmp_path, monkeypatch):
    """Cell n10's last trial belongs to a dead worker (it beat once, then nothing). A study worker
    first tunes the other cell instead of waiting on n10, then comes back, fails the dead trial once
    it is stale and runs its retry: no cell is left short of its budget with a trial RUNNING. The
    grace period is long and passes at the worker's first pause (age_while_waiting): the ordering
    holds on however busy a machine."""
    from tuning_helpers import age_while_waiting

    pauses = age_while_waiting(monkeypatch, tmp_path / "study.db")
    from harness.tuning import tune as tuning
    from harness.study.orchestrator import _worker

    cfg = compose_study("study.strategies=[scratch]", "study.n_train=[10,20]", "tune.n_trials=1", "study.seeds=1",
                        "study.tunings=1",
                        f"storage.url=sqlite:///{tmp_path}/study.db", "storage.heartbeat_interval=1",
                        "storage.grace_period=600", "logger=none", "tune.progress=false", "data.n_val=50", "train.steps=10",
                        "train.val_every=10", "~search_spaces.scratch.params.steps")
    cells = check_study(cfg)
    dead_cell = next(c for c in cells if c.data.n_train == 10)
    space, budget = tuning.check_cell_config(dead_cell)
    dead = tuning.take_trial(tuning.open_cell(dead_cell, space, budget), dead_cell, budget)
    space.suggest(dead)

    _worker(cells, 0, str(tmp_path / "runs"))

    storage = f"sqlite:///{tmp_path}/study.db"
    held = optuna.load_study(study_name="digits/n000010/scratch/t0", storage=storage)
    other = optuna.load_study(study_name="digits/n000020/scratch/t0", storage=storage)
    assert [t.state for t in held.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert held.trials[1].system_attrs["failed_trial"] == dead.number and "final" in held.user_attrs
    assert [t.state for t in other.trials] == [TrialState.COMPLETE] and "final" in other.user_attrs
    # n20 was tuned before the dead trial could be failed: the worker did not wait on n10 first
    assert len(pauses) == 1
    assert other.trials[0].datetime_start < held.trials[0].datetime_complete


def test_a_plan_counts_the_work_estimates_it_from_timed_steps_and_trains_nothing(tmp_path, capsys):
    """study.plan=true: the tuning runs, trainings and FLOPs of the grid, a time from short timed
    trainings on this machine, the caps of what the adaptive study may add; no storage is written
    and no source model pretrained."""
    from harness.study.plan import plan_study

    db = tmp_path / "plan.db"
    cfg = compose_study("study.n_train=[10,40]", "tune.n_trials=4", "study.seeds=2", "study.tunings=2", "study.plan=true",
                        f"storage.url=sqlite:///{db}", f"pretrain.cache_dir={tmp_path}/pre", "logger=none")
    summary = plan_study(cfg)
    text = summary["plan"]
    assert "2 strategies (finetune, scratch) x 2 sizes [10, 40] x 2 tuning runs = 8 tuning runs" in text
    assert summary["trainings"] == 8 * (4 + 2) and "48 (32 trials before pruning, 16 re-runs)" in text
    assert "plus one pretraining of the source model" in text and "up to 6 a cell" in text
    assert summary["flops"] > 0 and summary["seconds"] > 0
    assert "ms/step" in text and "nothing was trained" in text
    assert not db.exists() and not (tmp_path / "pre").exists()
    # the n = 40 cells train more FLOPs than the n = 10 ones (batches capped at n_train = 10 there)
    n10 = next(line for line in text.splitlines() if line.strip().startswith("n = 10:"))
    n40 = next(line for line in text.splitlines() if line.strip().startswith("n = 40:"))
    assert float(n40.split(" trainings, ")[1].split(" FLOPs")[0]) > float(n10.split(" trainings, ")[1].split(" FLOPs")[0])

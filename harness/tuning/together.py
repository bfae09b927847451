"""The K tuning runs of one cell take their recipe trials together (issue 23).

Every tuning run of a cell starts with the same recipes (harness/tuning/search_space.py), and its
runs differ only in seed, validation draw and tuning subset, so recipe i of the K runs is K trainings
of one configuration: harness/training/fused.py trains them as one model of K members. Each member
is its own run's trial: it reports to its own Optuna study, whose pruner may stop it alone, and
stores its own compute, curve and outcome, as the trial trained alone would. The runs stay
independent: nothing a member does reaches another member or another run's study.

Only harness-study groups the runs of a cell (one process holds all K); harness-tune tunes one run.
Trials that are not the same recipe in every run (the sampled ones, a run resumed elsewhere in its
recipes, warm-start winners) train alone, in the usual loop (harness/tuning/tune.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import optuna

from harness.settings.schema import CellConfig
from harness.store import records
from harness.store.records import storage_of, trial_id_of
from harness.training.fused import NotFusable, train_members
from harness.training.pretrain import ensure_source
from harness.training.weights import resolve_weights
from harness.tuning.budget import Budget
from harness.tuning.pruning import PruningCallback
from harness.tuning.search_space import SearchSpace
from harness.tuning.tune import (check_cell_config, failed, finished, interrupted, open_cell, run_trial,
                                 take_trial, trial_dir, trial_log_extra, trial_run_name)
from harness.tuning.workers import _sigterm_as_interrupt, heartbeat

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """One tuning run of the cell, opened: its settings, space, budget, study and where its trials train."""

    cfg: CellConfig
    space: SearchSpace
    budget: Budget
    study: optuna.Study
    root: Path


def tune_recipes_together(cfgs: Sequence[CellConfig], run_roots: Sequence[Path]) -> int:
    """Take the recipe trials of the tuning runs `cfgs` (one cell) together while every run's next
    trial is the same recipe; returns how many such groups trained fused. What is left (sampled
    trials, re-runs) is for tune_cell. Needs trainer.fuse and holdout selection; a no-op otherwise."""
    first = cfgs[0]
    if len(cfgs) < 2 or not first.trainer.fuse or first.tune.selection != "holdout":
        return 0
    runs = []
    for cfg, root in zip(cfgs, run_roots):
        space, budget = check_cell_config(cfg)
        runs.append(_Run(cfg, space, budget, open_cell(cfg, space, budget), Path(root)))
    ensure_source(first)  # a resumed cell's worker may not have the source model yet; trials only read it
    with _sigterm_as_interrupt():  # a scheduler's stop ends the group like Ctrl-C: each trial re-queued
        return _take_recipes(runs)


def _take_recipes(runs: Sequence[_Run]) -> int:
    fused = 0
    while True:
        taken = [(run, take_trial(run.study, run.cfg, run.budget)) for run in runs]
        group = [(run, trial) for run, trial in taken if trial is not None]
        recipes = len(group) == len(runs) and all(_is_recipe(t) for _, t in group)
        values = [run.space.suggest(trial) for run, trial in group]  # an enqueued recipe's values are fixed
        if recipes and all(v == values[0] for v in values) and _train_together(group, values):
            fused += 1
            continue
        for run, trial in group:  # not one recipe in every run, or not stackable: each trains alone
            run_trial(run.study, trial, run.cfg, run.space, run.root)
        return fused  # the rest is tune_cell's


def _is_recipe(trial: optuna.Trial) -> bool:
    return bool(trial.user_attrs.get("recipe"))


def _train_together(group: Sequence[tuple[_Run, optuna.Trial]], values: Sequence[dict]) -> bool:
    """Train the group's trials (their `values`) as one model of K members and tell each study its own
    trial's outcome. False, with nothing told, when they cannot train together (then each trains alone)."""
    cfgs = [run.space.apply(run.cfg, v) for (run, _), v in zip(group, values)]
    judges = [PruningCallback(trial) for _, trial in group]
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as beats:
            for run, trial in group:
                beats.enter_context(heartbeat(storage_of(run.study), trial_id_of(trial)))
            outcomes = train_members(cfgs, [run.root / trial_dir(trial) for run, trial in group],
                                     weights=resolve_weights(cfgs[0]), log_kind="trial", evaluate_test=False,
                                     judges=[j.judge for j in judges],
                                     run_names=[trial_run_name(run.study, t) for run, t in group],
                                     log_extras=[trial_log_extra(run.study, t, v) for (run, t), v in zip(group, values)])
    except (KeyboardInterrupt, SystemExit):
        for (run, trial), v in zip(group, values):
            interrupted(run.study, trial, v)
        raise KeyboardInterrupt(f"trials {[t.number for _, t in group]} interrupted") from None
    except NotFusable as why:
        log.info("the %d tuning runs' recipe trials train one at a time: %s", len(group), why)
        return False
    except Exception as err:  # noqa: BLE001 - nothing is lost: each trial trains again on its own
        log.warning("%d recipe trials trained together failed (%s: %s): training them one at a time",
                    len(group), type(err).__name__, err)
        log.debug("%s", traceback.format_exc())
        return False
    log.debug("%d recipe trials trained together in %.1f s", len(group), time.perf_counter() - started)
    for (run, trial), judge, outcome in zip(group, judges, outcomes):
        records.write_members(trial, len(group))
        if isinstance(outcome, BaseException):
            failed(run.study, trial, outcome)
        else:
            finished(run.study, trial, outcome, judge)
    return True


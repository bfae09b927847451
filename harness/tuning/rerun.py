"""Replicates of a tuning run's best, apart from the trial loop: the one reader of the test split, and
run after tuning too. A re-run that fails is recorded with its reason and the cell goes on."""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from harness.settings.checks import integer
from harness.data.task import cv_folds_for
from harness.store.locks import rerun_lock
from harness.store.records import RerunRecord, TuningRunRecord, storage_of, write_final
from harness.training.module import TrainingDiverged
from harness.tuning.replicates import DIVERGED, FAILED, failure_record, make_record, replicate
from harness.training.fused import NotFusable, train_members
from harness.training.run import RunFailed, RunResult, run_training
from harness.settings.schema import CellConfig, replace_path
from harness.tuning.search_space import SearchSpace
from harness.training.weights import resolve_weights


def _best_complete(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


log = logging.getLogger(__name__)


def _chance(cfg: CellConfig) -> float:
    """Accuracy of a guess: 1 / the target's classes (what a diverged run is counted at)."""
    from harness.data.task import build_task

    return 1.0 / build_task(cfg.data, "target").num_classes


def _replicate_config(best_cfg: CellConfig, base_seed: int, r: int) -> CellConfig:
    """Replicate r of the best configuration (harness/tuning/replicates.py): its seed and its own
    training subset, the same validation and test splits."""
    best_cfg = replicate(dataclasses.replace(best_cfg, seed=base_seed), r)
    if best_cfg.tune.selection == "cv":  # train on all n_train examples; nothing held out, no validation split
        folds = cv_folds_for(best_cfg.data, best_cfg.tune.cv_folds)
        best_cfg = replace_path(replace_path(best_cfg, "data.cv_folds", folds), "data.cv_fold", -1)
    return best_cfg


def _record(cfg: CellConfig, r: int, outcome: RunResult | BaseException, chance: float, wall_s: float) -> RerunRecord:
    """A re-run's record from what its training gave: a failure is data. A loss gone NaN/inf is stored
    as `diverged` (counted at chance accuracy), any other error as `failed` (with its reason, left
    out of the statistics); a run at chance accuracy is kept and marked `collapsed`."""
    if isinstance(outcome, BaseException):
        compute = outcome.compute if isinstance(outcome, RunFailed) else None
        cause = outcome.__cause__ if isinstance(outcome, RunFailed) and outcome.__cause__ is not None else outcome
        status = DIVERGED if isinstance(cause, TrainingDiverged) else FAILED
        log.warning("re-run %s (seed %s) %s: %s", r, cfg.seed, status, cause)
        reason = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"
        return failure_record(r, cfg.seed, status, reason, chance, flops=compute.total_flops if compute else 0.0,
                              wall_s=compute.wall_s if compute and compute.wall_s else wall_s)
    probe = None
    if cfg.strategy.name == "finetune":
        from harness.training.probe import probe_accuracy

        probe = probe_accuracy(cfg)  # the same training subset, the source weights frozen
    return make_record(r, cfg.seed, outcome, probe, chance=chance)


def _run_one(cfg: CellConfig, run_root: Path) -> RunResult | Exception:
    """One re-run alone; the only place tuning reads the test split, apart from the fused members.
    Ctrl-C and a launcher's exit still stop the cell."""
    try:
        return run_training(cfg, run_root / f"final-seed{cfg.seed}", weights=resolve_weights(cfg), log_kind="rerun")
    except Exception as err:  # noqa: BLE001 - one re-run's failure is recorded; the cell goes on
        log.debug("%s", traceback.format_exc())
        return err


def _run_replicates(best_cfg: CellConfig, base_seed: int, rs: Sequence[int], run_root: Path,
                    done: Callable[[list[RerunRecord]], None] = lambda records: None) -> list[RerunRecord]:
    """Replicates `rs` of the best configuration: trained together as one model of len(rs) members
    (harness/training/fused.py) when trainer.fuse allows and the model can be stacked, else one at a
    time; the log says which, and why. `done` gets the records so far whenever some finish (after
    each one alone, after all of them fused), so a caller can store them before an interruption."""
    cfgs = [_replicate_config(best_cfg, base_seed, r) for r in rs]
    if not cfgs:
        return []
    chance = _chance(cfgs[0])
    started = time.perf_counter()
    outcomes: list[RunResult | BaseException] | None = None
    if best_cfg.trainer.fuse and len(cfgs) > 1:
        try:
            outcomes = train_members(cfgs, [run_root / f"final-seed{c.seed}" for c in cfgs],
                                     weights=resolve_weights(best_cfg), log_kind="rerun")
        except NotFusable as why:
            log.info("the %d re-runs train one at a time: %s", len(cfgs), why)
        except Exception as err:  # noqa: BLE001 - nothing is lost: each member trains again on its own
            log.warning("the %d re-runs trained together failed (%s: %s): training them one at a time",
                        len(cfgs), type(err).__name__, err)
            log.debug("%s", traceback.format_exc())
    if outcomes is None:
        records = []
        for r, cfg in zip(rs, cfgs):
            began = time.perf_counter()
            records.append(_record(cfg, r, _run_one(cfg, run_root), chance, time.perf_counter() - began))
            done(records)
        return records
    wall = (time.perf_counter() - started) / len(cfgs)
    records = [_record(cfg, r, outcome, chance, wall) for r, cfg, outcome in zip(rs, cfgs, outcomes)]
    done(records)
    return records


def rerun_best(study: optuna.Study, cfg: CellConfig, space: SearchSpace, run_root: Path,
               wait: bool = True) -> list[RerunRecord] | None:
    """Train the best parameters again as study.seeds replicates (r = 1..study.seeds), each with
    seed + r on training subset r, and store their records as `final`.

    One worker at a time, under a lock of its own: the other workers keep taking trials meanwhile.
    Without `wait`, a worker that finds another re-running this cell returns None and moves on.
    """
    with rerun_lock(storage_of(study), study.study_name, blocking=wait) as held:
        if not held:
            return None
        best = _best_complete(study)
        if best is None:
            return None
        stored = TuningRunRecord.of(study)
        # Done already, unless a resumed cell or another worker found a better trial since.
        if stored.has_final and stored.best_trial == best.number:
            return stored.final
        best_cfg = space.apply(cfg, best.params)
        final = _run_replicates(best_cfg, cfg.seed, range(1, cfg.study.seeds + 1), run_root)
        write_final(study, final, best_params=best.params, best_trial=best.number)
        return final


def extend_replicates(study: optuna.Study, cfg: CellConfig, space: SearchSpace, run_root: Path, target: int,
                      wait: bool = True) -> list[RerunRecord] | None:
    """Add replicates of the cell's current best until `final` holds `target` of them.

    Replicates len(final)+1 .. target run together (fused) or one at a time, and `final` is written
    whenever some finish, so an interruption keeps every finished replicate and the next call
    continues from there. Under the
    cell's re-run lock, with `final` read after taking it: two workers never run one replicate twice.
    Returns `final` (unchanged when it already holds `target`), or None when the cell has no `final`
    for its current best (rerun_best comes first) or, without `wait`, another worker holds the lock.
    """
    integer(target, "target", 1)
    with rerun_lock(storage_of(study), study.study_name, blocking=wait) as held:
        if not held:
            return None
        best = _best_complete(study)
        stored = TuningRunRecord.of(study)
        final = stored.final
        if best is None or not stored.has_final or stored.best_trial != best.number:
            return None
        best_cfg = space.apply(cfg, best.params)
        added = _run_replicates(best_cfg, cfg.seed, range(len(final) + 1, target + 1), run_root,
                                done=lambda records: write_final(study, final + records))
        return final + added


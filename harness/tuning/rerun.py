"""Replicates of a tuning run's best, apart from the trial loop: the one reader of the test split, and
run after tuning too. A re-run that fails is recorded with its reason and the cell goes on."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.settings.checks import integer
from harness.data.task import cv_folds_for
from harness.store.locks import rerun_lock
from harness.store.records import TuningRunRecord, storage_of, write_final
from harness.training.module import TrainingDiverged
from harness.tuning.replicates import DIVERGED, FAILED, failure_record, make_record, replicate_overrides
from harness.training.run import RunFailed, run_training
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


def _run_replicate(best_cfg: CellConfig, base_seed: int, r: int, run_root: Path) -> dict:
    """Replicate r of the best configuration (harness/tuning/replicates.py): its seed and its own training
    subset, the same validation and test splits; the only place tuning reads the test split.

    A failure is data: a loss gone NaN/inf is stored as `diverged` (counted at chance accuracy),
    any other error as `failed` (with its reason, left out of the statistics); a run at chance
    accuracy is kept and marked `collapsed`. Ctrl-C and a launcher's exit still stop the cell."""
    overrides = replicate_overrides(r, base_seed)
    for key, value in overrides.items():
        best_cfg = replace_path(best_cfg, key, value)
    if str(best_cfg.tune.selection) == "cv":  # train on all n_train examples; nothing held out, no validation split
        folds = cv_folds_for(best_cfg.data, int(best_cfg.tune.cv_folds))
        best_cfg = replace_path(replace_path(best_cfg, "data.cv_folds", folds), "data.cv_fold", -1)
    seed = overrides["seed"]
    chance = _chance(best_cfg)
    started = time.perf_counter()
    try:
        result = run_training(best_cfg, run_root / f"final-seed{seed}", weights=resolve_weights(best_cfg), log_kind="rerun")
    except Exception as err:  # noqa: BLE001 - one re-run's failure is recorded; the cell goes on
        compute = err.compute if isinstance(err, RunFailed) else None
        cause = err.__cause__ if isinstance(err, RunFailed) and err.__cause__ is not None else err
        status = DIVERGED if isinstance(cause, TrainingDiverged) else FAILED
        log.warning("re-run %s (seed %s) %s: %s", r, seed, status, cause)
        log.debug("%s", traceback.format_exc())
        reason = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"
        return failure_record(r, seed, status, reason, chance, flops=compute.total_flops if compute else 0.0,
                              wall_s=time.perf_counter() - started)
    probe = None
    if best_cfg.strategy.name == "finetune":
        from harness.training.probe import probe_accuracy

        probe = probe_accuracy(best_cfg)  # the same training subset, the source weights frozen
    return make_record(r, seed, result, probe, chance=chance)


def rerun_best(study: optuna.Study, cfg: CellConfig, space: SearchSpace, run_root: Path,
               wait: bool = True) -> list[dict] | None:
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
        final = [_run_replicate(best_cfg, cfg.seed, r, run_root) for r in range(1, cfg.study.seeds + 1)]
        write_final(study, final, best_params=best.params, best_trial=best.number)
        return final


def extend_replicates(study: optuna.Study, cfg: CellConfig, space: SearchSpace, run_root: Path, target: int,
                      wait: bool = True) -> list[dict] | None:
    """Add replicates of the cell's current best until `final` holds `target` of them.

    Replicates len(final)+1 .. target run one at a time, and `final` is written after each, so an
    interruption keeps every finished replicate and the next call continues from there. Under the
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
        final = stored.final_replicates
        if best is None or final is None or stored.best_trial != best.number:
            return None
        best_cfg = space.apply(cfg, best.params)
        for r in range(len(final) + 1, target + 1):
            final.append(_run_replicate(best_cfg, cfg.seed, r, run_root))
            write_final(study, final)
        return final


"""Tune one cell (strategy x n_train) once: one tuning run, one Optuna study, TPE + pruning, a budget shared by every
worker of the cell, then the best configuration re-run as several replicates (seed and training
subset, harness/tuning/replicates.py) on the test split (harness/tuning/rerun.py). The budget, the pruner and
the coordination of workers live in harness/tuning/budget.py, harness/tuning/pruning.py and harness/tuning/workers.py.

Trials are driven with ask/tell rather than `study.optimize` because the budget check and the
taking of a trial must happen under one lock (locks.study_lock); optimize() offers no place for
it. The few lines of heartbeat in harness/tuning/workers.py stand in for what optimize() would have done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.store import records
from harness.tuning import workers
from harness.tuning.budget import Budget, resolve_budget
from harness.training.compute import Compute
from harness.data.task import cv_folds_for, unvalidated
from harness.errors import ConfigError
from harness.store.locks import study_lock
from harness.training.module import TrainingDiverged
from harness.training.pretrain import ensure_pretrained, ensure_source
from harness.tuning.progress import Progress
from harness.tuning.pruning import PruningCallback, make_pruner, pruner_attrs
from harness.store.records import CellId, storage_of, trial_id_of
from harness.tuning.rerun import rerun_best
from harness.training.run import RunFailed, RunResult, resolve_device, run_training
from harness.settings.schema import CellConfig
from harness.tuning.search_space import Recipe, SearchSpace
from harness.tuning.warm_start import neighbour_winners
from harness.store.storage import fail_stale_trials, redact_url
from harness.tuning.workers import _beat_once, _peers_may_die, _poll_s, _sigterm_as_interrupt, heartbeat

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
log = logging.getLogger(__name__)


def cell_of(cfg: CellConfig) -> CellId:
    return CellId(cfg.study.name, cfg.strategy.name, cfg.data.n_train, cfg.tune.run)


def check_cell_config(cfg: CellConfig) -> tuple[SearchSpace, Budget]:
    """What the settings' own checks (harness.settings.config.validate, at the door) cannot see
    surfaces here, before any trial or storage write: the search space against the run's keys, and
    the sizes, model, device and weights against the data and the model."""
    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    make_pruner(cfg)
    # Trials must not fail on what could be checked now: sizes, model name, device, weights file.
    from harness.data.task import build_task
    from harness.training.models import check_model_name

    _check_selection(cfg)
    task = build_task(unvalidated(cfg.data) if cfg.tune.selection == "cv" else cfg.data, "target")
    check_model_name(cfg.model.name)
    resolve_device(cfg.trainer)
    _check_weights(cfg, task)
    return space, resolve_budget(cfg, task)


def _check_selection(cfg: CellConfig) -> None:
    """tune.selection=cv needs two examples of every class in n_train, so each fold holds each out."""
    if cfg.tune.selection == "cv":
        folds = cv_folds_for(cfg.data, cfg.tune.cv_folds)
        if folds < 2:
            raise ConfigError(f"tune.selection=cv needs >= 2 examples of every class, but data.n_train={cfg.data.n_train} "
                              "has a class with 1: raise data.n_train or use tune.selection=holdout")


def _check_weights(cfg: CellConfig, task) -> None:
    """A weights file or hub tag that cannot be used fails here, not once per trial (as a FAIL
    that spends the budget): the file is read safely and checked against the model."""
    if cfg.strategy.name != "finetune" or cfg.strategy.weights == "source":
        return
    from harness.training.run import check_weights_fit
    from harness.training.weights import resolve_weights

    weights = resolve_weights(cfg)  # hub: fails fast when the hub cannot be reached
    if weights.file is not None:
        check_weights_fit(cfg, task, weights.file)


def _cell_attrs(cfg: CellConfig, space: SearchSpace, budget: Budget) -> records.CellAttrs:
    """What a new tuning run is stored with (harness/store/records.py writes it)."""
    pretrain = None
    if cfg.strategy.name == "finetune" and cfg.strategy.weights == "source":
        pretrain = records.PretrainRecord.of(ensure_pretrained(cfg).meta)
    return records.CellAttrs(
        cell_of(cfg), budget=budget, search_space=space.to_json(), n_val=cfg.data.n_val,
        n_test=cfg.data.n_test, model=cfg.model.name, data=cfg.data.name, selection=cfg.tune.selection,
        pruner=pruner_attrs(cfg), draw=cfg.data.draw, seed=cfg.seed, caps=caps_attrs(cfg),
        cv_folds=cv_folds_for(cfg.data, cfg.tune.cv_folds) if cfg.tune.selection == "cv" else None,
        pretrain=pretrain, weights=records.WeightsRecord.of_settings(cfg, pretrain))


def caps_attrs(cfg: CellConfig) -> records.Caps:
    """What harness-study may still add to this cell (the report's power statements name them)."""
    return records.Caps(cfg.study.max_tunings, cfg.study.max_seeds, int(cfg.tune.n_trials or 0))


def open_cell(cfg: CellConfig, space: SearchSpace, budget: Budget) -> optuna.Study:
    storage = records.open_storage(cfg.storage)
    cell = cell_of(cfg)
    name = cell.name
    with study_lock(storage, name):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    pruner=make_pruner(cfg))
        stored = records.TuningRunRecord.of(study)
        if stored.attrs and stored.cell != cell:
            raise ConfigError(f"tuning run {name} (an Optuna study) in {redact_url(cfg.storage.url)} belongs to another cell: use another study.name")
        if not stored.attrs:
            records.write_cell_attrs(study, _cell_attrs(cfg, space, budget))
            recipes = first_recipes(space, budget) if cfg.tune.enqueue_recipe else []
            enqueue_recipes(study, recipes)
            if cfg.tune.warm_start:
                enqueue_winners(study, neighbour_winners(study, cfg, space), budget, len(recipes))
        else:  # a resumed cell may be given more budget, or another pruner
            pruner = pruner_attrs(cfg)
            changed = {key: new.to_json() for key, old, new in (("budget", stored.budget, budget),
                                                                 ("pruner", stored.pruner, pruner))
                       if old is None or old.to_json() != new.to_json()}
            records.write_study_attrs(study, changed)
    return study


def first_recipes(space: SearchSpace, budget: Budget) -> list[Recipe]:
    """The recipes a new cell starts with: all of them, fitted to the space, but never more than a
    trial budget holds (an enqueued trial the budget never reaches would stay WAITING for ever)."""
    recipes = space.recipes_within_space()
    return recipes if budget.n_trials is None else recipes[:budget.n_trials]


def enqueue_recipes(study: optuna.Study, recipes: list[Recipe]) -> None:
    """Each recipe becomes a waiting trial, marked recipe=True with its name, taken before any draw."""
    for r in recipes:
        study.enqueue_trial(r.values, user_attrs=records.recipe_attrs(r.name), skip_if_exists=True)


def enqueue_winners(study: optuna.Study, winners: list[Recipe], budget: Budget, taken: int) -> None:
    """The neighbours' winners after the recipes (`taken` of the trial budget), as waiting trials marked
    with the size they won at; one a recipe already holds is not queued twice."""
    room = len(winners) if budget.n_trials is None else max(0, budget.n_trials - taken)
    for w in winners[:room]:
        study.enqueue_trial(w.values, user_attrs=records.warm_attrs(w.name), skip_if_exists=True)


def cell_sampler_seed(cfg: CellConfig) -> int:
    """The cell's own sampler seed, from the study name, strategy, n_train and tune.sampler_seed:
    one seed for every cell would make all of a study's searches one correlated draw. A stable hash
    (sha256, not hash(), which changes per process) so a resumed or repeated cell draws the same."""
    parts = [cfg.study.name, cfg.strategy.name, str(cfg.data.n_train), str(cfg.tune.sampler_seed)]
    if cfg.tune.run:  # tuning run k > 0 draws its own search; run 0 keeps the seed cells always had
        parts.append(f"run{cfg.tune.run}")
    text = "\x1f".join(parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 2**31


def make_sampler(seed: int, n_startup_trials: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE over groups of parameters that occur together, so conditional parameters
    are modelled jointly with the ones they depend on. Only Optuna's ExperimentalWarning for these
    two arguments is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Argument ``(multivariate|group)`` is an experimental feature",
                                optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True)


def take_trial(study: optuna.Study, cfg: CellConfig, budget: Budget) -> optuna.Trial | None:
    """Under the tuning run's lock: fail dead workers' trials, check the budget, take the next trial."""
    with study_lock(storage_of(study), study.study_name):
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if budget.exhausted(trials):
            return None
        study.sampler = make_sampler(cell_sampler_seed(cfg) + len(trials), cfg.tune.n_startup_trials)
        trial = study.ask()
        # A RUNNING trial with no heartbeat yet is never failed as stale: beat once before letting go.
        _beat_once(storage_of(study), trial_id_of(trial))
        return trial


def _fail_reason(err: BaseException) -> str:
    if isinstance(err, TrainingDiverged):
        return f"diverged: {err}"
    if type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():
        return f"out of memory: {str(err).splitlines()[0][:200]}"
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"


def run_trial(study: optuna.Study, trial: optuna.Trial, cfg: CellConfig, space: SearchSpace, run_root: Path) -> TrialState:
    values = space.suggest(trial)
    trial_cfg = space.apply(cfg, values)
    callback = PruningCallback(trial)
    started = time.perf_counter()
    try:
        with heartbeat(storage_of(study), trial_id_of(trial)):
            result = _train_trial(trial_cfg, run_root / trial_dir(trial), callback, run_name=trial_run_name(study, trial),
                                  log_extra=trial_log_extra(study, trial, values))
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning turns Ctrl-C into sys.exit(1)
        interrupted(study, trial, values)
        if isinstance(stop, SystemExit) and stop.code not in (None, 0, 1):
            raise  # a launcher's own exit (submitit's requeue on USR2 exits 144 locally): its code is its message
        raise KeyboardInterrupt(f"trial {trial.number} interrupted") from None  # exit as interrupted (130), not 1
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, the study goes on
        log.debug("trial %s failed:\n%s", trial.number, traceback.format_exc())
        return failed(study, trial, err, time.perf_counter() - started)
    return finished(study, trial, result, callback)


def trial_dir(trial: optuna.Trial) -> str:
    return f"trial-{trial.number:04d}"


def trial_run_name(study: optuna.Study, trial: optuna.Trial) -> str:
    return f"{study.study_name}/trial-{trial.number}"


def trial_log_extra(study: optuna.Study, trial: optuna.Trial, values: dict[str, Any]) -> dict[str, Any]:
    return {"trial": {"number": trial.number, "study": study.study_name, "params": values}}


def interrupted(study: optuna.Study, trial: optuna.Trial, values: dict[str, Any]) -> None:
    """Not a verdict on the parameters: not counted against the budget, re-queued for the resume (a
    recipe as that recipe again, so the tuning runs of a cell can take it together again)."""
    records.write_interrupted(trial)
    study.tell(trial, state=TrialState.FAIL)
    name = trial.user_attrs.get("recipe_name") if trial.user_attrs.get("recipe") else None
    again = records.retry_attrs(trial.number) | (records.recipe_attrs(name) if name is not None else {})
    study.enqueue_trial(values, user_attrs=again)


def failed(study: optuna.Study, trial: optuna.Trial, err: BaseException, wall_s: float | None = None) -> TrialState:
    """A trial that failed, stored with its reason and what it spent before it failed (its wall time:
    `wall_s`, else what the failed run counted)."""
    compute = err.compute if isinstance(err, RunFailed) else None
    err = err.__cause__ if isinstance(err, RunFailed) else err
    if wall_s is None:
        wall_s = compute.wall_s if compute else 0.0
    records.write_failure(trial, _fail_reason(err), flops=compute.total_flops if compute else 0.0, wall_s=wall_s,
                          flops_per_step=compute.flops_per_step if compute else 0.0)
    study.tell(trial, state=TrialState.FAIL)
    return TrialState.FAIL


def finished(study: optuna.Study, trial: optuna.Trial, result: RunResult, callback: PruningCallback) -> TrialState:
    """A trial that trained: its compute and curve stored, told as pruned or complete."""
    _record(trial, result)
    for step, acc in result.val_history:
        callback.report(step, acc)
    if result.stopped_early:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    study.tell(trial, result.val_acc)
    return TrialState.COMPLETE


def _train_trial(trial_cfg: CellConfig, run_dir: Path, callback: PruningCallback, **kwargs: Any) -> RunResult:
    """One trial's training. Holdout selection: one run, scored on the validation split. Cross-
    validation (tune.selection=cv): k runs, fold i held out of the n_train examples, scored by the
    mean over folds, the validation split never read; the pruner watches fold 0 (its curve is the
    trial's intermediate values) and a pruned fold 0 ends the trial."""
    if str(trial_cfg.tune.selection) != "cv":
        return run_training(trial_cfg, run_dir, callbacks=[callback], evaluate_test=False, log_kind="trial", **kwargs)
    folds = cv_folds_for(trial_cfg.data, int(trial_cfg.tune.cv_folds))
    results: list[RunResult] = []
    for fold in range(folds):
        fold_cfg = dataclasses.replace(trial_cfg, data=dataclasses.replace(trial_cfg.data, cv_folds=folds, cv_fold=fold))
        results.append(run_training(fold_cfg, run_dir / f"fold-{fold}", callbacks=[callback] if fold == 0 else [],
                                    evaluate_test=False, log_kind="trial", **kwargs))
        if results[0].stopped_early:
            break
    return _cross_validated(results)


def _cross_validated(results: list[RunResult]) -> RunResult:
    """The folds of one trial as one result: mean held-out accuracy, summed compute, fold 0's curve."""
    first = results[0]
    compute = Compute(train_flops=sum(r.compute.train_flops for r in results),
                      eval_flops=sum(r.compute.eval_flops for r in results),
                      wall_s=sum(r.compute.wall_s for r in results), samples_seen=sum(r.compute.samples_seen for r in results),
                      steps=sum(r.compute.steps for r in results), flops_per_step=first.compute.flops_per_step,
                      peak_mem_bytes=first.compute.peak_mem_bytes, phases=first.compute.phases)
    return dataclasses.replace(first, val_acc=sum(float(r.val_acc) for r in results) / len(results), compute=compute,
                               model=None)


def _record(trial: optuna.Trial, result: RunResult) -> None:
    c = result.compute
    records.write_compute(trial, {"flops": c.total_flops, "train_flops": c.train_flops, "eval_flops": c.eval_flops,
                                  "wall_s": c.wall_s, "flops_per_step": c.flops_per_step, "steps": c.steps,
                                  "samples_seen": c.samples_seen})


def tune_cell(cfg: CellConfig, run_root: Path, wait_for_peers: bool = True, rerun: bool = True) -> optuna.Study:
    """Create or continue one tuning run's Optuna study, run trials until the budget is spent, re-run the best.

    With `wait_for_peers`, a worker that finds the budget spent stays until the other workers'
    trials end, so that if one of them dies its trial is failed and re-run (by this worker) instead
    of left RUNNING; the best is then re-run once, on the cell's final best. Without it, the worker
    leaves as soon as the budget is spent or another worker is re-running the best. Without
    `rerun`, the best is not re-run, so nothing reads the test split (what benchmarks need).
    """
    space, budget = check_cell_config(cfg)
    study = open_cell(cfg, space, budget)
    ensure_source(cfg)  # a resumed cell's worker may not have the source model yet; trials only read it
    progress = Progress(study, budget, cfg.tune.progress)
    try:
        with _sigterm_as_interrupt():
            while True:
                trial = take_trial(study, cfg, budget)
                if trial is not None:
                    run_trial(study, trial, cfg, space, run_root)
                    progress.update()
                elif wait_for_peers and _peers_may_die(study):
                    progress.waiting()
                    workers.pause(_poll_s(storage_of(study)))  # looked up there: tests give it a clock
                else:
                    break
    finally:
        progress.close()
    if rerun:
        rerun_best(study, cfg, space, run_root, wait=wait_for_peers)
    return study


def best_value(study: optuna.Study) -> float:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max((t.value for t in complete), default=math.nan)
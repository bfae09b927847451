"""Tune one cell (strategy x n_train): one Optuna study, TPE + pruning, a budget shared by every
worker of the cell, then the best configuration re-run as several replicates (seed and training
subset, harness/replicates.py) on the test split.

Trials are driven with ask/tell rather than `study.optimize` because the budget check and the
taking of a trial must happen under one lock (storage.study_lock); optimize() offers no place for
it. The few lines of heartbeat below stand in for what optimize() would have done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from harness.compute import Compute
from harness.config import require_int, validate_cell
from harness.data import cv_folds_for, unvalidated
from harness.errors import ConfigError
from harness.module import TrainingDiverged
from harness.pretrain import ensure_pretrained, ensure_source
from harness.replicates import make_record, replicate_overrides
from harness.run import RunResult, resolve_device, run_training
from harness.search_space import Recipe, SearchSpace
from harness.storage import fail_stale_trials, open_storage, rdb_of, redact_url, rerun_lock, study_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
log = logging.getLogger(__name__)

SPENT_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def retried_trial_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Trials of dead workers that the storage's RetryHeartbeatStaleTrialCallback re-queued (its
    `retry_history`, read from the system attrs directly to skip the experimental warning)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def cell_study_name(cfg: DictConfig) -> str:
    return f"{cfg.study.name}/{cfg.strategy.name}/n{int(cfg.data.n_train)}"


BUDGET_KINDS = ("trials", "flops")
# With tune.budget=flops, tune.n_trials sizes the FLOPs budget and is no cap; a cell still stops after
# this many times tune.n_trials trials (trials that fail at no cost would otherwise never spend it).
FLOPS_TRIAL_GUARD = 10


@dataclass(frozen=True)
class Budget:
    n_trials: int | None
    max_flops: float | None
    max_wall_s: float | None
    kind: str = "trials"
    reference: dict | None = None  # kind flops: the reference trial the FLOPs budget was sized with

    @classmethod
    def from_config(cls, tune: DictConfig) -> "Budget":
        """The configured limits, checked (tune.budget=flops is resolved by resolve_budget)."""
        def value(key: str, kind):
            v = tune.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"tune.{key}={v} must be a positive number or null: fix the budget")
            return kind(v)

        kind = tune.get("budget", "trials")
        if kind not in BUDGET_KINDS:
            raise ConfigError(f"tune.budget={kind} is not one of {', '.join(BUDGET_KINDS)}: set tune.budget=trials "
                              "(equal trial counts) or tune.budget=flops (equal FLOPs)")
        reference_steps = tune.get("reference_steps")
        if reference_steps is not None:
            require_int(reference_steps, "tune.reference_steps", 1)
        budget = cls(value("n_trials", int), value("max_flops", float), value("max_wall_s", float), str(kind))
        if budget.n_trials is None and budget.max_flops is None and budget.max_wall_s is None:
            raise ConfigError("the cell has no budget: set tune.n_trials, tune.max_flops or tune.max_wall_s")
        if kind == "flops" and budget.n_trials is None and budget.max_flops is None:
            raise ConfigError("tune.budget=flops needs tune.max_flops or tune.n_trials (times a reference trial's FLOPs): "
                              "set one of them")
        return budget

    def to_json(self) -> dict:
        out: dict[str, Any] = {"n_trials": self.n_trials, "max_flops": self.max_flops, "max_wall_s": self.max_wall_s}
        if self.kind != "trials":  # a trials budget is stored as it always was
            out.update(kind=self.kind, reference=self.reference)
        return out

    def spent(self, trials: list[optuna.trial.FrozenTrial]) -> dict:
        """Interrupted trials and killed workers' trials that were re-queued are not verdicts on
        their parameters: their re-run counts instead (a trial killed max_retry times counts)."""
        retried = retried_trial_numbers(trials)
        counted = [t for t in trials if t.state in SPENT_STATES and not t.user_attrs.get("interrupted")
                   and t.number not in retried]
        return {"n_trials": len(counted),
                "flops": sum(float(t.user_attrs.get("flops", 0.0)) for t in counted),
                "wall_s": sum(float(t.user_attrs.get("wall_s", 0.0)) for t in counted)}

    def exhausted(self, trials: list[optuna.trial.FrozenTrial]) -> bool:
        s = self.spent(trials)
        return ((self.n_trials is not None and s["n_trials"] >= self.n_trials)
                or (self.max_flops is not None and s["flops"] >= self.max_flops)
                or (self.max_wall_s is not None and s["wall_s"] >= self.max_wall_s))


def steps_bounds(space: DictConfig | None, default: int) -> tuple[int, int]:
    """(low, high) of the train.steps a search space tunes (its `steps` range), else (default, default)."""
    steps = space.params.get("steps") if space is not None and space.get("params") else None
    if steps is not None and "low" in steps and "high" in steps:
        return int(steps.low), int(steps.high)
    if steps is not None and "high" in steps:
        return int(steps.high), int(steps.high)
    return default, default


def reference_steps(cfg: DictConfig) -> tuple[int, str]:
    """The steps of the reference trial: tune.reference_steps (harness-study sets it to the midpoint
    of the widest steps range across its strategies), else the midpoint of this cell's own range."""
    given = cfg.tune.get("reference_steps")
    if given is not None:
        return int(given), "tune.reference_steps"
    low, high = steps_bounds(cfg.get("search_space"), int(cfg.train.steps))
    return int(round((low + high) / 2)), f"midpoint of this cell's steps range {low}-{high}"


def reference_trial(cfg: DictConfig, task) -> dict[str, Any]:
    """What one trial costs, for sizing a FLOPs budget, from what every strategy at this size shares:
    one step of the whole model trained from a random start (harness.compute's counter on a real batch
    of train.batch_size), times the reference steps, plus the validations such a trial makes."""
    from harness.compute import eval_flops_per_sample, train_step_flops
    from harness.data import one_batch
    from harness.models import create_backbone

    steps, steps_from = reference_steps(cfg)
    batch = int(cfg.train.batch_size)
    device = resolve_device(cfg.trainer)
    with torch.random.fork_rng(devices=[]):  # counting must not move the process's random state
        model = create_backbone(cfg.model, task.num_classes, task.in_chans, task.image_size).to(device)
        x, y = (t.to(device) for t in one_batch(task.train, batch))
        step_flops = train_step_flops(model, x, y)
        per_sample = eval_flops_per_sample(model, one_batch(task.val, batch)[0].to(device))
    every = int(cfg.train.val_every)
    validations = steps // every + (1 if steps % every else 0)  # on the grid, plus one at an off-grid end
    val_flops = per_sample * len(task.val) * validations
    return {"trial_flops": step_flops * steps + val_flops, "step_flops": step_flops, "steps": steps,
            "steps_from": steps_from, "validations": validations, "val_flops": val_flops,
            "batch_size": min(batch, len(task.train)), "model": str(cfg.model.name)}


def resolve_budget(cfg: DictConfig, task) -> Budget:
    """tune.budget=trials: the limits as configured. flops: one FLOPs limit, tune.max_flops or else
    tune.n_trials x reference_trial(); n_trials then only guards (FLOPS_TRIAL_GUARD x)."""
    budget = Budget.from_config(cfg.tune)
    if budget.kind == "trials":
        return budget
    reference = reference_trial(cfg, task) if budget.max_flops is None else None
    max_flops = budget.max_flops if reference is None else budget.n_trials * reference["trial_flops"]
    guard = FLOPS_TRIAL_GUARD * budget.n_trials if budget.n_trials else None
    return Budget(guard, float(max_flops), budget.max_wall_s, "flops", reference)


# Each pruner's settings and the least value each takes (all integers; max_resource may be null).
_PRUNER_SETTINGS = {"hyperband": {"min_resource": 1, "max_resource": 1, "reduction_factor": 2},
                    "asha": {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0},
                    "median": {"n_startup_trials": 0, "n_warmup_steps": 0}, "none": {}}
_NULLABLE = {"max_resource"}  # null = the cell's own steps.high


def _check_pruner(p: DictConfig) -> None:
    if p.name not in _PRUNER_SETTINGS:
        raise ConfigError(f"pruner={p.name} is unknown: use hyperband, asha, median or none")
    settings = _PRUNER_SETTINGS[str(p.name)]
    unknown = sorted(set(p) - {"name"} - set(settings))
    if unknown:
        known = ", ".join(f"pruner.{k}" for k in settings) or "no settings"
        raise ConfigError(f"pruner.{unknown[0]} is not a setting of pruner={p.name}: remove it (known: {known})")
    for key, least in settings.items():
        if key in _NULLABLE and p.get(key) is None:
            continue
        require_int(p.get(key), f"pruner.{key}", least)


def max_resource(cfg: DictConfig) -> int | None:
    """The most steps the pruner plans for (Hyperband's brackets): pruner.max_resource, else the
    cell's own steps.high; None for pruners that take no maximum."""
    p = cfg.pruner
    if p.name != "hyperband":
        return None
    return int(p.max_resource) if p.get("max_resource") is not None else _max_steps(cfg)


def pruner_attrs(cfg: DictConfig) -> dict[str, Any]:
    """The cell's pruner as built, stored so the report can check both strategies' pruners agree."""
    p = cfg.pruner
    settings = {k: p.get(k) for k in _PRUNER_SETTINGS[str(p.name)]}
    return {"name": str(p.name), **settings, "max_resource": max_resource(cfg),
            "max_resource_from": None if p.name != "hyperband" else
            ("pruner.max_resource" if p.get("max_resource") is not None else "steps.high")}


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    _check_pruner(p)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(p.min_resource), max_resource=max_resource(cfg),
                                              reduction_factor=int(p.reduction_factor))
    if p.name == "asha":  # one bracket of successive halving: every trial faces the first rung
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(p.min_resource),
                                                      reduction_factor=int(p.reduction_factor),
                                                      min_early_stopping_rate=int(p.min_early_stopping_rate))
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p.n_startup_trials), n_warmup_steps=int(p.n_warmup_steps))
    return optuna.pruners.NopPruner()  # pruner=none (_check_pruner refused any other name)


def _max_steps(cfg: DictConfig) -> int:
    return steps_bounds(cfg.get("search_space"), int(cfg.train.steps))[1]


class PruningCallback(pl.Callback):
    """Reports validation accuracy keyed by optimizer steps and stops a trial the pruner rejects.
    Ours because optuna-integration's callback is built on `lightning.pytorch`, not `pytorch_lightning`."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.reported: set[int] = set()

    def report(self, step: int, acc: float) -> None:
        if step not in self.reported:
            self.trial.report(acc, step)
            self.reported.add(step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not pl_module.val_history:
            return
        step, acc = pl_module.val_history[-1]
        self.report(step, acc)
        if step >= last_phase_start(pl_module) and self.trial.should_prune():
            trainer.should_stop = True


def last_phase_start(module: pl.LightningModule) -> int:
    """The step from which a run trains what it will end with. LP-FT's head-only phase is judged by
    what it cannot yet do: pruning it there (as Hyperband did to the LP-FT recipe in 4 of 6 digits
    cells, at 0.40 validation accuracy) handicaps fine-tuning's search, so the pruner waits."""
    phases = getattr(module, "phases", None) or []
    return int(phases[-1].start) if phases else 0


def _beat_once(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    storage = rdb_of(storage)
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial_id)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Keep a trial visibly alive so other workers fail it only if this process dies."""
    storage = rdb_of(storage)
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval())

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _open(cfg: DictConfig) -> RDBStorage:
    s = cfg.storage
    return open_storage(str(s.url), heartbeat_interval=int(s.heartbeat_interval) if s.heartbeat_interval else None,
                        grace_period=int(s.grace_period) if s.grace_period else None, max_retry=int(s.max_retry),
                        sqlite_wal=bool(s.get("wal", True)))


def check_cell_config(cfg: DictConfig) -> tuple[SearchSpace, Budget]:
    """All config errors surface here, before any trial or storage write."""
    validate_cell(cfg)
    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    Budget.from_config(cfg.tune)  # its settings checked now; resolved once the task is known
    make_pruner(cfg)
    seeds = cfg.study.seeds
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"study.seeds={seeds} must be a positive integer: the number of re-runs of the best configuration")
    # Trials must not fail on what could be checked now: sizes, model name, device, weights file.
    from harness.data import build_task
    from harness.models import check_model_name

    for key in ("sampler_seed", "n_startup_trials"):
        require_int(cfg.tune[key], f"tune.{key}", 0)
    _check_selection(cfg)
    task = build_task(unvalidated(cfg.data) if cfg.tune.get("selection") == "cv" else cfg.data, "target")
    check_model_name(str(cfg.model.name))
    resolve_device(cfg.trainer)
    _check_weights(cfg, task)
    return space, resolve_budget(cfg, task)


SELECTIONS = ("holdout", "cv")


def _check_selection(cfg: DictConfig) -> None:
    """tune.selection=cv needs two examples of every class in n_train, so each fold holds each out."""
    selection = cfg.tune.get("selection", "holdout")
    if selection not in SELECTIONS:
        raise ConfigError(f"tune.selection={selection} is not one of {', '.join(SELECTIONS)}: holdout selects on the "
                          "validation split, cv by k-fold cross-validation inside n_train")
    if selection == "cv":
        require_int(cfg.tune.get("cv_folds"), "tune.cv_folds", 2)
        folds = cv_folds_for(cfg.data, int(cfg.tune.cv_folds))
        if folds < 2:
            raise ConfigError(f"tune.selection=cv needs >= 2 examples of every class, but data.n_train={cfg.data.n_train} "
                              "has a class with 1: raise data.n_train or use tune.selection=holdout")


def _check_weights(cfg: DictConfig, task) -> None:
    """A weights file or hub tag that cannot be used fails here, not once per trial (as a FAIL
    that spends the budget): the file is read safely and checked against the model."""
    if cfg.strategy.name != "finetune" or str(cfg.strategy.weights) == "source":
        return
    from harness.run import check_weights_fit, pretrained_file

    path = pretrained_file(cfg)  # hub: fails fast when the hub cannot be reached
    if path is not None:
        check_weights_fit(cfg, task, path)


def _cell_attrs(cfg: DictConfig, space: SearchSpace, budget: Budget) -> dict[str, Any]:
    attrs = {"strategy": str(cfg.strategy.name), "n_train": int(cfg.data.n_train), "study": str(cfg.study.name),
             "budget": budget.to_json(), "search_space": space.to_json(), "n_val": int(cfg.data.n_val),
             "n_test": int(cfg.data.n_test), "model": str(cfg.model.name), "data": str(cfg.data.name),
             "selection": str(cfg.tune.selection), "pruner": pruner_attrs(cfg)}
    if cfg.tune.selection == "cv":
        attrs["cv_folds"] = cv_folds_for(cfg.data, int(cfg.tune.cv_folds))
    if cfg.strategy.name == "finetune" and str(cfg.strategy.weights) == "source":
        meta = ensure_pretrained(cfg).meta
        attrs["pretrain"] = {k: meta[k] for k in ("flops", "wall_s", "source_val_acc", "steps", "config_hash", "source_classes")}
    weights = weights_attrs(cfg, attrs.get("pretrain"))
    if weights is not None:
        attrs["weights"] = weights
    return attrs


def weights_attrs(cfg: DictConfig, pretrain: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a fine-tune cell's weights came from and what their pretraining cost: measured for our
    own pretraining, declared (strategy.pretrain_flops) for a file or a hub tag, else unknown."""
    if cfg.strategy.name != "finetune":
        return None
    weights = str(cfg.strategy.weights)
    if weights == "source":  # the pretrain attr, from harness-pretrain's meta
        assert pretrain is not None
        return {"origin": "own pretraining", "ref": pretrain["config_hash"], "pretrain_flops": float(pretrain["flops"]),
                "pretrain_flops_from": "measured"}
    declared = cfg.strategy.get("pretrain_flops")
    origin, ref = ("hub", str(cfg.model.name)) if weights == "hub" else ("file", str(Path(weights).expanduser()))
    return {"origin": origin, "ref": ref, "pretrain_flops": None if declared is None else float(declared),
            "pretrain_flops_from": "unknown" if declared is None else "declared"}


def open_cell(cfg: DictConfig, space: SearchSpace, budget: Budget) -> optuna.Study:
    storage = _open(cfg)
    name = cell_study_name(cfg)
    with study_lock(storage, name):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    pruner=make_pruner(cfg))
        attrs = study.user_attrs
        if attrs and (attrs.get("strategy"), attrs.get("n_train")) != (str(cfg.strategy.name), int(cfg.data.n_train)):
            raise ConfigError(f"study {name} in {redact_url(str(cfg.storage.url))} belongs to another cell: use another study.name")
        if not attrs:
            for key, value in _cell_attrs(cfg, space, budget).items():
                study.set_user_attr(key, value)
            if cfg.tune.enqueue_recipe:
                enqueue_recipes(study, first_recipes(space, budget))
        else:  # a resumed cell may be given more budget, or another pruner
            for key, value in (("budget", budget.to_json()), ("pruner", pruner_attrs(cfg))):
                if attrs.get(key) != value:
                    study.set_user_attr(key, value)
    return study


def first_recipes(space: SearchSpace, budget: Budget) -> list[Recipe]:
    """The recipes a new cell starts with: all of them, fitted to the space, but never more than a
    trial budget holds (an enqueued trial the budget never reaches would stay WAITING for ever)."""
    recipes = space.recipes_within_space()
    return recipes if budget.n_trials is None else recipes[:budget.n_trials]


def enqueue_recipes(study: optuna.Study, recipes: list[Recipe]) -> None:
    """Each recipe becomes a waiting trial, marked recipe=True with its name, taken before any draw."""
    for r in recipes:
        study.enqueue_trial(r.values, user_attrs={"recipe": True, "recipe_name": r.name}, skip_if_exists=True)


def cell_sampler_seed(cfg: DictConfig) -> int:
    """The cell's own sampler seed, from the study name, strategy, n_train and tune.sampler_seed:
    one seed for every cell would make all of a study's searches one correlated draw. A stable hash
    (sha256, not hash(), which changes per process) so a resumed or repeated cell draws the same."""
    text = "\x1f".join([str(cfg.study.name), str(cfg.strategy.name), str(int(cfg.data.n_train)),
                        str(int(cfg.tune.sampler_seed))])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % 2**31


def make_sampler(seed: int, n_startup_trials: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE over groups of parameters that occur together, so conditional parameters
    are modelled jointly with the ones they depend on. Only Optuna's ExperimentalWarning for these
    two arguments is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Argument ``(multivariate|group)`` is an experimental feature",
                                optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True)


def _take_trial(study: optuna.Study, cfg: DictConfig, budget: Budget) -> optuna.Trial | None:
    """Under the study lock: fail dead workers' trials, check the budget, take the next trial."""
    with study_lock(study._storage, study.study_name):
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if budget.exhausted(trials):
            return None
        study.sampler = make_sampler(cell_sampler_seed(cfg) + len(trials), int(cfg.tune.n_startup_trials))
        trial = study.ask()
        # A RUNNING trial with no heartbeat yet is never failed as stale: beat once before letting go.
        _beat_once(study._storage, trial._trial_id)
        return trial


def _fail_reason(err: BaseException) -> str:
    if isinstance(err, TrainingDiverged):
        return f"diverged: {err}"
    if type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():
        return f"out of memory: {str(err).splitlines()[0][:200]}"
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"


def run_trial(study: optuna.Study, trial: optuna.Trial, cfg: DictConfig, space: SearchSpace, run_root: Path) -> TrialState:
    values = space.suggest(trial)
    trial_cfg = space.apply(cfg, values)
    callback = PruningCallback(trial)
    started = time.perf_counter()
    try:
        with heartbeat(study._storage, trial._trial_id):
            result = _train_trial(trial_cfg, run_root / f"trial-{trial.number:04d}", callback,
                                  run_name=f"{study.study_name}/trial-{trial.number}",
                                  log_extra={"trial": {"number": trial.number, "study": study.study_name, "params": values}})
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning turns Ctrl-C into sys.exit(1)
        # Not a verdict on the parameters: not counted against the budget, re-queued for the resume.
        trial.set_user_attr("fail_reason", "interrupted")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(values, user_attrs={"retry_of": trial.number})
        if isinstance(stop, SystemExit) and stop.code not in (None, 0, 1):
            raise  # a launcher's own exit (submitit's requeue on USR2 exits 144 locally): its code is its message
        raise KeyboardInterrupt(f"trial {trial.number} interrupted") from None  # exit as interrupted (130), not 1
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, the study goes on
        compute = getattr(err, "harness_compute", None)
        trial.set_user_attr("fail_reason", _fail_reason(err))
        trial.set_user_attr("flops", compute.total_flops if compute else 0.0)
        trial.set_user_attr("wall_s", time.perf_counter() - started)
        trial.set_user_attr("flops_per_step", compute.flops_per_step if compute else 0.0)
        log.debug("trial %s failed:\n%s", trial.number, traceback.format_exc())
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    _record(trial, result)
    for step, acc in result.val_history:
        callback.report(step, acc)
    if result.stopped_early:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    study.tell(trial, result.val_acc)
    return TrialState.COMPLETE


def _train_trial(trial_cfg: DictConfig, run_dir: Path, callback: PruningCallback, **kwargs: Any) -> RunResult:
    """One trial's training. Holdout selection: one run, scored on the validation split. Cross-
    validation (tune.selection=cv): k runs, fold i held out of the n_train examples, scored by the
    mean over folds, the validation split never read; the pruner watches fold 0 (its curve is the
    trial's intermediate values) and a pruned fold 0 ends the trial."""
    if str(trial_cfg.tune.selection) != "cv":
        return run_training(trial_cfg, run_dir, callbacks=[callback], evaluate_test=False, **kwargs)
    folds = cv_folds_for(trial_cfg.data, int(trial_cfg.tune.cv_folds))
    results: list[RunResult] = []
    for fold in range(folds):
        fold_cfg = OmegaConf.create(OmegaConf.to_container(trial_cfg, resolve=False))
        fold_cfg.data.cv_folds, fold_cfg.data.cv_fold = folds, fold
        results.append(run_training(fold_cfg, run_dir / f"fold-{fold}", callbacks=[callback] if fold == 0 else [],
                                    evaluate_test=False, **kwargs))
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
    for key, value in {"flops": c.total_flops, "train_flops": c.train_flops, "eval_flops": c.eval_flops,
                       "wall_s": c.wall_s, "flops_per_step": c.flops_per_step, "steps": c.steps,
                       "samples_seen": c.samples_seen}.items():
        trial.set_user_attr(key, value)


class Progress:
    """One status line per cell: trials done of budget, best so far, pruned/failed, elapsed, ETA."""

    def __init__(self, study: optuna.Study, budget: Budget, enabled: bool):
        self.study, self.budget, self.enabled = study, budget, enabled
        self.started = time.perf_counter()
        at_start = self.budget.spent([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
        self.done_at_start, self.flops_at_start = at_start["n_trials"], at_start["flops"]
        self.tty = sys.stderr.isatty()
        self.waited_for: int | None = None

    def _done(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        return self.budget.spent([t for t in trials if t.state.is_finished()])["n_trials"]

    def update(self) -> None:
        self.waited_for = None
        if not self.enabled:
            return
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        done = self._done(trials)
        complete = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        elapsed = time.perf_counter() - self.started
        spent, eta = self._spent(trials, done, elapsed)
        line = (f"[{self.study.study_name}] {spent} best {max(complete) if complete else float('nan'):.4f} "
                f"pruned {states.count(TrialState.PRUNED)} failed {states.count(TrialState.FAIL)} "
                f"elapsed {elapsed:.0f}s eta {eta}")
        self._say(line)

    def _spent(self, trials: list[optuna.trial.FrozenTrial], done: int, elapsed: float) -> tuple[str, str]:
        """Trials done of the budget (and FLOPs spent of it, for tune.budget=flops) and the ETA."""
        if self.budget.kind == "flops" and self.budget.max_flops:
            flops = self.budget.spent([t for t in trials if t.state.is_finished()])["flops"]
            left, mine = self.budget.max_flops - flops, flops - self.flops_at_start
            eta = f"{left * elapsed / mine:.0f}s" if left > 0 and mine > 0 else "-"
            return f"trials {done} flops {flops:.3g}/{self.budget.max_flops:.3g}", eta
        total = self.budget.n_trials
        mine = max(1, done - self.done_at_start)
        eta = f"{(total - done) * elapsed / mine:.0f}s" if total and done < total else "-"
        return f"trials {done}/{total or '?'}", eta

    def waiting(self) -> None:
        """Said once per wait: why a worker whose cell is spent has not exited yet."""
        running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if self.enabled and running != self.waited_for:
            line = (f"[{self.study.study_name}] budget spent; waiting for {running} trial(s) of other workers to end "
                    "(a dead worker's trial is re-run here)")
            self._say(line)
        self.waited_for = running

    def _say(self, line: str) -> None:
        """One line that a terminal rewrites in place; a log gets one line each."""
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _best_complete(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def _run_replicate(best_cfg: DictConfig, base_seed: int, r: int, run_root: Path) -> dict:
    """Replicate r of the best configuration (harness/replicates.py): its seed and its own training
    subset, the same validation and test splits; the only place tuning reads the test split."""
    overrides = replicate_overrides(r, base_seed)
    for key, value in overrides.items():
        OmegaConf.update(best_cfg, key, value, merge=False)
    if str(best_cfg.tune.selection) == "cv":  # train on all n_train examples; nothing held out, no validation split
        best_cfg.data.cv_folds = cv_folds_for(best_cfg.data, int(best_cfg.tune.cv_folds))
        best_cfg.data.cv_fold = -1
    seed = overrides["seed"]
    result = run_training(best_cfg, run_root / f"final-seed{seed}")
    probe = None
    if best_cfg.strategy.name == "finetune":
        from harness.probe import probe_accuracy

        probe = probe_accuracy(best_cfg)  # the same training subset, the source weights frozen
    return make_record(r, seed, result, probe)


def rerun_best(study: optuna.Study, cfg: DictConfig, space: SearchSpace, run_root: Path,
               wait: bool = True) -> list[dict] | None:
    """Train the best parameters again as study.seeds replicates (r = 1..study.seeds), each with
    seed + r on training subset r, and store their records as `final`.

    One worker at a time, under a lock of its own: the other workers keep taking trials meanwhile.
    Without `wait`, a worker that finds another re-running this cell returns None and moves on.
    """
    with rerun_lock(study._storage, study.study_name, blocking=wait) as held:
        if not held:
            return None
        best = _best_complete(study)
        if best is None:
            return None
        attrs = study.user_attrs
        # Done already, unless a resumed cell or another worker found a better trial since.
        if "final" in attrs and attrs.get("best_trial") == best.number:
            return attrs["final"]
        best_cfg = space.apply(cfg, best.params)
        final = [_run_replicate(best_cfg, int(cfg.seed), r, run_root) for r in range(1, int(cfg.study.seeds) + 1)]
        study.set_user_attr("final", final)
        study.set_user_attr("best_params", best.params)
        study.set_user_attr("best_trial", best.number)  # last: a worker dying before it leaves the re-run undone
        return final


def extend_replicates(study: optuna.Study, cfg: DictConfig, space: SearchSpace, run_root: Path, target: int,
                      wait: bool = True) -> list[dict] | None:
    """Add replicates of the cell's current best until `final` holds `target` of them.

    Replicates len(final)+1 .. target run one at a time, and `final` is written after each, so an
    interruption keeps every finished replicate and the next call continues from there. Under the
    cell's re-run lock, with `final` read after taking it: two workers never run one replicate twice.
    Returns `final` (unchanged when it already holds `target`), or None when the cell has no `final`
    for its current best (rerun_best comes first) or, without `wait`, another worker holds the lock.
    """
    require_int(target, "target", 1)
    with rerun_lock(study._storage, study.study_name, blocking=wait) as held:
        if not held:
            return None
        best = _best_complete(study)
        attrs = study.user_attrs
        final = attrs.get("final")
        if best is None or not isinstance(final, list) or attrs.get("best_trial") != best.number:
            return None
        if not all(isinstance(r, dict) and "replicate" in r for r in final):
            return None  # re-runs of an older protocol (all on the tuning subset): not to be mixed with replicates
        final = list(final)
        best_cfg = space.apply(cfg, best.params)
        for r in range(len(final) + 1, target + 1):
            final.append(_run_replicate(best_cfg, int(cfg.seed), r, run_root))
            study.set_user_attr("final", final)
        return final


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) ends a trial like Ctrl-C does: recorded, then exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _peers_may_die(study: optuna.Study) -> bool:
    """Other workers still run trials of this spent cell, and a dead one's trial can be told from a
    slow one's (heartbeats on): worth waiting, since a trial whose worker dies now is otherwise
    left RUNNING, holding a slot of the budget that never yields a result, until the cell is tuned again."""
    storage = rdb_of(study._storage)
    return (isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
            and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))))


def pause(seconds: float) -> None:
    """The wait between polls of a spent cell's peers: the one place tests put a clock of their own."""
    time.sleep(seconds)


def _poll_s(storage: optuna.storages.BaseStorage) -> float:
    storage = rdb_of(storage)
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    return float(min(5, max(1, interval or 1)))


def tune_cell(cfg: DictConfig, run_root: Path, wait_for_peers: bool = True, rerun: bool = True) -> optuna.Study:
    """Create or continue one cell's study, run trials until the budget is spent, re-run the best.

    With `wait_for_peers`, a worker that finds the budget spent stays until the other workers'
    trials end, so that if one of them dies its trial is failed and re-run (by this worker) instead
    of left RUNNING; the best is then re-run once, on the cell's final best. Without it, the worker
    leaves as soon as the budget is spent or another worker is re-running the best. Without
    `rerun`, the best is not re-run, so nothing reads the test split (what benchmarks need).
    """
    space, budget = check_cell_config(cfg)
    study = open_cell(cfg, space, budget)
    ensure_source(cfg)  # a resumed cell's worker may not have the source model yet; trials only read it
    progress = Progress(study, budget, bool(cfg.tune.progress))
    try:
        with _sigterm_as_interrupt():
            while True:
                trial = _take_trial(study, cfg, budget)
                if trial is not None:
                    run_trial(study, trial, cfg, space, run_root)
                    progress.update()
                elif wait_for_peers and _peers_may_die(study):
                    progress.waiting()
                    pause(_poll_s(study._storage))
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

"""A cell's budget, apart from the trial loop: the study runner sizes budgets without running a trial."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import torch

from harness.store.records import BudgetRecord, ReferenceTrial, spent
from harness.training.run import resolve_device
from harness.settings.schema import CellConfig, SearchSpaceConfig, TuneConfig

# With tune.budget=flops, tune.n_trials sizes the FLOPs budget and is no cap; a cell still stops after
# this many times tune.n_trials trials (trials that fail at no cost would otherwise never spend it).
FLOPS_TRIAL_GUARD = 10


@dataclass(frozen=True)
class Budget(BudgetRecord):
    """A tuning run's limits (the stored form is BudgetRecord's), and when they are spent."""

    @classmethod
    def from_config(cls, tune: TuneConfig) -> "Budget":
        """The configured limits (checked by TuneConfig.check; tune.budget=flops is resolved by resolve_budget)."""
        return cls(tune.n_trials, tune.max_flops, tune.max_wall_s, tune.budget)

    def exhausted(self, trials: list[optuna.trial.FrozenTrial]) -> bool:
        s = spent(trials)
        return ((self.n_trials is not None and s["n_trials"] >= self.n_trials)
                or (self.max_flops is not None and s["flops"] >= self.max_flops)
                or (self.max_wall_s is not None and s["wall_s"] >= self.max_wall_s))


def steps_bounds(space: SearchSpaceConfig | None, default: int) -> tuple[int, int]:
    """(low, high) of the train.steps a search space tunes (its `steps` range), else (default, default)."""
    steps = space.params.get("steps") if space is not None and space.params else None
    if steps is not None and "low" in steps and "high" in steps:
        return int(steps["low"]), int(steps["high"])
    if steps is not None and "high" in steps:
        return int(steps["high"]), int(steps["high"])
    return default, default


def reference_steps(cfg: CellConfig) -> tuple[int, str]:
    """The steps of the reference trial: tune.reference_steps (harness-study sets it to the midpoint
    of the widest steps range across its strategies), else the midpoint of this cell's own range."""
    given = cfg.tune.reference_steps
    if given is not None:
        return int(given), "tune.reference_steps"
    low, high = steps_bounds(cfg.search_space, cfg.train.steps)
    return int(round((low + high) / 2)), f"midpoint of this cell's steps range {low}-{high}"


def reference_trial(cfg: CellConfig, task) -> ReferenceTrial:
    """What one trial costs, for sizing a FLOPs budget, from what every strategy at this size shares:
    one step of the whole model trained from a random start (harness.training.compute's counter on a real batch
    of train.batch_size), times the reference steps, plus the validations such a trial makes."""
    from harness.training.compute import eval_flops_per_sample, train_step_flops
    from harness.data.task import one_batch
    from harness.training.models import create_backbone

    steps, steps_from = reference_steps(cfg)
    batch = cfg.train.batch_size
    device = resolve_device(cfg.trainer)
    with torch.random.fork_rng(devices=[]):  # counting must not move the process's random state
        model = create_backbone(cfg.model, task.num_classes, task.in_chans, task.image_size).to(device)
        x, y = (t.to(device) for t in one_batch(task.train, batch))
        step_flops = train_step_flops(model, x, y)
        per_sample = eval_flops_per_sample(model, one_batch(task.val, batch)[0].to(device))
    every = cfg.train.val_every
    validations = steps // every + (1 if steps % every else 0)  # on the grid, plus one at an off-grid end
    val_flops = per_sample * len(task.val) * validations
    return ReferenceTrial(trial_flops=step_flops * steps + val_flops, step_flops=step_flops, steps=steps,
                          steps_from=steps_from, validations=validations, val_flops=val_flops,
                          batch_size=min(batch, len(task.train)), model=cfg.model.name)


def resolve_budget(cfg: CellConfig, task) -> Budget:
    """tune.budget=trials: the limits as configured. flops: one FLOPs limit, tune.max_flops or else
    tune.n_trials x reference_trial(); n_trials then only guards (FLOPS_TRIAL_GUARD x)."""
    budget = Budget.from_config(cfg.tune)
    if budget.kind == "trials":
        return budget
    reference = reference_trial(cfg, task) if budget.max_flops is None else None
    max_flops = budget.max_flops if reference is None else budget.n_trials * reference.trial_flops
    guard = FLOPS_TRIAL_GUARD * budget.n_trials if budget.n_trials else None
    return Budget(guard, float(max_flops), budget.max_wall_s, "flops", reference)


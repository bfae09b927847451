"""The pruner and the callback that feeds it, apart from the trial loop: benchmarks replay them without a cell."""

from __future__ import annotations

import optuna
import pytorch_lightning as pl
from harness.store.records import PrunerRecord
from harness.tuning.budget import steps_bounds
from harness.settings.schema import CellConfig, PrunerConfig


def max_resource(cfg: CellConfig) -> int | None:
    """The most steps the pruner plans for (Hyperband's brackets): pruner.max_resource, else the
    cell's own steps.high; None for pruners that take no maximum."""
    p = cfg.pruner
    if p.name != "hyperband":
        return None
    return p.max_resource if p.max_resource is not None else _max_steps(cfg)


def pruner_attrs(cfg: CellConfig) -> PrunerRecord:
    """The cell's pruner as built, stored so the report can check both strategies' pruners agree."""
    p = cfg.pruner
    return PrunerRecord(p.name, max_resource(cfg), None if p.name != "hyperband" else
                        ("pruner.max_resource" if p.max_resource is not None else "steps.high"), p.settings())


def make_pruner(cfg: CellConfig) -> optuna.pruners.BasePruner:
    p: PrunerConfig = cfg.pruner
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max_resource(cfg),
                                              reduction_factor=p.reduction_factor)
    if p.name == "asha":  # one bracket of successive halving: every trial faces the first rung
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                      reduction_factor=p.reduction_factor,
                                                      min_early_stopping_rate=p.min_early_stopping_rate)
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    return optuna.pruners.NopPruner()  # pruner=none (PrunerConfig.check refused any other name)


def _max_steps(cfg: CellConfig) -> int:
    return steps_bounds(cfg.search_space, cfg.train.steps)[1]


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

    def judge(self, module: pl.LightningModule, step: int, acc: float) -> bool:
        """Report this validation; True when the pruner rejects the trial (never in LP-FT's head-only phase).
        A fused member's judge (harness/training/fused.py), and this callback's own."""
        self.report(step, acc)
        return step >= last_phase_start(module) and self.trial.should_prune()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not pl_module.val_history:
            return
        step, acc = pl_module.val_history[-1]
        if self.judge(pl_module, step, acc):
            trainer.should_stop = True


def last_phase_start(module: pl.LightningModule) -> int:
    """The step from which a run trains what it will end with. LP-FT's head-only phase is judged by
    what it cannot yet do: pruning it there (as Hyperband did to the LP-FT recipe in 4 of 6 digits
    cells, at 0.40 validation accuracy) handicaps fine-tuning's search, so the pruner waits."""
    phases = getattr(module, "phases", None) or []
    return int(phases[-1].start) if phases else 0


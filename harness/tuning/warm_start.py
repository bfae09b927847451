"""Warm-started tuning (tune.warm_start, issue 23): a new tuning run's first trials include, after
the recipes, the winners of the nearest smaller and larger sizes of the same study, strategy and
tuning run that have finished (their best parameters are stored once re-run), fitted to this
cell's space.

Only tuning run k's own neighbours: the K tuning runs of one size must stay independent draws of
"what a search finds" (they are the unit of replication), so run k never starts from run j's
winners. Which neighbours have finished when a run opens depends on the order the workers took
the cells in; that is part of what a re-run of the study meets, and the tuning runs measure it.
"""

from __future__ import annotations

from typing import Any

import optuna

from harness.settings.schema import CellConfig
from harness.store.records import CellId, cell_studies, storage_of
from harness.tuning.search_space import Recipe, SearchSpace


def neighbour_winners(study: optuna.Study, cfg: CellConfig, space: SearchSpace) -> list[Recipe]:
    """The best parameters of the nearest finished smaller and larger size (same study, strategy and
    tuning run), fitted to `space`, as recipes named after their size; smaller first."""
    here = CellId(cfg.study.name, cfg.strategy.name, cfg.data.n_train, cfg.tune.run)
    below: dict[int, dict[str, Any]] = {}
    above: dict[int, dict[str, Any]] = {}
    for record, cell in cell_studies(storage_of(study), here.study):
        best = record.best_params
        if best is None or (cell.strategy, cell.tuning) != (here.strategy, here.tuning) or cell.n_train == here.n_train:
            continue
        (below if cell.n_train < here.n_train else above)[cell.n_train] = best
    chosen = ([(max(below), below[max(below)])] if below else []) + ([(min(above), above[min(above)])] if above else [])
    out = [Recipe(f"winner of n={n}", space.fit(values)) for n, values in chosen]
    return [r for r in out if r.values]

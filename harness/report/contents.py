"""What a report says, read once from the storage (`read_report`) into one typed object, `Report`,
that every renderer takes: the figures (figures.draw), crossover.json (Crossover.write), the CSVs,
report.md / report.html (document.build_document) and W&B (wandb_run.log_to_wandb). Nothing is
derived twice, so the files cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd

from harness.report.anytime import Anytime, anytime_curve, budget_levels, pretraining_known, winner_map
from harness.report.answer import headline_line
from harness.report.cells import Cell, Pretraining, final_values, load_cells, n_val_by_size, pretraining, replicates_of
from harness.report.crossover import Crossover, Source
from harness.report.frames import cells_frame, importances, trials_frame
from harness.report.verdict import HORIZON, MARGIN, Comparison, TransferRow, compare
from harness.store.records import Caps


@dataclass(frozen=True)
class Report:
    """One study's report: its cells and the frames, statistics and notes derived from them."""

    study: str
    storage: str  # the storage's URL as messages show it (password redacted)
    metric: str
    cells: list[Cell]
    curves: dict[str, Anytime]  # best-so-far validation accuracy against FLOPs, by cell name
    trials: pd.DataFrame  # trials.csv
    table: pd.DataFrame  # cells.csv
    values: dict[str, dict[int, list[float]]]  # {strategy: {n_train: metric per re-run}}
    n_val: dict[int, int | None]  # {n_train: validation labels that selected the configuration}
    crossover: Crossover
    headline: str  # the one line harness-report prints
    transfer: list[TransferRow]  # effective data transferred per fine-tune size
    maps: list[pd.DataFrame]  # the winner maps: without pretraining FLOPs, and with them when known
    importances: pd.DataFrame
    importance_notes: list[str]
    pretraining: list[Pretraining]
    missing_panel: str | None  # why the winner map has no panel with pretraining FLOPs, or None


def study_comparison(cells: list[Cell], *, metric: str = "test_acc", n_boot: int = 1000, margin: float = MARGIN,
                     horizon: float = HORIZON, caps: Caps | None = None) -> Comparison:
    """The verdict on a study's cells, as the report states it (harness-study's top-up asks the same
    question). `caps`: what the study may still add; by default what the cells stored (harness-tune's
    own settings), else Caps()."""
    if caps is None:
        stored = [c.record.caps for c in cells if c.record.caps is not None]
        caps = stored[0] if stored else None
    reps = replicates_of(cells, metric)
    return compare(reps.get("finetune", {}), reps.get("scratch", {}), margin=float(margin), n_boot=n_boot,
                   seed=0, horizon=float(horizon), metric=metric, caps=caps)


def unknown_pretraining(source: Source) -> str:
    """Why the winner map has no panel that charges fine-tuning for its pretraining."""
    return (f"With pretraining: not drawn, because the pretraining FLOPs of the fine-tune weights ({source.origin}) "
            "are unknown; declare them with strategy.pretrain_flops to draw it.")


def read_report(storage: optuna.storages.BaseStorage, shown: str, study: str, *, metric: str, n_boot: int,
                margin: float, horizon: float) -> Report:
    """`study`'s report from the storage (its cells: load_cells, ConfigError when there are none)."""
    cells = load_cells(storage, study, shown)
    curves = {c.name: anytime_curve(c.trials) for c in cells}
    comparison = study_comparison(cells, metric=metric, n_boot=n_boot, margin=margin, horizon=horizon)
    crossover = Crossover.of(comparison, cells)
    known = pretraining_known(cells)
    budgets = budget_levels(cells, curves, with_pretraining=known)
    maps = [winner_map(cells, curves, budgets, with_pretraining=flag, margin=float(margin)) for flag in (False, True)
            if known or not flag]
    imp, imp_notes = importances(cells, storage)
    return Report(
        study=study, storage=shown, metric=metric, cells=cells, curves=curves, trials=trials_frame(cells),
        table=cells_frame(cells, metric, curves), values=final_values(cells, metric), n_val=n_val_by_size(cells),
        crossover=crossover, headline=headline_line(crossover), transfer=list(comparison.transfer), maps=maps,
        importances=imp, importance_notes=imp_notes, pretraining=pretraining(cells),
        missing_panel=None if known else unknown_pretraining(crossover.source))

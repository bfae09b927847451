"""The report: everything a study measured, read from the Optuna storage and nothing else.

Each tuning run of a cell is one Optuna study whose user attrs name its study, strategy, n_train and run
(harness/store/records.py writes and decodes them; the study's name is for display only). From those cells the
report derives

- tables: every trial (trials.csv), one row per cell (cells.csv), the crossover (crossover.json);
- figures: learning curves with the crossover, effective data transferred, a winner map over data
  size x compute (with and without pretraining FLOPs), best-so-far accuracy against compute;
- report.md and a self-contained report.html with the verdict, the compute spent, search-space
  checks (best parameters at an edge of their range, parameter importances) and the comparison
  table; optionally one W&B run (job_type "report") holding the same.

Because the storage is the single source of truth, the report works however the cells were
launched (one command, a shell multirun, many machines) and can be rebuilt at any time.

The package, by concern: `cells` reads the storage, `frames` derives the trial and cell frames
(edge flags, fairness, importances), `anytime` the anytime curves and the winner map, `verdict` the
statistics, `crossover` the typed crossover.json (its one writer and reader), `contents` reads all of
it once into one `Report`; the renderers take that: `figures` draws the plots, `answer` and `tables`
say the verdict and the tables, `document` renders report.md / report.html, `wandb_run` logs the
report to W&B. This module writes the files (`build_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from harness.store.records import open_existing
from harness.report.answer import headline_line, short_headline
from harness.report.cells import LABELS, STRATEGIES, Cell, final_values, load_cells, pretraining
from harness.report.contents import Report, read_report, study_comparison
from harness.report.crossover import Crossover
from harness.report.document import PLOT_FILES, Document, build_document
from harness.report.figures import draw, plot_anytime, plot_effective_data, plot_learning_curves, plot_winner_map
from harness.report.anytime import Anytime, anytime_curve, budget_levels, winner_map
from harness.report.frames import (
    EDGE_FRACTION,
    EdgeFlag,
    cells_frame,
    edge_flags,
    importances,
    range_position,
    trials_frame,
)
from harness.report.verdict import HORIZON, MARGIN, Comparison
from harness.report.wandb_run import log_to_wandb
from harness.settings.schema import METRICS, LoggerConfig, ReportConfig

__all__ = [
    "EDGE_FRACTION", "HORIZON", "LABELS", "MARGIN", "METRICS", "PLOT_FILES", "STRATEGIES",
    "Anytime", "Cell", "Comparison", "Crossover", "Document", "EdgeFlag", "Report",
    "anytime_curve", "budget_levels", "build_report", "cells_frame", "edge_flags", "final_values",
    "headline_line", "importances", "load_cells", "log_to_wandb", "open_existing", "plot_anytime",
    "plot_effective_data", "plot_learning_curves", "plot_winner_map", "pretraining", "range_position",
    "read_report", "short_headline", "study_comparison", "trials_frame", "winner_map",
]

def check_report_settings(metric: str, n_boot: Any, margin: Any, horizon: Any) -> None:
    """build_report's own arguments, by ReportConfig's checks (library callers come without the door)."""
    ReportConfig(metric=metric, n_boot=n_boot, margin=margin, horizon=horizon).check("report")


def check_report_dir(out_dir: Path) -> None:
    """report.dir must be, or be creatable as, a folder: neither it nor a folder above it a file."""
    for path in (out_dir, *out_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == out_dir else f"lies under {path}, which is a file"
                raise ConfigError(f"report.dir={out_dir} {where}: point report.dir at a folder (it is created if missing)")
            return


def build_report(storage_url: str, study: str, out_dir: Path, *, metric: str = "test_acc", n_boot: int = 1000,
                 margin: float = MARGIN, horizon: float = HORIZON, wandb_cfg: LoggerConfig | None = None,
                 sqlite_wal: bool = True) -> dict[str, Any]:
    """Read `study`'s cells from the storage at `storage_url` and write the report into `out_dir`.

    Reads the Optuna storage and nothing else. Returns a summary: the crossover (crossover.json's
    content), the one-line verdict, the files written, and the W&B run directory when `wandb_cfg` was given.

    Raises:
        ConfigError: bad metric, n_boot, margin or horizon, an unreachable or malformed storage, a
            report.dir that is a file, or a study name with no cells (the message lists the
            studies present).
    """
    check_report_settings(metric, n_boot, margin, horizon)
    out_dir = Path(out_dir)
    check_report_dir(out_dir)
    storage, shown = open_existing(storage_url, sqlite_wal)
    report = read_report(storage, shown, study, metric=metric, n_boot=n_boot, margin=margin, horizon=horizon)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_report(report, out_dir)
    summary: dict[str, Any] = {
        "study": study, "storage": shown, "out_dir": str(out_dir), "metric": metric,
        "n_cells": len(report.cells), "n_trials": int(len(report.trials)), "crossover": report.crossover.to_json(),
        "verdict": report.headline, "files": {k: str(v) for k, v in files.items()},
        "report_html": str(files["report_html"]), "wandb_run_dir": None,
    }
    if wandb_cfg is not None:
        summary["wandb_run_dir"] = log_to_wandb(wandb_cfg, report, out_dir, {k: files[k] for k in PLOT_FILES})
    return summary


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Every file of the report into `out_dir`: the figures, the CSVs, crossover.json, report.md and
    report.html; returns them by key (PLOT_FILES' keys for the figures)."""
    pngs = draw(report)
    files: dict[str, Path] = {}
    for key, png in pngs.items():
        files[key] = out_dir / PLOT_FILES[key]
        files[key].write_bytes(png)
    tables = {"trials": ("trials.csv", report.trials), "cells": ("cells.csv", report.table),
              "effective_data_csv": ("effective_data.csv", pd.DataFrame([r.to_row() for r in report.transfer])),
              "winner_map_csv": ("winner_map.csv", pd.concat(report.maps, ignore_index=True))}
    for key, (name, frame) in tables.items():
        files[key] = out_dir / name
        frame.to_csv(files[key], index=False)
    files["crossover"] = out_dir / "crossover.json"
    report.crossover.write(files["crossover"])
    doc = build_document(report, pngs)
    files["report_md"] = out_dir / "report.md"
    files["report_md"].write_text(doc.markdown())
    files["report_html"] = out_dir / "report.html"
    files["report_html"].write_text(doc.html())
    return files

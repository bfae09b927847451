"""The report: everything a study measured, read from the Optuna storage and nothing else.

One cell of a study is one Optuna study whose user attrs name its study, strategy and n_train
(harness/tuning/tune.py writes them; the study's name is for display only). From those cells the
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
(edge flags, fairness, importances), `anytime` the anytime curves and the winner map, `tables` the
document's tables, `figures` draws the plots, `document` writes the verdict text and renders
report.md / report.html, `wandb_run` logs the report to W&B; this module puts them together
(`build_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from harness.store.records import open_existing
from harness.report.answer import headline_line, short_headline
from harness.report.cells import (
    LABELS,
    STRATEGIES,
    Cell,
    failed_by_size,
    final_values,
    load_cells,
    labelled_by_size,
    n_val_by_size,
    pretraining,
    probe_by_size,
    replicates_of,
    source_of,
)
from harness.report.document import PLOT_FILES, Document, build_document
from harness.report.figures import (
    plot_anytime, plot_effective_data, plot_error_rate, plot_gap, plot_learning_curves, plot_winner_map,
)
from harness.report.anytime import Anytime, anytime_curve, budget_levels, pretraining_known, winner_map
from harness.report.frames import (
    EDGE_FRACTION,
    EdgeFlag,
    cells_frame,
    edge_flags,
    importances,
    range_position,
    trials_frame,
)
from harness.report.verdict import HORIZON, MARGIN, Comparison, compare
from harness.report.wandb_run import log_to_wandb
from harness.settings.schema import METRICS, LoggerConfig, ReportConfig

__all__ = [
    "EDGE_FRACTION", "HORIZON", "LABELS", "MARGIN", "METRICS", "PLOT_FILES", "STRATEGIES",
    "Anytime", "Cell", "Comparison", "Document", "EdgeFlag",
    "anytime_curve", "budget_levels", "build_report", "cells_frame", "edge_flags", "final_values",
    "headline_line", "importances", "load_cells", "log_to_wandb", "open_existing", "plot_anytime",
    "plot_effective_data", "plot_learning_curves", "plot_winner_map", "pretraining", "range_position",
    "short_headline", "study_comparison", "trials_frame", "winner_map",
]

def check_report_settings(metric: str, n_boot: Any, margin: Any, horizon: Any) -> None:
    """build_report's own arguments, by ReportConfig's checks (library callers come without the door)."""
    ReportConfig(metric=metric, n_boot=n_boot, margin=margin, horizon=horizon).check("report")


def study_comparison(cells: list[Cell], *, metric: str = "test_acc", n_boot: int = 1000, margin: float = MARGIN,
                     horizon: float = HORIZON, caps: dict[str, int] | None = None) -> Comparison:
    """The verdict on a study's cells, as the report states it (harness-study's top-up asks the same
    question). `caps`: what the study may still add; by default what the cells stored (harness-tune's
    own settings), else verdict.DEFAULT_CAPS."""
    if caps is None:
        stored = [c.attrs.get("caps") for c in cells if isinstance(c.attrs.get("caps"), dict)]
        caps = stored[0] if stored else None
    reps = replicates_of(cells, metric)
    return compare(reps.get("finetune", {}), reps.get("scratch", {}), margin=float(margin), n_boot=n_boot,
                   seed=0, horizon=float(horizon), metric=metric, caps=caps)


def unknown_pretraining(source: dict[str, Any]) -> str:
    """Why the winner map has no panel that charges fine-tuning for its pretraining."""
    return (f"With pretraining: not drawn, because the pretraining FLOPs of the fine-tune weights ({source['origin']}) "
            "are unknown; declare them with strategy.pretrain_flops to draw it.")


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

    Reads the Optuna storage and nothing else. Returns a summary: the crossover, the one-line
    verdict, the files written, and the W&B run directory when `wandb_cfg` was given.

    Raises:
        ConfigError: bad metric, n_boot, margin or horizon, an unreachable or malformed storage, a
            report.dir that is a file, or a study name with no cells (the message lists the
            studies present).
    """
    check_report_settings(metric, n_boot, margin, horizon)
    out_dir = Path(out_dir)
    check_report_dir(out_dir)
    storage, shown = open_existing(storage_url, sqlite_wal)
    cells = load_cells(storage, study, shown)
    out_dir.mkdir(parents=True, exist_ok=True)

    curves = {c.name: anytime_curve(c.trials) for c in cells}
    trials = trials_frame(cells)
    table = cells_frame(cells, metric, curves)
    values = final_values(cells, metric)
    n_val = n_val_by_size(cells)
    comparison = study_comparison(cells, metric=metric, n_boot=n_boot, margin=margin, horizon=horizon)
    crossover = comparison.to_json()
    counts: dict[tuple[str, int], int] = {}
    for c in cells:
        counts[(c.strategy, c.n_train)] = counts.get((c.strategy, c.n_train), 0) + len(c.final)
    failed = failed_by_size(cells)
    for row in crossover["per_n"]:
        row["failed"] = {s: failed.get((s, row["n"]), 0) for s in STRATEGIES}
    crossover["needs_cells"] = [{"strategy": s, "n_train": n, "replicates": counts[(s, n)]}
                                for n in comparison.needs for s in STRATEGIES if (s, n) in counts]
    crossover["source"] = source_of(cells)
    probes = probe_by_size(cells)
    for row in crossover["per_n"]:
        row["probe_acc"] = probes.get(row["n"])
    distinct_val = sorted({v for v in n_val.values() if v is not None})
    crossover["n_val"] = distinct_val[0] if len(distinct_val) == 1 else None
    crossover["n_val_by_n_train"] = {str(n): v for n, v in sorted(n_val.items())}
    crossover["n_labelled_by_n_train"] = {str(n): v for n, v in sorted(labelled_by_size(cells).items())}
    crossover["selection"] = sorted({c.selection for c in cells})
    crossover["cells_used"] = {s: sorted(values.get(s, {})) for s in STRATEGIES}
    line = headline_line(crossover)
    d_t = [row.to_row() for row in comparison.transfer]

    known = pretraining_known(cells)
    budgets = budget_levels(cells, curves, with_pretraining=known)
    maps = [winner_map(cells, curves, budgets, with_pretraining=flag, margin=float(margin)) for flag in (False, True)
            if known or not flag]
    why = None if known else unknown_pretraining(crossover["source"])
    imp, imp_notes = importances(cells, storage)
    pre = pretraining(cells)

    pngs = {
        "learning_curves": plot_learning_curves(values, crossover, metric, study, n_val),
        "error_rate": plot_error_rate(values, crossover, metric, study),
        "gap": plot_gap(crossover, study),
        "effective_data": plot_effective_data(d_t, study),
        "winner_map": plot_winner_map(maps, study, n_val, missing=why),
        "anytime": plot_anytime(cells, curves, study),
    }
    files: dict[str, Path] = {}
    for key, png in pngs.items():
        files[key] = out_dir / PLOT_FILES[key]
        files[key].write_bytes(png)
    files["trials"] = out_dir / "trials.csv"
    trials.to_csv(files["trials"], index=False)
    files["cells"] = out_dir / "cells.csv"
    table.to_csv(files["cells"], index=False)
    files["effective_data_csv"] = out_dir / "effective_data.csv"
    pd.DataFrame(d_t).to_csv(files["effective_data_csv"], index=False)
    files["winner_map_csv"] = out_dir / "winner_map.csv"
    pd.concat(maps, ignore_index=True).to_csv(files["winner_map_csv"], index=False)
    files["crossover"] = out_dir / "crossover.json"
    files["crossover"].write_text(json.dumps(crossover, indent=2) + "\n")

    doc = build_document(study, shown, cells, table, values, crossover, line, d_t, maps, imp, imp_notes, pre,
                         pngs, metric, n_val, missing_panel=why)
    files["report_md"] = out_dir / "report.md"
    files["report_md"].write_text(doc.markdown())
    files["report_html"] = out_dir / "report.html"
    files["report_html"].write_text(doc.html())

    summary: dict[str, Any] = {
        "study": study, "storage": shown, "out_dir": str(out_dir), "metric": metric,
        "n_cells": len(cells), "n_trials": int(len(trials)), "crossover": crossover, "verdict": line,
        "files": {k: str(v) for k, v in files.items()}, "report_html": str(files["report_html"]),
        "wandb_run_dir": None,
    }
    if wandb_cfg is not None:
        frames = {"trials": trials, "cells": table,
                  "crossover": pd.DataFrame([{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                              for k, v in crossover.items()}])}
        summary["wandb_run_dir"] = log_to_wandb(wandb_cfg, study, out_dir, frames, crossover,
                                                {k: files[k] for k in PLOT_FILES})
    return summary

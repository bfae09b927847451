"""The report (harness/report/contents.py's Report) as one W&B run (job_type "report"); wandb is imported
only when it is logged."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from harness.report.contents import Report
from harness.settings.schema import LoggerConfig


def log_to_wandb(wandb_cfg: LoggerConfig, report: Report, out_dir: Path, plots: Mapping[str, Path]) -> str | None:
    """One W&B run (job_type "report", group = study): tables, plots, the report folder as an
    artifact of type "report". Returns the run's local directory."""
    import wandb

    from harness.training.loggers import wandb_mode

    study, crossover = report.study, report.crossover.to_json()
    frames = {"trials": report.trials, "cells": report.table,
              "crossover": pd.DataFrame([{k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                          for k, v in crossover.items()}])}
    save_dir = Path(str(wandb_cfg.dir or "outputs")).resolve()  # absolute: W&B's service may run in another folder
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=str(wandb_cfg.project or "harness"), entity=wandb_cfg.entity, mode=wandb_mode(wandb_cfg),
                     dir=str(save_dir), job_type="report", group=study, name=f"report-{study}",
                     config={"study": study, "crossover": crossover}, reinit="create_new")
    try:
        run.log({name: wandb.Table(dataframe=_wandb_safe(frame)) for name, frame in frames.items()})
        run.log({name: wandb.Image(str(path), caption=name) for name, path in plots.items()})
        c = report.crossover
        summary = {"status": c.status, "margin": c.margin, "n_star": c.n_star, "n_cross": c.n_cross,
                   "agreement": c.agreement}
        for key, value in summary.items():
            if value is not None:
                run.summary[f"crossover/{key}"] = value
        artifact = wandb.Artifact(name=re.sub(r"[^A-Za-z0-9_.-]", "-", f"report-{study}"), type="report",
                                  metadata={"study": study, "crossover": crossover})
        artifact.add_dir(str(out_dir))
        run.log_artifact(artifact)
        run_dir = str(Path(run.dir).parent) if getattr(run, "dir", None) else None
    finally:
        run.finish()  # this run only: harness-study's own study run stays open until the study ends
    return run_dir


def _wandb_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """W&B tables want one type per column: objects become strings, missing values None."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out

"""Experiment loggers: csv (default), wandb (imported only when chosen), none."""

from __future__ import annotations

import os
from pathlib import Path

from harness.settings.schema import LoggerConfig, RunConfig, as_dict


def wandb_mode(logger_cfg: LoggerConfig) -> str:
    return str(logger_cfg.mode or os.environ.get("WANDB_MODE") or "offline")


def make_logger(cfg: RunConfig, run_dir: Path, role: str = "target", name: str | None = None, extra_config: dict | None = None):
    kind = str(cfg.logger.name)
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version="")
    from pytorch_lightning.loggers import WandbLogger

    strategy = "pretrain" if role == "source" else str(cfg.strategy.name)
    n_train = cfg.data.n_train
    config = as_dict(cfg)
    config.pop("storage", None)  # may carry a database password
    config.update(extra_config or {})
    save_dir = Path(str(cfg.logger.dir))
    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=str(cfg.logger.project), entity=cfg.logger.entity, save_dir=str(save_dir), mode=wandb_mode(cfg.logger),
        group=str(cfg.study_name), job_type=strategy, tags=[f"n_train={n_train}", strategy],
        name=name or f"{strategy}-n{n_train}", config=config, reinit="finish_previous",
    )


def finish_logger(logger, state: str) -> None:
    """Close a W&B run so that the next run (the next trial) gets its own; its final state
    (complete, pruned, failed) stays visible in the run's summary and exit code."""
    if logger is not None and type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.run.summary["final_state"] = state
            wandb.finish(exit_code=1 if state == "failed" else 0)  # wandb 0.31 has no quiet=

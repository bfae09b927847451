"""Experiment loggers: csv (default), wandb (imported only when chosen), none."""

from __future__ import annotations

import os
from pathlib import Path

from harness.settings.schema import LoggerConfig, RunConfig, as_dict


def wandb_mode(logger_cfg: LoggerConfig) -> str:
    return str(logger_cfg.mode or os.environ.get("WANDB_MODE") or "offline")


def make_logger(cfg: RunConfig, run_dir: Path, role: str = "target", name: str | None = None,
                extra_config: dict | None = None, job_type: str = "train"):
    """The run's logger. W&B: one run per training, job_type "trial" (tuning), "rerun" (a best
    configuration re-run), "pretrain" (the source model) or "train" (harness-train), grouped by the
    study, with n_train and the strategy in its config and tags; a run of its own even beside the
    study's open run (reinit="create_new")."""
    kind = cfg.logger.name
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version="")
    from pytorch_lightning.loggers import WandbLogger

    strategy = "pretrain" if role == "source" else cfg.strategy.name
    n_train = cfg.data.n_train
    config = as_dict(cfg)
    config.pop("storage", None)  # may carry a database password
    config.update(extra_config or {})
    save_dir = Path(cfg.logger.dir).resolve()  # absolute: W&B's service may run in another folder
    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=cfg.logger.project, entity=cfg.logger.entity, save_dir=str(save_dir), mode=wandb_mode(cfg.logger),
        group=cfg.study_name, job_type="pretrain" if role == "source" else job_type,
        tags=[f"n_train={n_train}", strategy], name=name or f"{strategy}-n{n_train}", config=config,
        reinit="create_new",
    )


def finish_logger(logger, state: str, summary: dict | None = None) -> None:
    """Close this run's W&B run (not another one the process holds open, such as the study's), so
    the next training gets its own; its final state (complete, pruned, failed) and `summary` (the
    validation and test accuracy) stay in its summary."""
    if logger is not None and type(logger).__name__ == "WandbLogger":
        run = getattr(logger, "_experiment", None)
        if run is not None:
            run.summary["final_state"] = state
            for key, value in (summary or {}).items():
                if value is not None:
                    run.summary[key] = value
            run.finish(exit_code=1 if state == "failed" else 0)

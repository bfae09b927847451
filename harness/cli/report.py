"""harness-report: the report of one study, built from the Optuna storage alone."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli import CONFIG_DIR
from harness.errors import exits_cleanly, hydra_app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
@exits_cleanly
def _main(composed: DictConfig) -> dict:
    from pathlib import Path

    from harness.settings.config import load
    from harness.settings.schema import ReportAppConfig
    from harness.report import build_report

    cfg = load(ReportAppConfig, composed)

    wandb_cfg = cfg.logger if cfg.logger.name == "wandb" else None
    summary = build_report(
        cfg.storage.url,
        cfg.study.name,
        Path(cfg.report.dir),
        metric=cfg.report.metric,
        n_boot=cfg.report.n_boot,
        margin=cfg.report.margin,
        horizon=cfg.report.horizon,
        wandb_cfg=wandb_cfg,
        sqlite_wal=cfg.storage.wal,
    )
    print(f"report: {Path(summary['report_html']).resolve()}")
    print(summary["verdict"])
    if summary["wandb_run_dir"]:
        print(f"wandb run: {summary['wandb_run_dir']}")
    return summary


main = hydra_app(_main)

if __name__ == "__main__":
    main()

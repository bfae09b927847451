"""harness-study: the whole question in one command (default: the embedded digits study, offline)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli import CONFIG_DIR
from harness.errors import exits_cleanly, hydra_app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="study")
@exits_cleanly
def _study(composed: DictConfig) -> float:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from harness.settings.config import load
    from harness.settings.schema import StudyAppConfig
    from harness.study.orchestrator import run_study
    from harness.study.plan import plan_study

    cfg = load(StudyAppConfig, composed)
    if cfg.study.plan:
        print(plan_study(cfg)["plan"])
        return 0.0
    summary = run_study(cfg, Path(HydraConfig.get().runtime.output_dir))
    print(summary.get("verdict", ""))
    print(f"report: {summary.get('report_html')}")
    return float(summary.get("n_star") or 0.0)


@hydra_app
def main() -> None:
    _study()


if __name__ == "__main__":
    main()

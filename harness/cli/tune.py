"""harness-tune: tune one cell (strategy x n_train) to its budget; -m spreads cells over launchers.
`tune.run=k` is the cell's tuning run k (its own sampler seed, seeds and validation draw)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli import CONFIG_DIR
from harness.errors import exits_cleanly, hydra_app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="tune")
@exits_cleanly
def _main(composed: DictConfig) -> float:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from harness.settings.config import load
    from harness.settings.schema import CellConfig
    from harness.store.records import TuningRunRecord
    from harness.tuning.replicates import tuning_run
    from harness.tuning.tune import best_value, tune_cell

    cfg = load(CellConfig, composed)
    study = tune_cell(tuning_run(cfg, cfg.tune.run), Path(HydraConfig.get().runtime.output_dir))
    tests = [r.test_acc for r in TuningRunRecord.of(study).final if r.test_acc is not None]
    summary = f"best val_acc={best_value(study):.4f}"
    if tests:
        summary += f", re-run test_acc={sum(tests) / len(tests):.4f} over {len(tests)} seeds"
    print(f"{study.study_name}: {len(study.trials)} trials, {summary}")
    return best_value(study)


main = hydra_app(_main)

if __name__ == "__main__":
    main()

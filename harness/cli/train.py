"""harness-train: one training run of one strategy on one target-data size."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.cli import CONFIG_DIR
from harness.errors import exits_cleanly, hydra_app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@exits_cleanly
def _main(composed: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from harness.settings.config import load
    from harness.settings.schema import RunConfig
    from harness.training.pretrain import ensure_source
    from harness.training.run import run_training
    from harness.training.weights import resolve_weights

    cfg = load(RunConfig, composed)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ensure_source(cfg)  # the trainer only reads the source model: made here when missing
    result = run_training(cfg, run_dir, weights=resolve_weights(cfg))
    (run_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2))
    test = "n/a" if result.test_acc is None else f"{result.test_acc:.4f}"
    val = "n/a (none held out)" if result.val_acc is None else f"{result.val_acc:.4f}"
    print(f"{result.strategy} n_train={result.n_train}: val_acc={val} test_acc={test} "
          f"train_flops={result.compute.train_flops:.3g} wall_s={result.compute.wall_s:.1f} -> {run_dir / 'result.json'}")
    return result.val_acc


main = hydra_app(_main)

if __name__ == "__main__":
    main()

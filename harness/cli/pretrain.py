"""harness-pretrain: train the backbone on the source classes and cache the checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli import CONFIG_DIR
from harness.errors import exits_cleanly, hydra_app


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pretrain")
@exits_cleanly
def _main(composed: DictConfig) -> float:
    from harness.settings.config import load
    from harness.settings.schema import RunConfig
    from harness.training.pretrain import ensure_pretrained, find_pretrained

    cfg = load(RunConfig, composed)  # checked once: what the cache key reads included
    cached = find_pretrained(cfg)
    made = cached or ensure_pretrained(cfg)
    meta = made.meta
    verb = "reused" if cached else "made"
    print(f"{verb} {made.weights}: source classes {meta['source_classes']} val_acc={meta['source_val_acc']:.4f} "
          f"flops={meta['flops']:.3g} wall_s={meta['wall_s']:.1f}")
    return float(meta["source_val_acc"])


main = hydra_app(_main)

if __name__ == "__main__":
    main()

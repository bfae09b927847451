"""The offline source of pretrained weights: train the backbone on the source task (the dataset's
source classes, or rendered glyphs with data.source=glyphs) once per config, cache the
safetensors checkpoint with what it cost, and reuse it. The one place a pretraining starts."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from filelock import FileLock

from harness.settings.schema import DataConfig, RunConfig, StrategyConfig
from harness.training.source_cache import (META_FILE, WEIGHTS_FILE, Pretrained, cache_dir, config_hash, find_pretrained,
                                  source_config)

__all__ = ["META_FILE", "WEIGHTS_FILE", "Pretrained", "cache_dir", "check_fonts", "config_hash",
           "ensure_pretrained", "ensure_source", "find_pretrained", "pretrain", "source_config"]


def _locked(folder: Path) -> FileLock:
    """One pretraining per config even when many tuning workers ask at once (an flock on Unix,
    which the kernel drops when its holder dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / ".lock")


def check_fonts(data: DataConfig) -> None:
    """For a glyph source, that some font draws every character: a second's rendering, so it is
    done before a pretraining, not with every run's settings."""
    if data.source == "glyphs":
        from harness.data.glyphs import font_templates

        font_templates(data.glyphs.chars, data.glyphs.fonts)


def ensure_pretrained(cfg: RunConfig) -> Pretrained:
    """The cached source model for this config, made first when missing."""
    found = find_pretrained(cfg)
    if found:
        return found
    check_fonts(cfg.data)  # characters no font draws: refused before the cache folder is made
    with _locked(cache_dir(cfg)):
        return find_pretrained(cfg) or pretrain(cfg)


def ensure_source(cfg: RunConfig) -> Pretrained | None:
    """What an entry point calls before training: the source model a fine-tune from
    strategy.weights=source needs (the trainer only reads the cache), made once per config and only
    after the target config and data were checked, so that a bad input starts no pretraining."""
    from harness.data.task import build_task

    if cfg.strategy.name != "finetune" or cfg.strategy.weights != "source":
        return None
    found = find_pretrained(cfg)
    if found:
        return found
    build_task(cfg.data, "target")
    return ensure_pretrained(cfg)


def pretrain(cfg: RunConfig) -> Pretrained:
    from safetensors.torch import save_file

    from harness.training.run import run_training
    from harness.training.weights import InitialWeights

    folder = cache_dir(cfg)
    source_cfg = dataclasses.replace(cfg, strategy=StrategyConfig(name="scratch"), train=cfg.pretrain.train,
                                     data=dataclasses.replace(cfg.data, augment=cfg.pretrain.augment), seed=cfg.pretrain.seed)
    result = run_training(source_cfg, folder / "run", role="source", weights=InitialWeights())  # from scratch
    model = result.model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    meta = {
        "config_hash": config_hash(cfg),
        "model": cfg.model.name,
        "data": source_config(cfg)["data"],
        "source": cfg.data.source,
        "source_classes": result.class_names,
        "n_source_train": result.n_train,
        "steps": result.compute.steps,
        "source_val_acc": result.val_acc,
        "flops": result.compute.total_flops,
        "train_flops": result.compute.train_flops,
        "wall_s": result.compute.wall_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": source_config(cfg),
    }
    if meta["source"] == "glyphs":  # which of matplotlib's fonts drew them (the installed matplotlib decides)
        from harness.data.glyphs import font_templates

        settings = cfg.data.glyphs
        meta["source_fonts"] = list(font_templates(settings.chars, settings.fonts)[0])
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    tmp.replace(folder / WEIGHTS_FILE)  # the weights appear last: a half-written cache is never found
    return Pretrained(folder / WEIGHTS_FILE, meta)

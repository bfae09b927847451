"""The offline source of pretrained weights: train the backbone on the source task (the dataset's
source classes, or rendered glyphs with data.source=glyphs) once per config, cache the
safetensors checkpoint with what it cost, and reuse it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Pretrained:
    weights: Path
    meta: dict


def _source_data(data: DictConfig) -> dict:
    """The data settings the source task depends on. Source classes: the dataset, its split and
    classes (the same keys as before glyphs existed, so cached checkpoints keep their hash). Glyphs:
    every effective glyph setting, plus what fixes the target's image size and channels, and not
    the target's classes or splits."""
    from dataclasses import asdict

    from harness.data import glyph_settings, source_kind

    plain = OmegaConf.to_container(data, resolve=True)
    if source_kind(data) == "glyphs":
        return {**{k: plain.get(k) for k in ("name", "root", "dataset", "image_size")},
                "source": "glyphs", "glyphs": asdict(glyph_settings(data))}
    keys = ("name", "root", "dataset", "image_size", "split_seed", "source_classes", "target_classes", "source_n_val")
    return {k: plain.get(k) for k in keys}


def source_config(cfg: DictConfig) -> dict:
    """Everything that changes the source model, and nothing that doesn't (n_train, target strategy)."""
    return {
        "data": _source_data(cfg.data),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "train": OmegaConf.to_container(cfg.pretrain.train, resolve=True),
        "augment": str(cfg.pretrain.augment),
        "seed": int(cfg.pretrain.seed),
        # Standardised with the source task's own training part (checkpoints made with whole-pool
        # statistics, before this key, are not reused).
        "normalisation": "source training part",
    }


def config_hash(cfg: DictConfig) -> str:
    text = json.dumps(source_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.pretrain.cache_dir)).expanduser() / f"{cfg.model.name}-{config_hash(cfg)}"


def find_pretrained(cfg: DictConfig) -> Pretrained | None:
    folder = cache_dir(cfg)
    weights, meta = folder / WEIGHTS_FILE, folder / META_FILE
    if weights.is_file() and meta.is_file():
        return Pretrained(weights, json.loads(meta.read_text()))
    return None


@contextmanager
def _locked(folder: Path):
    """One pretraining per config even when many tuning workers ask at once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_pretrained(cfg: DictConfig) -> Pretrained:
    """The cached source model for this config, made first when missing."""
    from harness.config import validate_source, validate_train

    validate_train(cfg.pretrain.train, "pretrain.train")  # named as the user wrote it, before any folder is made
    validate_source(cfg.data)
    found = find_pretrained(cfg)
    if found:
        return found
    validate_source(cfg.data, fonts=True)  # characters no font draws: refused before the cache folder is made
    with _locked(cache_dir(cfg)):
        return find_pretrained(cfg) or pretrain(cfg)


def pretrain(cfg: DictConfig) -> Pretrained:
    from safetensors.torch import save_file

    from harness.data import source_kind
    from harness.run import run_training

    folder = cache_dir(cfg)
    source_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    source_cfg.strategy = {"name": "scratch"}
    source_cfg.train = cfg.pretrain.train
    source_cfg.data.augment = cfg.pretrain.augment
    source_cfg.seed = cfg.pretrain.seed
    result = run_training(source_cfg, folder / "run", role="source")
    model = result.model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    meta = {
        "config_hash": config_hash(cfg),
        "model": str(cfg.model.name),
        "data": source_config(cfg)["data"],
        "source": source_kind(cfg.data),
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
        from harness.data import glyph_settings
        from harness.glyphs import font_templates

        settings = glyph_settings(cfg.data)
        meta["source_fonts"] = list(font_templates(settings.chars, settings.fonts)[0])
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    tmp.replace(folder / WEIGHTS_FILE)  # the weights appear last: a half-written cache is never found
    return Pretrained(folder / WEIGHTS_FILE, meta)

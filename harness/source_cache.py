"""The pretraining cache, read-only: where a config's source model lives and whether it is there.
harness.weights.resolve_weights reads it for the trainer; only harness.pretrain, which sits above the trainer, fills it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.schema import DataConfig, RunConfig, as_dict

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Pretrained:
    weights: Path
    meta: dict


def _source_data(data: DataConfig) -> dict:
    """The data settings the source task depends on. Source classes: the dataset, its split and
    classes (the same keys as before glyphs existed, so cached checkpoints keep their hash). Glyphs:
    every effective glyph setting, plus what fixes the target's image size and channels, and not
    the target's classes or splits."""
    from dataclasses import asdict

    from harness.sources import glyph_settings, source_kind

    plain = as_dict(data)
    if source_kind(data) == "glyphs":
        return {**{k: plain.get(k) for k in ("name", "root", "dataset", "image_size")},
                "source": "glyphs", "glyphs": asdict(glyph_settings(data))}
    keys = ("name", "root", "dataset", "image_size", "split_seed", "source_classes", "target_classes", "source_n_val")
    return {k: plain.get(k) for k in keys}


def source_config(cfg: RunConfig) -> dict:
    """Everything that changes the source model, and nothing that doesn't (n_train, target strategy)."""
    return {
        "data": _source_data(cfg.data),
        "model": as_dict(cfg.model),
        "train": as_dict(cfg.pretrain.train),
        "augment": str(cfg.pretrain.augment),
        "seed": int(cfg.pretrain.seed),
        # Standardised with the source task's own training part (checkpoints made with whole-pool
        # statistics, before this key, are not reused).
        "normalisation": "source training part",
    }


def config_hash(cfg: RunConfig) -> str:
    text = json.dumps(source_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(cfg: RunConfig) -> Path:
    return Path(str(cfg.pretrain.cache_dir)).expanduser() / f"{cfg.model.name}-{config_hash(cfg)}"


def find_pretrained(cfg: RunConfig) -> Pretrained | None:
    folder = cache_dir(cfg)
    weights, meta = folder / WEIGHTS_FILE, folder / META_FILE
    if weights.is_file() and meta.is_file():
        return Pretrained(weights, json.loads(meta.read_text()))
    return None

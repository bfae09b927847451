"""The pretraining cache, read-only: where a config's source model lives and whether it is there.
harness.training.weights.resolve_weights reads it for the trainer; only harness.training.pretrain, which sits above the trainer, fills it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.settings.schema import DataConfig, RunConfig, as_dict

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Pretrained:
    weights: Path
    meta: dict


# The data settings a source model does not depend on: the target's sizes, draws and folds, and how
# data is fed or augmented (pretraining has its own augment). Every other setting keys the checkpoint,
# so a new one changes the key unless it is added here, on purpose (tests/test_weights.py).
# skip_bad_files is here because it never yields a second dataset: without it a bad file stops the run.
SOURCE_INDEPENDENT = frozenset({"download", "n_train", "n_val", "n_test", "subset", "draw", "cv_folds", "cv_fold",
                                "augment", "on_device_max_mb", "num_workers", "skip_bad_files", "source"})
# With printed glyphs the source is rendered, not cut from the dataset: its split and classes do not change it.
GLYPH_SOURCE_INDEPENDENT = SOURCE_INDEPENDENT | {"split_seed", "source_classes", "target_classes", "source_n_val"}


def _source_data(data: DataConfig) -> dict:
    """The data settings the source task depends on: every one but the independent ones above
    (the key set and so the hashes of checkpoints cached before the keys were derived are unchanged)."""
    from dataclasses import asdict

    plain = as_dict(data)
    glyphs = data.source == "glyphs"
    independent = GLYPH_SOURCE_INDEPENDENT if glyphs else SOURCE_INDEPENDENT | {"glyphs"}
    out = {k: v for k, v in plain.items() if k not in independent}
    return {**out, "source": "glyphs", "glyphs": asdict(data.glyphs)} if glyphs else out


def source_config(cfg: RunConfig) -> dict:
    """Everything that changes the source model, and nothing that doesn't (n_train, target strategy)."""
    return {
        "data": _source_data(cfg.data),
        "model": as_dict(cfg.model),
        "train": as_dict(cfg.pretrain.train),
        "augment": cfg.pretrain.augment,
        "seed": cfg.pretrain.seed,
        # Standardised with the source task's own training part (checkpoints made with whole-pool
        # statistics, before this key, are not reused).
        "normalisation": "source training part",
    }


def config_hash(cfg: RunConfig) -> str:
    text = json.dumps(source_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(cfg: RunConfig) -> Path:
    return Path(cfg.pretrain.cache_dir).expanduser() / f"{cfg.model.name}-{config_hash(cfg)}"


def find_pretrained(cfg: RunConfig) -> Pretrained | None:
    folder = cache_dir(cfg)
    weights, meta = folder / WEIGHTS_FILE, folder / META_FILE
    if weights.is_file() and meta.is_file():
        return Pretrained(weights, json.loads(meta.read_text()))
    return None

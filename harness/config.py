"""Config checks done once at start-up, each failing with a line a person can act on."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from harness.augment import LEVELS
from harness.errors import ConfigError
from harness.strategies import MODES

OPTIMIZERS = ("adamw", "sgd")
STRATEGIES = ("scratch", "finetune")
LOGGERS = ("csv", "wandb", "none")
ACCELERATORS = ("auto", "cpu", "gpu")


def _positive(value, key: str, kind=float) -> None:
    try:
        ok = kind(value) > 0 and kind(value) == float(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{key}={value} must be a positive {'integer' if kind is int else 'number'}: set {key} to a value above 0")


def require_int(value, key: str, least: int) -> None:
    """An integer setting with a floor (YAML's true/false are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key}={value} must be an integer >= {least}: fix {key}")


def _one_of(value, options, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value} is not one of {', '.join(map(str, options))}: set {key} to one of them")


def _fraction(value, key: str, low_open: bool, high_open: bool) -> None:
    v = float(value)
    if (v < 0 or (low_open and v == 0)) or (v > 1 or (high_open and v == 1)):
        raise ConfigError(f"{key}={value} must lie in {'(' if low_open else '['}0, 1{')' if high_open else ']'}: set it inside that range")


def validate_seeds(cfg: DictConfig) -> None:
    """`seed` and `pretrain.seed` (when there is one): integers >= 0, as seed_everything takes them."""
    require_int(cfg.seed, "seed", 0)
    if "pretrain" in cfg and "seed" in cfg.pretrain:
        require_int(cfg.pretrain.seed, "pretrain.seed", 0)


def validate_threads(trainer: DictConfig) -> None:
    threads = trainer.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"trainer.threads={threads} must be an integer >= 0 (torch CPU threads per process; 0 = torch's "
                          "default): fix trainer.threads")


def validate_study_name(name) -> None:
    """A cell is stored as <study.name>/<strategy>/n<n_train> and its outputs go to folders named
    after the study: the name is one path part, so no '/', backslash, control character or dots only."""
    text = str(name)
    bad = [c for c in text if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not text.strip() or text != text.strip() or bad or text in (".", ".."):
        why = f"contains {bad[0]!r}" if bad else "is empty, '.' or '..', or starts or ends with a space"
        raise ConfigError(f"study.name={text!r} {why}, but it is one part of a cell's name <study>/<strategy>/n<n_train> "
                          "and of folder names: use letters, digits, '-', '_' or '.', e.g. study.name=my-study")


def validate_train(train: DictConfig, prefix: str = "train") -> None:
    _positive(train.steps, f"{prefix}.steps", int)
    _positive(train.batch_size, f"{prefix}.batch_size", int)
    _positive(train.lr, f"{prefix}.lr")
    _positive(train.val_every, f"{prefix}.val_every", int)
    _one_of(train.optimizer, OPTIMIZERS, f"{prefix}.optimizer")
    if float(train.weight_decay) < 0:
        raise ConfigError(f"{prefix}.weight_decay={train.weight_decay} must be >= 0: set it to 0 or more")
    _fraction(train.warmup_frac, f"{prefix}.warmup_frac", False, True)
    _fraction(train.label_smoothing, f"{prefix}.label_smoothing", False, True)
    _fraction(train.momentum, f"{prefix}.momentum", False, True)


def _pretrain_flops(value, weights: str) -> None:
    """Declared FLOPs of weights from a file or the hub: a number >= 0, or null for unknown."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"strategy.pretrain_flops={value} must be a number >= 0 (the FLOPs that made the weights) "
                          "or null (unknown): fix it")
    if weights == "source":
        raise ConfigError("strategy.pretrain_flops is for weights from a file or the hub; own pretraining "
                          "(strategy.weights=source) is measured: remove strategy.pretrain_flops")


def validate_source(data: DictConfig, fonts: bool = False) -> None:
    """`data.source` and, for glyphs, every `data.glyphs` setting; with fonts=True also that some
    font draws the characters (a second's rendering: done before a pretraining, not every run)."""
    from harness.sources import glyph_settings, source_kind

    if source_kind(data) == "glyphs":
        settings = glyph_settings(data)
        if fonts:
            from harness.glyphs import font_templates

            font_templates(settings.chars, settings.fonts)


def validate_run(cfg: DictConfig) -> None:
    """Everything one training run reads; data sizes are checked against the data when loaded."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # omegaconf's MissingMandatoryValue / InterpolationResolutionError
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(f"config value {key or ''} is missing or unresolvable ({str(err).splitlines()[0]}): set it on the command line, e.g. {key or 'data.root'}=...") from None
    validate_train(cfg.train)
    validate_seeds(cfg)
    validate_threads(cfg.trainer)
    _one_of(cfg.strategy.name, STRATEGIES, "strategy")
    _one_of(cfg.data.augment, LEVELS, "data.augment")
    _one_of(cfg.logger.name, LOGGERS, "logger")
    _one_of(cfg.trainer.accelerator, ACCELERATORS, "trainer.accelerator")
    require_int(cfg.data.split_seed, "data.split_seed", 0)
    require_int(cfg.data.get("subset", 0), "data.subset", 0)  # absent in configs from before replicates: 0
    folds, fold = cfg.data.get("cv_folds", 0), cfg.data.get("cv_fold", 0)
    require_int(folds, "data.cv_folds", 0)
    require_int(fold, "data.cv_fold", -1)
    if folds == 1:
        raise ConfigError("data.cv_folds=1 holds nothing out: use 0 (the validation split) or >= 2 folds")
    if folds and fold >= folds:
        raise ConfigError(f"data.cv_fold={fold} but there are {folds} folds: use 0..{folds - 1}, or -1 for none held out")
    for key in ("n_train", "n_val", "n_test"):
        _positive(cfg.data[key], f"data.{key}", int)
    if not isinstance(cfg.data.get("skip_bad_files", False), bool):
        raise ConfigError(f"data.skip_bad_files={cfg.data.skip_bad_files} must be true or false: fix data.skip_bad_files")
    validate_source(cfg.data)
    if cfg.strategy.name == "finetune":
        s = cfg.strategy
        _one_of(s.mode, MODES, "strategy.mode")
        _fraction(s.lp_fraction, "strategy.lp_fraction", True, True)
        _fraction(s.layer_decay, "strategy.layer_decay", True, False)
        if int(s.freeze_stages) < 0:
            raise ConfigError(f"strategy.freeze_stages={s.freeze_stages} must be >= 0: count stages from the stem")
        if not str(s.weights):
            raise ConfigError("strategy.weights is empty: use source, hub, or a path to a weights file")
        _pretrain_flops(s.get("pretrain_flops"), str(s.weights))
    validate_train(cfg.pretrain.train, "pretrain.train")


def validate_cell(cfg: DictConfig) -> None:
    """A tuning cell: one run's settings plus the study name its Optuna study is named after."""
    validate_run(cfg)
    validate_study_name(cfg.study.name)

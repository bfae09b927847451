"""Config checks done once at start-up, each failing with a line a person can act on."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.settings.glyphs import GlyphSettings
from harness.settings.schema import (CellConfig, DataConfig, LoggerConfig, ModelConfig, PretrainConfig, PrunerConfig,
                            ReportAppConfig, ReportConfig, RunConfig, SearchSpaceConfig, StorageConfig, StrategyConfig,
                            StudyAppConfig, StudyConfig, TrainConfig, TrainerConfig, TuneConfig, AUGMENT_LEVELS,
                            SOURCES, STRATEGY_MODES)

T = TypeVar("T")

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


def validate_seeds(cfg: RunConfig) -> None:
    """`seed` and `pretrain.seed`: integers >= 0, as seed_everything takes them."""
    require_int(cfg.seed, "seed", 0)
    require_int(cfg.pretrain.seed, "pretrain.seed", 0)


def validate_threads(trainer: TrainerConfig) -> None:
    threads = trainer.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"trainer.threads={threads} must be an integer >= 0 (torch CPU threads per process; 0 = torch's "
                          "default): fix trainer.threads")


def validate_study_name(name) -> None:
    """A tuning run is stored as <study.name>/n<n_train>/<strategy>/t<run> and its outputs go to folders named
    after the study: the name is one path part, so no '/', backslash, control character or dots only."""
    text = str(name)
    bad = [c for c in text if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not text.strip() or text != text.strip() or bad or text in (".", ".."):
        why = f"contains {bad[0]!r}" if bad else "is empty, '.' or '..', or starts or ends with a space"
        raise ConfigError(f"study.name={text!r} {why}, but it is one part of a tuning run's name <study>/n<n_train>/<strategy>/t<run> "
                          "and of folder names: use letters, digits, '-', '_' or '.', e.g. study.name=my-study")


def validate_train(train: TrainConfig, prefix: str = "train") -> None:
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


def source_kind(cfg: DataConfig) -> str:
    """`data.source`: what pretraining learns from. classes = data.source_classes of this dataset;
    glyphs = printed characters (harness/data/glyphs.py)."""
    kind = cfg.source
    if kind not in SOURCES:
        raise ConfigError(f"data.source={kind} is not one of {', '.join(SOURCES)}: set data.source=classes (the dataset's source classes) or data.source=glyphs (printed letters)")
    return str(kind)


def validate_source(data: DataConfig) -> None:
    """`data.source` (the `data.glyphs` settings were checked when built; that some font draws the
    characters is the pretraining's own check: harness/training/pretrain.py)."""
    source_kind(data)


def validate_run(cfg: RunConfig) -> None:
    """Everything one training run reads; data sizes are checked against the data when loaded."""
    validate_train(cfg.train)
    validate_seeds(cfg)
    validate_threads(cfg.trainer)
    _one_of(cfg.strategy.name, STRATEGIES, "strategy")
    _one_of(cfg.data.augment, AUGMENT_LEVELS, "data.augment")
    _one_of(cfg.logger.name, LOGGERS, "logger")
    _one_of(cfg.trainer.accelerator, ACCELERATORS, "trainer.accelerator")
    require_int(cfg.data.split_seed, "data.split_seed", 0)
    require_int(cfg.data.subset, "data.subset", 0)
    require_int(cfg.data.draw, "data.draw", 0)
    folds, fold = cfg.data.cv_folds, cfg.data.cv_fold
    require_int(folds, "data.cv_folds", 0)
    require_int(fold, "data.cv_fold", -1)
    if folds == 1:
        raise ConfigError("data.cv_folds=1 holds nothing out: use 0 (the validation split) or >= 2 folds")
    if folds and fold >= folds:
        raise ConfigError(f"data.cv_fold={fold} but there are {folds} folds: use 0..{folds - 1}, or -1 for none held out")
    for key in ("n_train", "n_val", "n_test"):
        _positive(getattr(cfg.data, key), f"data.{key}", int)
    if not isinstance(cfg.data.skip_bad_files, bool):
        raise ConfigError(f"data.skip_bad_files={cfg.data.skip_bad_files} must be true or false: fix data.skip_bad_files")
    validate_source(cfg.data)
    if cfg.strategy.name == "finetune":
        s = cfg.strategy
        _one_of(s.mode, STRATEGY_MODES, "strategy.mode")
        _fraction(s.lp_fraction, "strategy.lp_fraction", True, True)
        _fraction(s.layer_decay, "strategy.layer_decay", True, False)
        if int(s.freeze_stages) < 0:
            raise ConfigError(f"strategy.freeze_stages={s.freeze_stages} must be >= 0: count stages from the stem")
        if not str(s.weights):
            raise ConfigError("strategy.weights is empty: use source, hub, or a path to a weights file")
        _pretrain_flops(s.pretrain_flops, str(s.weights))
    validate_train(cfg.pretrain.train, "pretrain.train")


def validate_study(study: StudyConfig) -> None:
    """harness-study's own settings: the grid, the workers, the top-up and the refinement."""
    validate_study_name(study.name)
    sizes = study.n_train
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        raise ConfigError(f"study.n_train={list(sizes) if isinstance(sizes, (list, tuple)) else sizes} must be a non-empty list of integers, e.g. study.n_train=[10,20,40]")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"study.n_train={list(sizes)} repeats a size: list each size once")
    strategies = list(study.strategies)
    if not strategies or len(set(strategies)) != len(strategies):
        raise ConfigError(f"study.strategies={strategies} must list distinct strategies, e.g. [finetune, scratch]")
    workers = study.workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"study.workers={workers} must be a positive integer")
    seeds, cap, step = study.seeds, study.max_seeds, study.topup_step
    if isinstance(cap, bool) or not isinstance(cap, int) or (isinstance(seeds, int) and cap < seeds):
        raise ConfigError(f"study.max_seeds={cap} must be an integer >= study.seeds ({seeds}): the most replicates a "
                          "cell gets when its verdict is undecided (= study.seeds turns the top-up off)")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"study.topup_step={step} must be a positive integer: replicates added per cell and round")
    runs, most = study.tunings, study.max_tunings
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"study.tunings={runs} must be a positive integer: tuning runs per cell (3 measures the "
                          "between-run variance; 1 has the report estimate it from the curves)")
    if isinstance(most, bool) or not isinstance(most, int) or most < runs:
        raise ConfigError(f"study.max_tunings={most} must be an integer >= study.tunings ({runs}): the most tuning "
                          "runs the top-up gives an undecided cell (= study.tunings turns that off)")
    _validate_adaptive(study)


def _validate_adaptive(study: StudyConfig) -> None:
    adaptive = study.adaptive
    if not isinstance(adaptive, bool):
        raise ConfigError(f"study.adaptive={adaptive} must be true or false")
    ratio = study.bracket
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1 or not math.isfinite(ratio):
        raise ConfigError(f"study.bracket={ratio} must be a number > 1: how close (as a factor) the measured sizes "
                          "either side of n* must be, e.g. study.bracket=1.5")
    cells = study.max_cells
    if cells is not None and (isinstance(cells, bool) or not isinstance(cells, int) or cells < 0):
        raise ConfigError(f"study.max_cells={cells} must be null or an integer >= 0: the most cells the refinement "
                          "adds to the grid (0 turns it off)")
    flops = study.max_flops
    if flops is not None and (isinstance(flops, bool) or not isinstance(flops, (int, float)) or not flops > 0):
        raise ConfigError(f"study.max_flops={flops} must be null or a positive number: the study's training FLOPs "
                          "after which the refinement adds no size, e.g. study.max_flops=2e13")


def validate_cell(cfg: CellConfig) -> None:
    """A tuning cell: one run's settings plus the study name its Optuna study is named after."""
    validate_run(cfg)
    validate_study_name(cfg.study.name)
    require_int(cfg.tune.run, "tune.run", 0)


# ------------------------------------------------------------------------------- the door
def _plain(cfg: DictConfig) -> dict:
    """The composed config as plain values, every interpolation resolved (or one line naming the key)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except Exception as err:  # omegaconf's MissingMandatoryValue / InterpolationResolutionError
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(f"config value {key or ''} is missing or unresolvable ({str(err).splitlines()[0]}): set it "
                          f"on the command line, e.g. {key or 'data.root'}=...") from None


def _fits(value: Any, kind: Any) -> bool:
    """Whether a plain value fits a field's annotation (int is not bool; an int fits float)."""
    if kind is Any:
        return True
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(kind) or kind
    return isinstance(value, origin) if isinstance(origin, type) else True


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    """A dataclass from a plain mapping: unknown keys refused, nested groups built, lists as tuples
    where the field is a tuple. Values are taken as they are: the checks below name bad ones."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.')}={raw!r} must be a group of settings: set its keys, e.g. {prefix}<key>=...")
    if cls is GlyphSettings:
        return GlyphSettings.from_config(raw)  # type: ignore[return-value]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a setting: remove it or fix its spelling "
                          f"(settings of {prefix.rstrip('.')}: {', '.join(names)})")
    values = {}
    for name in names:
        if name not in raw:
            continue
        value, kind = raw[name], hints[name]
        if dataclasses.is_dataclass(kind):
            value = _build(kind, value, f"{prefix}{name}.")
        elif (kind is tuple or typing.get_origin(kind) is tuple or tuple in typing.get_args(kind)) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _check_types(cfg: Any, prefix: str = "") -> None:
    """What no range check above looked at still has the type its field says (one line per mistake)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        groups = value if isinstance(value, dict) and all(dataclasses.is_dataclass(v) for v in value.values()) else {}
        for name, group in groups.items():  # harness-study's strategies and search spaces
            _check_types(group, f"{key}.{name}.")
        if dataclasses.is_dataclass(value):
            if not isinstance(value, GlyphSettings):
                _check_types(value, f"{key}.")
        elif not _fits(value, hints[f.name]):
            kind = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise ConfigError(f"{key}={value!r} must be of type {kind}: fix {key}")


def _section(plain: dict, key: str) -> dict:
    value = plain.get(key)
    return value if isinstance(value, dict) else {}


# The groups built the same way at every door (search_space, pruner, strategies: their own builders).
_GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "strategy": StrategyConfig, "train": TrainConfig,
                            "trainer": TrainerConfig, "logger": LoggerConfig, "pretrain": PretrainConfig,
                            "storage": StorageConfig, "study": StudyConfig, "tune": TuneConfig, "report": ReportConfig}


def _groups(plain: dict, *keys: str) -> dict[str, Any]:
    """The named groups the composed config has, each built into its dataclass."""
    return {key: _build(_GROUPS[key], plain[key], f"{key}.") for key in keys if key in plain}


def _run_fields(plain: dict) -> dict:
    out: dict[str, Any] = {k: plain[k] for k in ("seed", "study_name") if k in plain}
    out.update(_groups(plain, "data", "model", "strategy", "train", "trainer", "logger", "pretrain"))
    if isinstance(out.get("study_name"), (int, float)) and not isinstance(out.get("study_name"), bool):
        out["study_name"] = str(out["study_name"])
    return out


# Each pruner's settings and the least value each takes (all integers; max_resource may be null).
PRUNER_SETTINGS = {"hyperband": {"min_resource": 1, "max_resource": 1, "reduction_factor": 2},
                    "asha": {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0},
                    "median": {"n_startup_trials": 0, "n_warmup_steps": 0}, "none": {}}
_NULLABLE = {"max_resource"}  # null = the cell's own steps.high


def check_pruner(p: dict[str, Any]) -> None:
    """The `pruner` group as composed: a known name and only its own settings, each an integer."""
    name = p.get("name")
    if name not in PRUNER_SETTINGS:
        raise ConfigError(f"pruner={name} is unknown: use hyperband, asha, median or none")
    settings = PRUNER_SETTINGS[str(name)]
    unknown = sorted(set(p) - {"name"} - set(settings))
    if unknown:
        known = ", ".join(f"pruner.{k}" for k in settings) or "no settings"
        raise ConfigError(f"pruner.{unknown[0]} is not a setting of pruner={name}: remove it (known: {known})")
    for key, least in settings.items():
        if key in _NULLABLE and p.get(key) is None:
            continue
        require_int(p.get(key), f"pruner.{key}", least)


def _pruner(raw: Any) -> PrunerConfig:
    """The composed pruner; the settings of other pruners stay None (the defaults are hyperband's)."""
    check_pruner(raw)
    unused = {f.name: None for f in dataclasses.fields(PrunerConfig) if f.name != "name"}
    return PrunerConfig(**{**unused, **raw})


def search_space_config(raw: Any, prefix: str = "search_space") -> SearchSpaceConfig:
    """A search space table (conf/search_space/*.yaml) as settings; its entries are parsed and
    checked against the run's keys by harness.tuning.search_space.SearchSpace.from_config."""
    if isinstance(raw, dict) and "recipe" in raw:
        raise ConfigError(f"{prefix}.recipe is now {prefix}.recipes, a name -> values table of standard "
                          "first trials: rename it, e.g. recipes: {standard: {lr: 0.003}}")
    return _build(SearchSpaceConfig, raw, f"{prefix}.")


def _cell_fields(plain: dict) -> dict:
    out = _run_fields(plain)
    if "search_space" in plain:
        out["search_space"] = search_space_config(plain["search_space"])
    out.update(_groups(plain, "storage", "study", "tune"))
    if "pruner" in plain:
        out["pruner"] = _pruner(plain["pruner"])
    return out


def load_run(cfg: DictConfig) -> RunConfig:
    """harness-train's and harness-pretrain's settings, checked once."""
    run = RunConfig(**_run_fields(_plain(cfg)))
    validate_run(run)
    _check_types(run)
    return run


def validate_pretrain(cfg: RunConfig) -> None:
    """What the source model's cache key and training read, checked before the key is computed."""
    validate_train(cfg.pretrain.train, "pretrain.train")  # named as the user wrote it, before any folder is made
    validate_seeds(cfg)
    validate_source(cfg.data)


def load_pretrain(cfg: DictConfig) -> RunConfig:
    """harness-pretrain's settings (no target strategy or schedule: those keep their defaults)."""
    run = RunConfig(**_run_fields(_plain(cfg)))
    validate_pretrain(run)
    validate_threads(run.trainer)
    _check_types(run)
    return run


def load_cell(cfg: DictConfig) -> CellConfig:
    """harness-tune's settings (one cell), checked once."""
    cell = CellConfig(**_cell_fields(_plain(cfg)))
    validate_cell(cell)
    _check_types(cell)
    return cell


def load_study(cfg: DictConfig) -> StudyAppConfig:
    """harness-study's settings: a strategy and a search space per strategy, the grid, the report."""
    plain = _plain(cfg)
    out = _cell_fields(plain)
    out["strategies"] = {k: _build(StrategyConfig, v, f"strategies.{k}.") for k, v in _section(plain, "strategies").items()}
    out["search_spaces"] = {k: search_space_config(v, f"search_spaces.{k}")
                            for k, v in _section(plain, "search_spaces").items()}
    out.update(_groups(plain, "report"))
    study = StudyAppConfig(**out)
    validate_study(study.study)
    if study.tune.run != 0:
        raise ConfigError(f"tune.run={study.tune.run} picks one tuning run for harness-tune; harness-study runs "
                          "study.tunings of them per cell: drop tune.run, or set study.tunings")
    validate_seeds(study)
    validate_threads(study.trainer)
    _check_types(study)
    return study


def load_report(cfg: DictConfig) -> ReportAppConfig:
    """harness-report's settings (report.* checked by harness.report, which library callers use too)."""
    plain = _plain(cfg)
    report = ReportAppConfig(**_groups(plain, "storage", "logger", "study", "report"))
    validate_study_name(report.study.name)
    return report

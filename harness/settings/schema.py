"""The typed settings every module below the entry points takes: one dataclass per config group.

Hydra composes the YAML in conf/; `harness.settings.config.load_*` checks it once and builds these
(frozen, so a trial's settings are made with `replace_path`, never edited in place). Defaults here
are the code's; the YAML files hold the ones users see and override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.settings.glyphs import GlyphSettings

T = TypeVar("T")

# The choices a setting may take, here so the settings' checks import nothing above them.
AUGMENT_LEVELS = ("off", "light", "strong")              # data.augment (harness/data/augment.py)
STRATEGY_MODES = ("full", "linear_probe", "lp_ft", "freeze")  # strategy.mode (harness/training/strategies.py)
SOURCES = ("classes", "glyphs")                          # data.source (harness/data/sources.py)


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: str | None = None
    dataset: str | None = None  # torchvision: the datasets class name
    download: bool = False
    n_train: int = 80
    n_val: int = 150
    n_test: int = 250
    split_seed: int = 0
    subset: int = 0
    draw: int = 0
    cv_folds: int = 0
    cv_fold: int = 0
    source_classes: tuple | None = None
    target_classes: tuple | None = None
    source_n_val: int = 150
    source: str = "classes"
    glyphs: GlyphSettings = field(default_factory=GlyphSettings)
    image_size: int | None = None
    augment: str = "light"
    on_device_max_mb: float = 512
    num_workers: int = 2
    skip_bad_files: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str = "harness_tiny_cnn"
    drop_rate: float = 0.0
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StrategyConfig:
    """scratch reads only `name`; the rest is fine-tuning's (strategy=finetune)."""

    name: str = "scratch"
    weights: str = "source"
    mode: str = "full"
    lp_fraction: float = 0.3
    freeze_stages: int = 1
    layer_decay: float = 1.0
    pretrain_flops: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    label_smoothing: float = 0.0
    val_every: int = 50


@dataclass(frozen=True)
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "auto"
    channels_last: Any = "auto"  # auto | true | false
    threads: int = 1


@dataclass(frozen=True)
class LoggerConfig:
    name: str = "csv"
    project: str = "harness"
    entity: str | None = None
    mode: str | None = None
    dir: str = "outputs"


@dataclass(frozen=True)
class PretrainConfig:
    cache_dir: str = "outputs/pretrained"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, val_every=200))
    augment: str = "light"
    seed: int = 0


@dataclass(frozen=True)
class SearchSpaceConfig:
    """`params`: name -> {key, type, low/high or choices, log, step, when}; `recipes`: name -> values."""

    params: dict = field(default_factory=dict)
    recipes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StorageConfig:
    url: str = "sqlite:///outputs/harness.db"
    heartbeat_interval: int | None = 10
    grace_period: int | None = 30
    max_retry: int = 3
    wal: bool = True


@dataclass(frozen=True)
class PrunerConfig:
    """One pruner's settings; which apply depends on `name` (harness.tuning.pruning.check_pruner), the rest stay None."""

    name: str = "hyperband"  # the defaults are conf/pruner/hyperband.yaml's (tests/test_configs.py)
    min_resource: int | None = 50
    max_resource: int | None = None
    reduction_factor: int | None = 3
    min_early_stopping_rate: int | None = None
    n_startup_trials: int | None = None
    n_warmup_steps: int | None = None


@dataclass(frozen=True)
class TuneConfig:
    budget: str = "trials"
    n_trials: int | None = 20
    max_flops: float | None = None
    reference_steps: int | None = None
    max_wall_s: float | None = None
    sampler_seed: int = 0
    n_startup_trials: int = 5
    enqueue_recipe: bool = True
    selection: str = "holdout"
    cv_folds: int = 5
    progress: bool = True
    run: int = 0


@dataclass(frozen=True)
class StudyConfig:
    """One cell's `study` block (name, seeds) and, for harness-study, the grid and its refinement."""

    name: str = "digits"
    seeds: int = 3
    tunings: int = 3
    max_tunings: int = 6
    n_train: tuple = ()
    strategies: tuple = ("finetune", "scratch")
    max_seeds: int = 10
    topup_step: int = 2
    workers: int = 2
    adaptive: bool = False
    bracket: float = 1.5
    max_cells: int | None = 4
    max_flops: float | None = None
    plan: bool = False  # harness-study: print what the study would do (harness/study/plan.py) and exit


@dataclass(frozen=True)
class ReportConfig:
    dir: str = "outputs/report/digits"
    n_boot: int = 1000
    metric: str = "test_acc"
    margin: float = 0.01
    horizon: float = 10


@dataclass(frozen=True)
class RunConfig:
    """harness-train (and harness-pretrain, which reads data, model, trainer, logger, pretrain)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    seed: int = 0
    study_name: str = "adhoc"


@dataclass(frozen=True)
class CellConfig(RunConfig):
    """harness-tune: one run's settings plus what tuning the cell reads."""

    search_space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


@dataclass(frozen=True)
class StudyAppConfig(CellConfig):
    """harness-study: every cell's settings, with a strategy and a search space per strategy."""

    strategies: dict = field(default_factory=dict)  # name -> StrategyConfig
    search_spaces: dict = field(default_factory=dict)  # name -> SearchSpaceConfig
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass(frozen=True)
class ReportAppConfig:
    storage: StorageConfig = field(default_factory=StorageConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def replace_path(cfg: T, path: str, value: Any) -> T:
    """A copy of `cfg` with the setting at dotted `path` (e.g. "train.lr") set to `value`."""
    head, _, rest = path.partition(".")
    if isinstance(cfg, dict):
        return {**cfg, head: replace_path(cfg[head], rest, value) if rest else value}  # type: ignore[return-value]
    if not dataclasses.is_dataclass(cfg) or head not in {f.name for f in dataclasses.fields(cfg)}:
        raise KeyError(path)
    inner = getattr(cfg, head)
    return dataclasses.replace(cfg, **{head: replace_path(inner, rest, value) if rest else value})  # type: ignore[type-var]


def has_path(cfg: Any, path: str) -> bool:
    """Whether dotted `path` names a setting of `cfg`."""
    for part in path.split("."):
        if isinstance(cfg, dict) and part in cfg:
            cfg = cfg[part]
        elif dataclasses.is_dataclass(cfg) and part in {f.name for f in dataclasses.fields(cfg)}:
            cfg = getattr(cfg, part)
        else:
            return False
    return True


def as_dict(cfg: Any) -> Any:
    """Plain dicts and lists, every setting (W&B's config, the source cache's hash, JSON)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: as_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: as_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [as_dict(v) for v in cfg]
    return cfg

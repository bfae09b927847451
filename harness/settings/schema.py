"""The typed settings every module below the entry points takes: one dataclass per config group.

Every default is written here, once: harness/settings/nodes.py hands them to Hydra as the base of
each config group, and the YAML in conf/ holds only what an option or a recipe changes. Each range
check sits next to its fields (`check`); harness.settings.config.load builds and checks these once
at start-up (frozen, so a trial's settings are made with `replace_path`, never edited in place).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.errors import ConfigError
from harness.settings.checks import flag, fraction, integer, one_of, path_part, positive
from harness.settings.glyphs import GlyphSettings

T = TypeVar("T")

# The choices a setting may take, here so the settings' checks import nothing above them.
AUGMENT_LEVELS = ("off", "light", "strong")              # data.augment (harness/data/augment.py)
STRATEGY_MODES = ("full", "linear_probe", "lp_ft", "freeze")  # strategy.mode (harness/training/strategies.py)
SOURCES = ("classes", "glyphs")                          # data.source (harness/data/sources.py)
STRATEGIES = ("scratch", "finetune")
OPTIMIZERS = ("adamw", "sgd")
LOGGERS = ("csv", "wandb", "none")
ACCELERATORS = ("auto", "cpu", "gpu")
BUDGET_KINDS = ("trials", "flops")
SELECTIONS = ("holdout", "cv")
METRICS = ("test_acc", "val_acc")
# Each pruner's settings and the least value each takes (all integers; max_resource may be null).
PRUNER_SETTINGS = {"hyperband": {"min_resource": 1, "max_resource": 1, "reduction_factor": 2},
                   "asha": {"min_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0},
                   "median": {"n_startup_trials": 0, "n_warmup_steps": 0}, "none": {}}


@dataclass(frozen=True)
class DataConfig:
    """`data`: the target task and its splits. These are scikit-learn's bundled digits (1,797 8x8
    images, no download); conf/data/*.yaml hold what another dataset changes."""

    name: str = "digits"  # digits | imagefolder | torchvision
    root: str | None = None  # imagefolder: the folder of class folders; torchvision: where the dataset lives
    dataset: str | None = None  # torchvision: the datasets class name (CIFAR10, MNIST, ...)
    download: bool = False  # torchvision: fetch it when missing (needs a network)
    n_train: int = 80  # training examples of the target task (stratified, nested subsets)
    n_val: int = 150  # held-out validation examples (all tuning choices use these)
    n_test: int = 250  # held-out test examples (read once per run, at the end)
    split_seed: int = 0  # fixes test/val/train splits; same seed => nested training subsets
    subset: int = 0  # training order: 0 = tuning's; k > 0 = replicate k's own nested subsets (same val/test)
    draw: int = 0  # validation draw and training orders: tuning run k of a cell uses draw + k (the test split never moves)
    cv_folds: int = 0  # 0: validate on the validation split; k >= 2: k-fold cross-validation inside n_train (tune.selection=cv sets it)
    cv_fold: int = 0  # the held-out fold (0..k-1); -1: none held out (re-runs after cross-validated selection)
    source_classes: tuple | None = None  # pretraining task's classes (names or indices); None = no source task
    target_classes: tuple | None = None  # downstream task's classes; None = every class not in source_classes
    source_n_val: int = 150  # validation examples held out of the source task
    source: str = "classes"  # what pretraining learns: classes = source_classes; glyphs = printed letters (data.glyphs)
    glyphs: GlyphSettings = field(default_factory=GlyphSettings)  # the glyph source (harness/settings/glyphs.py)
    image_size: int | None = None  # images are resized to image_size x image_size; None = the dataset's own size
    augment: str = "light"  # off | light | strong
    on_device_max_mb: float = 512  # datasets under this size live as tensors on the training device
    num_workers: int = 2  # DataLoader workers for datasets too large to keep as tensors
    skip_bad_files: bool = False  # imagefolder: true = leave out files PIL cannot read (counted); false = name the first and stop

    def check(self, key: str) -> None:
        one_of(self.augment, AUGMENT_LEVELS, f"{key}.augment")
        one_of(self.source, SOURCES, f"{key}.source", "set data.source=classes (the dataset's source classes) or "
               "data.source=glyphs (printed letters)")
        for name in ("split_seed", "subset", "draw", "cv_folds"):
            integer(getattr(self, name), f"{key}.{name}", 0)
        integer(self.cv_fold, f"{key}.cv_fold", -1)
        if self.cv_folds == 1:
            raise ConfigError(f"{key}.cv_folds=1 holds nothing out: use 0 (the validation split) or >= 2 folds")
        if self.cv_folds and self.cv_fold >= self.cv_folds:
            raise ConfigError(f"{key}.cv_fold={self.cv_fold} but there are {self.cv_folds} folds: use "
                              f"0..{self.cv_folds - 1}, or -1 for none held out")
        for name in ("n_train", "n_val", "n_test"):
            positive(getattr(self, name), f"{key}.{name}", int)
        flag(self.skip_bad_files, f"{key}.skip_bad_files")
        if self.name in ("imagefolder", "torchvision") and not self.root:
            raise ConfigError(f"{key}.root is not set, but data={self.name} reads its images from there: "
                              f"set {key}.root=/path/to/the/data")


@dataclass(frozen=True)
class ModelConfig:
    """`model`: any timm model name; the default is a small convnet of ours in timm's registry, fast
    enough for the default study on a CPU."""

    name: str = "harness_tiny_cnn"  # e.g. model=resnet18, model.name=test_resnet
    drop_rate: float = 0.0
    kwargs: dict = field(default_factory=dict)  # passed on to timm.create_model

    def check(self, key: str) -> None:
        if not 0 <= self.drop_rate < 1:
            raise ConfigError(f"{key}.drop_rate={self.drop_rate} must lie in [0, 1): set it inside that range")


@dataclass(frozen=True)
class StrategyConfig:
    """`strategy`: scratch trains every weight from a random initialisation and reads only `name`;
    the rest is fine-tuning's (strategy=finetune): start from pretrained weights, replace the head."""

    name: str = "scratch"  # scratch | finetune
    weights: str = "source"  # source (harness-pretrain's checkpoint, made when missing) | hub (timm tag) | a file path
    mode: str = "full"  # full | linear_probe | lp_ft (linear probe, then full) | freeze
    lp_fraction: float = 0.3  # lp_ft: share of train.steps spent training the head alone
    freeze_stages: int = 1  # freeze: leading stages (stem counts as stage 0) kept frozen
    layer_decay: float = 1.0  # layer-wise lr decay: lr x decay^(depth from the head); 1.0 = off
    pretrain_flops: float | None = None  # FLOPs that made weights from a file or the hub (None = unknown); own pretraining is measured

    def check(self, key: str) -> None:
        one_of(self.name, STRATEGIES, key if key == "strategy" else f"{key}.name")
        if self.name != "finetune":
            return
        one_of(self.mode, STRATEGY_MODES, f"{key}.mode")
        fraction(self.lp_fraction, f"{key}.lp_fraction", True, True)
        fraction(self.layer_decay, f"{key}.layer_decay", True, False)
        if self.freeze_stages < 0:
            raise ConfigError(f"{key}.freeze_stages={self.freeze_stages} must be >= 0: count stages from the stem")
        if not self.weights:
            raise ConfigError(f"{key}.weights is empty: use source, hub, or a path to a weights file")
        flops = self.pretrain_flops
        if flops is not None and not 0 <= flops < float("inf"):
            raise ConfigError(f"{key}.pretrain_flops={flops} must be a number >= 0 (the FLOPs that made the weights) "
                              "or null (unknown): fix it")
        if flops is not None and self.weights == "source":
            raise ConfigError(f"{key}.pretrain_flops is for weights from a file or the hub; own pretraining "
                              f"({key}.weights=source) is measured: remove {key}.pretrain_flops")


@dataclass(frozen=True)
class TrainConfig:
    """`train`: one run's optimisation. Length is in optimizer steps, not epochs: data sizes span decades."""

    steps: int = 300
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 0.003
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.05
    warmup_frac: float = 0.05  # share of steps with linear warmup, then cosine decay to zero
    label_smoothing: float = 0.0
    val_every: int = 50  # validate every k optimizer steps (and at the end)

    def check(self, key: str) -> None:
        positive(self.steps, f"{key}.steps", int)
        positive(self.batch_size, f"{key}.batch_size", int)
        positive(self.lr, f"{key}.lr")
        positive(self.val_every, f"{key}.val_every", int)
        one_of(self.optimizer, OPTIMIZERS, f"{key}.optimizer")
        if self.weight_decay < 0:
            raise ConfigError(f"{key}.weight_decay={self.weight_decay} must be >= 0: set it to 0 or more")
        fraction(self.warmup_frac, f"{key}.warmup_frac", False, True)
        fraction(self.label_smoothing, f"{key}.label_smoothing", False, True)
        fraction(self.momentum, f"{key}.momentum", False, True)


@dataclass(frozen=True)
class TrainerConfig:
    """`trainer`: where and how Lightning runs the steps."""

    accelerator: str = "auto"  # auto | cpu | gpu
    devices: Any = 1
    precision: str = "auto"  # auto = bf16-mixed on GPU, 32-true on CPU
    channels_last: Any = "auto"  # auto (= true: NHWC, faster on GPUs and on CPUs with oneDNN) | true | false
    threads: int = 1  # torch CPU threads per process (tiny models gain nothing from more); 0 = torch's default
    fuse: bool = True  # train a configuration's re-runs as one model of K members where the model allows it

    def check(self, key: str) -> None:
        one_of(self.accelerator, ACCELERATORS, f"{key}.accelerator")
        flag(self.fuse, f"{key}.fuse")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"{key}.threads={self.threads} must be an integer >= 0 (torch CPU threads per process; "
                              f"0 = torch's default): fix {key}.threads")


@dataclass(frozen=True)
class LoggerConfig:
    """`logger`: csv writes metrics.csv in the run folder; wandb logs to Weights & Biases; none neither."""

    name: str = "csv"  # csv | wandb | none
    project: str = "harness"  # wandb
    entity: str | None = None  # wandb
    mode: str | None = None  # wandb: online | offline | disabled; None = $WANDB_MODE, else offline
    dir: str = "outputs"  # wandb: its wandb/ folder goes here

    def check(self, key: str) -> None:
        one_of(self.name, LOGGERS, key if key == "logger" else f"{key}.name")


@dataclass(frozen=True)
class PretrainConfig:
    """`pretrain`: the source model (strategy=finetune, weights=source), cached by its settings' hash."""

    cache_dir: str = "outputs/pretrained"  # one folder per config hash (conf/: $HARNESS_CACHE when set)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, val_every=200))  # the target's, longer
    augment: str = "light"  # augmentation of the source task (the target's is data.augment)
    seed: int = 0  # the source model's seed (independent of the target run's seed)

    def check(self, key: str) -> None:
        integer(self.seed, f"{key}.seed", 0)
        one_of(self.augment, AUGMENT_LEVELS, f"{key}.augment")


@dataclass(frozen=True)
class SearchSpaceConfig:
    """`params`: name -> {key, type, low/high or choices, log, step, when}; `recipes`: name -> values.
    Checked against the run's settings by harness.tuning.search_space.SearchSpace.from_config."""

    params: dict = field(default_factory=dict)
    recipes: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, raw: Any, key: str) -> dict:
        if isinstance(raw, dict) and "recipe" in raw:
            raise ConfigError(f"{key}.recipe is now {key}.recipes, a name -> values table of standard "
                              "first trials: rename it, e.g. recipes: {standard: {lr: 0.003}}")
        return raw


@dataclass(frozen=True)
class StorageConfig:
    """`storage`: a local SQLite file, no server, safe for several worker processes on one machine
    (WAL, busy timeout); it opens in optuna-dashboard. storage=postgres: a server for many machines."""

    url: str = "sqlite:///outputs/harness.db"  # or env:VAR, to keep a password out of the config
    heartbeat_interval: int | None = 10  # seconds between a running trial's heartbeats
    grace_period: int | None = 30  # a trial silent this long is failed and retried
    max_retry: int = 3  # retries of one trial killed with its worker
    wal: bool = True  # SQLite write-ahead log; false for a file on a network filesystem


@dataclass(frozen=True)
class PrunerConfig:
    """`pruner`: one pruner's settings (PRUNER_SETTINGS names which apply); the rest stay None. The
    defaults are Hyperband's (conf/pruner/hyperband is built from them): Li et al. 2018."""

    name: str = "hyperband"  # hyperband | asha | median | none
    min_resource: int | None = 50  # optimizer steps before the first pruning decision
    max_resource: int | None = None  # the most steps the brackets plan for; None = the cell's steps.high (harness-study: the largest across strategies)
    reduction_factor: int | None = 3
    min_early_stopping_rate: int | None = None  # asha
    n_startup_trials: int | None = None  # median
    n_warmup_steps: int | None = None  # median

    @classmethod
    def from_config(cls, raw: Any, key: str) -> dict:
        """A composed pruner names only its own settings: the others are None, not Hyperband's."""
        if not isinstance(raw, dict):
            return raw
        return {**{f.name: None for f in dataclasses.fields(cls) if f.name != "name"}, **raw}

    def settings(self) -> dict[str, int | None]:
        """The settings of this pruner, by name."""
        return {k: getattr(self, k) for k in PRUNER_SETTINGS.get(self.name, {})}

    def check(self, key: str) -> None:
        one_of(self.name, tuple(PRUNER_SETTINGS), key if key == "pruner" else f"{key}.name")
        own = PRUNER_SETTINGS[self.name]
        for f in dataclasses.fields(self):
            if f.name != "name" and f.name not in own and getattr(self, f.name) is not None:
                known = ", ".join(f"{key}.{k}" for k in own) or "no settings"
                raise ConfigError(f"{key}.{f.name} is not a setting of pruner={self.name}: remove it (known: {known})")
        for name, least in own.items():
            if name == "max_resource" and self.max_resource is None:
                continue
            integer(getattr(self, name), f"{key}.{name}", least)


@dataclass(frozen=True)
class TuneConfig:
    """`tune`: one cell's tuning (harness-tune); harness-study changes what differs in study.yaml."""

    budget: str = "trials"  # trials: equal trial counts | flops: equal FLOPs (max_flops, else n_trials x a reference trial)
    n_trials: int | None = 20  # budget per tuning run: trials (pruned and failed ones count); budget=flops: sizes the FLOPs budget
    max_flops: float | None = None  # budget per tuning run: FLOPs (checked before each trial starts)
    reference_steps: int | None = None  # budget=flops: steps of the reference trial (None = midpoint of the cell's steps range)
    max_wall_s: float | None = None  # budget per tuning run: wall seconds (checked before each trial starts)
    sampler_seed: int = 0  # TPE seed: each tuning run derives its own from it, the study name, strategy and n_train
    n_startup_trials: int = 5  # random trials before TPE models the space
    enqueue_recipe: bool = True  # first trials = the search space's standard recipes (all, or none with false)
    warm_start: bool = False  # then the winners of the nearest finished sizes (same strategy and tuning run)
    selection: str = "holdout"  # holdout: select on the validation split (its labels count); cv: k-fold inside n_train
    cv_folds: int = 5  # cv: k = min(cv_folds, smallest class count in n_train)
    progress: bool = True  # one live status line on stderr
    run: int = 0  # which tuning run of the cell (0-based): its own sampler seed, seed, validation draw and tuning subset

    def check(self, key: str) -> None:
        one_of(self.budget, BUDGET_KINDS, f"{key}.budget", "set tune.budget=trials (equal trial counts) or "
               "tune.budget=flops (equal FLOPs)")
        flag(self.warm_start, f"{key}.warm_start")
        for name in ("n_trials", "max_flops", "max_wall_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ConfigError(f"{key}.{name}={value} must be a positive number or null: fix the budget")
        if self.n_trials is None and self.max_flops is None and self.max_wall_s is None:
            raise ConfigError(f"the cell has no budget: set {key}.n_trials, {key}.max_flops or {key}.max_wall_s")
        if self.budget == "flops" and self.n_trials is None and self.max_flops is None:
            raise ConfigError(f"{key}.budget=flops needs {key}.max_flops or {key}.n_trials (times a reference trial's "
                              "FLOPs): set one of them")
        if self.reference_steps is not None:
            integer(self.reference_steps, f"{key}.reference_steps", 1)
        for name in ("sampler_seed", "n_startup_trials", "run"):
            integer(getattr(self, name), f"{key}.{name}", 0)
        one_of(self.selection, SELECTIONS, f"{key}.selection", "holdout selects on the validation split, cv by "
               "k-fold cross-validation inside n_train")
        if self.selection == "cv":
            integer(self.cv_folds, f"{key}.cv_folds", 2)


@dataclass(frozen=True)
class StudyRef:
    """`study` where only its name is read (harness-report)."""

    name: str = "digits"  # tuning runs are stored as <name>/n<n_train>/<strategy>/t<run>

    def check(self, key: str) -> None:
        path_part(self.name, f"{key}.name")


@dataclass(frozen=True)
class StudyConfig(StudyRef):
    """`study`: a tuning run's name and re-runs and, for harness-study, the grid and its refinement."""

    seeds: int = 3  # replicates of each tuning run's best configuration (own seed and training subset each)
    tunings: int = 3  # tuning runs per cell, each its own search, validation draw and tuning subset: the unit of replication
    max_tunings: int = 6  # cap of the top-up on tuning runs per cell
    n_train: tuple = ()  # harness-study: the grid of target-data sizes
    strategies: tuple = ("finetune", "scratch")
    max_seeds: int = 10  # cap of the top-up on replicates per tuning run
    topup_step: int = 2  # replicates added per cell and round of the top-up
    workers: int = 2  # worker processes; each takes trials from any unfinished cell
    adaptive: bool = True  # after the grid: the top-up, then sizes where n* is not yet bracketed
    bracket: float = 1.5  # refine until the measured sizes either side of n* are within this factor
    max_cells: int | None = 4  # the most cells the refinement adds (two sizes of both strategies); 0: none
    max_flops: float | None = None  # the study's training FLOPs after which the refinement adds no size
    plan: bool = False  # harness-study: print the tuning runs, trainings, FLOPs and a time estimate, then exit

    def check(self, key: str) -> None:
        super().check(key)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"{key}.seeds={self.seeds} must be a positive integer: the number of re-runs of the best configuration")
        sizes = self.n_train
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
            raise ConfigError(f"{key}.n_train={list(sizes)} must be a non-empty list of integers, e.g. {key}.n_train=[10,20,40]")
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"{key}.n_train={list(sizes)} repeats a size: list each size once")
        strategies = list(self.strategies)
        if not strategies or len(set(strategies)) != len(strategies):
            raise ConfigError(f"{key}.strategies={strategies} must list distinct strategies, e.g. [finetune, scratch]")
        if self.workers < 1:
            raise ConfigError(f"{key}.workers={self.workers} must be a positive integer")
        if self.max_seeds < self.seeds:
            raise ConfigError(f"{key}.max_seeds={self.max_seeds} must be an integer >= {key}.seeds ({self.seeds}): the most "
                              "replicates a cell gets when its verdict is undecided (= study.seeds turns the top-up off)")
        if self.topup_step < 1:
            raise ConfigError(f"{key}.topup_step={self.topup_step} must be a positive integer: replicates added per cell and round")
        if self.tunings < 1:
            raise ConfigError(f"{key}.tunings={self.tunings} must be a positive integer: tuning runs per cell (3 measures "
                              "the between-run variance; 1 has the report estimate it from the curves)")
        if self.max_tunings < self.tunings:
            raise ConfigError(f"{key}.max_tunings={self.max_tunings} must be an integer >= {key}.tunings ({self.tunings}): "
                              "the most tuning runs the top-up gives an undecided cell (= study.tunings turns that off)")
        flag(self.adaptive, f"{key}.adaptive")
        flag(self.plan, f"{key}.plan")
        if not self.bracket > 1 or not math.isfinite(self.bracket):
            raise ConfigError(f"{key}.bracket={self.bracket} must be a number > 1: how close (as a factor) the measured "
                              "sizes either side of n* must be, e.g. study.bracket=1.5")
        if self.max_cells is not None and self.max_cells < 0:
            raise ConfigError(f"{key}.max_cells={self.max_cells} must be null or an integer >= 0: the most cells the "
                              "refinement adds to the grid (0 turns it off)")
        if self.max_flops is not None and not self.max_flops > 0:
            raise ConfigError(f"{key}.max_flops={self.max_flops} must be null or a positive number: the study's training "
                              "FLOPs after which the refinement adds no size, e.g. study.max_flops=2e13")


@dataclass(frozen=True)
class ReportConfig:
    """`report`: the report of one study (harness-report, and harness-study at its end)."""

    dir: str = "outputs/report/digits"  # conf/: outputs/report/${study.name}
    n_boot: int = 1000  # bootstrap replicates (over replicates and test examples) for every 95% interval
    metric: str = "test_acc"  # test_acc (the re-runs' test split) or val_acc
    margin: float = 0.01  # practical margin, in the metric's units: gaps inside +-margin do not matter
    horizon: float = 10  # n* and n_cross are searched up to this multiple of the largest size

    def check(self, key: str) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"{key}.metric={self.metric!r} is not one of {', '.join(METRICS)}: pick one")
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 1:
            raise ConfigError(f"{key}.n_boot={self.n_boot!r} must be a positive integer (bootstrap replicates)")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not 0 <= self.margin < 1:
            raise ConfigError(f"{key}.margin={self.margin!r} must be a number in [0, 1): the practical margin in accuracy "
                              "units (0.01 = one point)")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, float)) or not 1 <= self.horizon <= 1e6:
            raise ConfigError(f"{key}.horizon={self.horizon!r} must be a number >= 1: how far beyond the largest size "
                              "n* is searched (a multiple of it)")


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
    seed: int = 0  # model init, batch order and augmentation
    study_name: str = "adhoc"  # groups runs (W&B group); harness-study and harness-tune set it to study.name

    def check(self, key: str = "") -> None:
        integer(self.seed, "seed", 0)


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

    strategies: dict[str, StrategyConfig] = field(default_factory=dict)
    search_spaces: dict[str, SearchSpaceConfig] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self, key: str = "") -> None:
        super().check(key)
        if not self.study.n_train:
            raise ConfigError("study.n_train=[] must be a non-empty list of integers, e.g. study.n_train=[10,20,40]")
        if self.tune.run != 0:
            raise ConfigError(f"tune.run={self.tune.run} picks one tuning run for harness-tune; harness-study runs "
                              "study.tunings of them per cell: drop tune.run, or set study.tunings")


@dataclass(frozen=True)
class ReportAppConfig:
    """harness-report: where the study is stored and where its report goes."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    study: StudyRef = field(default_factory=StudyRef)
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

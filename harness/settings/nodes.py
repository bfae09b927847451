"""The typed defaults handed to Hydra, so each default is written once (in schema.py).

Each entry point's YAML lists `base/<group>@<group>` before the group's option: every key of the
group is then composed from the dataclass (and so can be overridden from the command line, and is
shown by --cfg job), and an option file (conf/data/imagefolder.yaml, a user's recipe) holds only
what it changes. Options that change nothing are registered here instead of as empty files.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from harness.settings.schema import (DataConfig, LoggerConfig, ModelConfig, PretrainConfig, PrunerConfig, ReportConfig,
                                     RunConfig, StorageConfig, StrategyConfig, StudyConfig, StudyRef, TrainConfig,
                                     TrainerConfig, TuneConfig, as_dict)

# base/<name>: the typed defaults of the group composed at <name>; base/run: the entry points' own
# settings (seed, study_name), composed at the top.
BASES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "strategy": StrategyConfig, "train": TrainConfig,
                          "trainer": TrainerConfig, "logger": LoggerConfig, "pretrain": PretrainConfig,
                          "storage": StorageConfig, "tune": TuneConfig, "study": StudyConfig, "study_ref": StudyRef,
                          "report": ReportConfig}
# <group>/<option>s that are the typed defaults as they are (their base supplies every key).
GRID_REQUIRED = ("name", "n_train")  # harness-study's study.* that a recipe must set
PLAIN_OPTIONS = (("train", "default"), ("trainer", "default"), ("tune", "default"))


def hyperband() -> dict:
    """pruner=hyperband: PrunerConfig's defaults, Hyperband's own settings only."""
    defaults = PrunerConfig()
    return {"name": defaults.name, **defaults.settings()}


def register() -> None:
    """Put the typed defaults in Hydra's config store (again is harmless: the same nodes)."""
    store = ConfigStore.instance()
    for name, kind in BASES.items():
        store.store(group="base", name=name, node=as_dict(kind()))
    # harness-study's own study block: no default name or grid, a recipe (or the command line) sets
    # them ('???' in the base itself: a later '???' would not unset a value already merged).
    store.store(group="base", name="study_grid", node={**as_dict(StudyConfig()), **{k: "???" for k in GRID_REQUIRED}})
    run = as_dict(RunConfig())
    store.store(group="base", name="run", node={k: v for k, v in run.items() if not isinstance(v, dict)})
    for group, option in PLAIN_OPTIONS:
        store.store(group=group, name=option, node={})
    store.store(group="pruner", name="hyperband", node=hyperband())


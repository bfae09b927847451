"""Helpers of tests/test_tuning.py: tiny real configs, the harness-tune console script, and reads
of the Optuna storage (the single source of truth the tests assert on)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra import compose, initialize_config_dir
from optuna.trial import FrozenTrial, TrialState

import harness.cli
from harness.settings import config
from harness.settings.schema import CellConfig, SearchSpaceConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
TUNE = str(Path(sys.executable).with_name("harness-tune"))


def tiny_overrides(tmp: Path, pruner: str = "none", n_train: int | None = 10) -> list[str]:
    """A cell small enough for one CPU core: 10 images, 50 validation images, 10-20 steps."""
    out = [
        f"storage.url=sqlite:///{tmp}/tune.db",
        "logger=none",
        "tune.progress=false",
        "data.n_val=50",
        "train.val_every=5",
        "train.steps=20",
        "study.seeds=2",
        "search_space.params.steps.low=10",
        "search_space.params.steps.high=20",
        "search_space.params.steps.step=5",
        f"pretrain.cache_dir={tmp}/pretrained",
        "pretrain.train.steps=20",
        "pretrain.train.val_every=10",
        f"pruner={pruner}",
    ]
    if pruner == "hyperband":
        out.append("pruner.min_resource=5")
    if n_train is not None:
        out.append(f"data.n_train={n_train}")
    return out


def compose_tune(tmp: Path, *overrides: str, pruner: str = "none", typed: bool = True):
    """conf/tune.yaml as `harness-tune` would compose it, with the tiny overrides first: the
    checked settings harness-tune builds from it (harness.settings.config.load), or with typed=False the
    composed DictConfig."""
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        composed = compose(config_name="tune", overrides=[*tiny_overrides(tmp, pruner), *overrides])
    return config.load(CellConfig, composed) if typed else composed


def set_space(cfg: CellConfig, params: dict[str, dict], recipe: dict[str, Any] | None = None,
              recipes: dict[str, dict[str, Any]] | None = None) -> CellConfig:
    """The cell's settings with a crafted search space (for one test); `recipe` is one recipe
    named "standard", `recipes` a name -> values table."""
    table = dict(recipes or {})
    if recipe:
        table = {"standard": recipe, **table}
    return dataclasses.replace(cfg, search_space=SearchSpaceConfig(params=params, recipes=table))


def storage_url(tmp: Path) -> str:
    return f"sqlite:///{tmp}/tune.db"


def load(tmp: Path, name: str = "digits/n000010/scratch/t0") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_url(tmp))


def study_names(tmp: Path) -> list[str]:
    db = tmp / "tune.db"
    if not db.exists():
        return []
    return sorted(optuna.get_all_study_names(storage=storage_url(tmp)))


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]


def sqlite_trials(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, number of intermediate values) of every trial, read with plain sqlite3 so a
    test can poll a database another process is writing (and may still be creating)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        rows = con.execute(
            "SELECT t.number, t.state, (SELECT COUNT(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) "
            "FROM trials t ORDER BY t.number").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        con.close()
    return [(int(n), str(s), int(k)) for n, s, k in rows]


def tune_env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_tune(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([TUNE, *args], cwd=cwd, env=tune_env(), capture_output=True, text=True, timeout=timeout)


def start_tune(cwd: Path, *args: str, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen([TUNE, *args], cwd=cwd, env=tune_env(), stdout=handle, stderr=subprocess.STDOUT, text=True)


def age_heartbeats(db: Path, seconds: int = 3600, trial_ids: list[int] | None = None) -> int:
    """Move every recorded heartbeat `seconds` into the past: a dead worker's trial, made stale at
    once instead of waiting out a grace period on the storage's clock (SQLite's ticks in seconds,
    and a busy machine can stretch any wait). Only `trial_ids` (storage ids) when given. Returns
    the heartbeats moved."""
    where = "" if trial_ids is None else f" WHERE trial_id IN ({','.join(str(int(i)) for i in trial_ids)})"
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:
            return con.execute(f"UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, ?){where}",
                               (f"-{int(seconds)} seconds",)).rowcount
    finally:
        con.close()


def age_while_waiting(monkeypatch, db: Path) -> list[float]:
    """A worker waiting on its spent cell's peers finds, at its first pause, every heartbeat old: the
    dead peer's trial goes stale then, whatever the machine's speed. Returns the pauses taken."""
    import harness.tuning.workers

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        age_heartbeats(db)

    monkeypatch.setattr(harness.tuning.workers, "pause", pause)
    return pauses


def split_rows(cfg, size: int) -> list[int]:
    """The pool rows of the one split of `size` examples a task build takes (found by watching the
    pool's `take` during the build), sorted."""
    import numpy as np
    import pytest

    from harness.data import pools
    from harness.data.task import build_task

    seen: list = []
    real = pools._Pool.take

    def spy(self, idx, *args, **kwargs):
        seen.append(np.asarray(idx))
        return real(self, idx, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pools._Pool, "take", spy)
        build_task(cfg.data)
    (rows,) = [i for i in seen if len(i) == int(size)]
    return sorted(int(r) for r in rows)

"""The replicate protocol of a cell's best configuration, the tuning-run protocol above it, and the
records each re-run leaves (harness.store.records.RerunRecord, the stored form's one owner: tuning
makes them here, and whatever reads them gets them decoded by the store).

A replicate varies what really varies between two runs of one configuration (Bouthillier et al.
2021): the seed (initialisation, batch order, augmentation) and the draw of the training examples.
So replicate r trains on its own nested, stratified training subset (`data.subset = r`; subset 0 is
the one tuning used) with seed `seed + r`; validation and test splits stay fixed, so every re-run
of every strategy of a task is scored on the same test examples.

A tuning run is the unit above a replicate: which configuration wins a small validation split is
the largest difference between two runs of one study, so a cell is tuned K times (study.tunings),
tuning run k with its own sampler seed (harness.tuning.tune.cell_sampler_seed), its own seeds (seed +
RUN_SEED_STRIDE * k) and its own validation draw and training orders (data.draw + k); the test split
is shared by all. Run 0 is exactly what a cell was before tuning runs existed.

A re-run that raises, goes NaN or ends at chance accuracy is data, not a crash: its record says so
(`status`, `reason`) and the cell goes on (harness/tuning/rerun.py).

Each record keeps its per-example test correctness as packed bits (n_test / 8 bytes, base64), so a
report can bootstrap over test examples and pair strategies example by example.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from harness.store.records import (COLLAPSED, DIVERGED, FAILED, OK, RerunRecord,  # noqa: F401 (the statuses)
                                   decode_correct, encode_correct)

if TYPE_CHECKING:
    from harness.training.run import RunResult

T = TypeVar("T")


RUN_SEED_STRIDE = 1000  # tuning run k's seeds start at seed + 1000 k: replicates (seed + r, r <= max_seeds) never meet


def tuning_run(cfg: T, k: int) -> T:
    """The settings of tuning run k of the cell `cfg`, whose seed and data.draw are run 0's (the
    config as composed): its index, its seed and its data draw."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
        raise ValueError(f"tuning runs are numbered from 0, got {k!r}")
    if k == 0:
        return cfg
    return dataclasses.replace(cfg, seed=cfg.seed + RUN_SEED_STRIDE * int(k),
                               data=dataclasses.replace(cfg.data, draw=cfg.data.draw + int(k)),
                               tune=dataclasses.replace(cfg.tune, run=int(k)))


def replicate_overrides(r: int, base_seed: int) -> dict[str, int]:
    """The config values replicate r (1-based) sets: its seed and its training subset. Never the
    tuning's own seed or subset (0), so a replicate is not a re-run of a trial tuning already saw."""
    if isinstance(r, bool) or not isinstance(r, Integral) or r < 1:
        raise ValueError(f"replicates are numbered from 1, got {r!r}")
    return {"seed": int(base_seed) + int(r), "data.subset": int(r)}


def replicate(cfg: T, r: int) -> T:
    """The settings of replicate r of the configuration `cfg` (whose seed is the base seed)."""
    from harness.settings.schema import replace_path

    for key, value in replicate_overrides(r, cfg.seed).items():
        cfg = replace_path(cfg, key, value)
    return cfg


def make_record(r: int, seed: int, result: RunResult, probe_acc: float | None = None,
                chance: float | None = None) -> RerunRecord:
    """What one re-run stores in `final` (JSON-safe types only); a fine-tune replicate also keeps
    the test accuracy of a linear probe on its frozen source features (harness/training/probe.py). A run
    that ends no better than chance (1 / classes, plus two test-split standard errors) is kept as
    measured and marked `collapsed`."""
    correct = result.test_correct
    status, reason = OK, None
    acc = result.test_acc
    if chance is not None and acc is not None and correct is not None:
        n = max(1, int(np.asarray(correct).size))
        if float(acc) <= chance + 2 * (chance * (1 - chance) / n) ** 0.5:
            status, reason = COLLAPSED, f"test accuracy {float(acc):.3f} is at chance ({chance:.3f})"
    return RerunRecord(
        status=status, reason=reason, probe_acc=None if probe_acc is None else float(probe_acc), replicate=int(r),
        seed=int(seed), subset=int(r), val_acc=None if result.val_acc is None else float(result.val_acc),
        test_acc=None if result.test_acc is None else float(result.test_acc),
        flops=float(result.compute.total_flops), wall_s=float(result.compute.wall_s),
        n_test=None if correct is None else int(np.asarray(correct).size), test_split=str(result.test_split),
        test_correct=None if correct is None else encode_correct(correct))


def failure_record(r: int, seed: int, status: str, reason: str, chance: float, flops: float = 0.0,
                   wall_s: float = 0.0) -> RerunRecord:
    """The record of a re-run that did not finish: `failed` (it raised; no accuracy, left out of the
    statistics) or `diverged` (its loss went NaN/inf: the configuration's real outcome, counted at
    chance accuracy, `chance`, without per-example records)."""
    return RerunRecord(status=status, reason=reason[:300], replicate=int(r), seed=int(seed), subset=int(r),
                       test_acc=float(chance) if status == DIVERGED else None, chance=float(chance),
                       flops=float(flops), wall_s=float(wall_s))

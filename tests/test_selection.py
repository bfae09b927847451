"""tune.selection=cv: hyperparameters chosen by k-fold cross-validation inside the n_train examples;
the validation split is never read (checked by content: its rows are marked in the data pool)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from optuna.trial import TrialState

from harness.data import pools as data_module
from harness.data.task import build_task, cross_validation_fold, cv_folds_for
from harness.data.pools import load_pool
from harness.errors import ConfigError
from harness.tuning.tune import check_cell_config, tune_cell
from tuning_helpers import compose_tune, load, split_rows


def test_folds_partition_n_train_stratified() -> None:
    labels = np.repeat(np.arange(3), 4)  # 4 examples per class
    idx = np.arange(12)[::-1].copy()
    held = [cross_validation_fold(idx, labels, 4, f)[1] for f in range(4)]
    assert sorted(np.concatenate(held).tolist()) == list(range(12))  # every example held out once
    for f, h in enumerate(held):
        train, _ = cross_validation_fold(idx, labels, 4, f)
        assert set(train) | set(h) == set(idx) and not set(train) & set(h)
        assert sorted(labels[h].tolist()) == [0, 1, 2]  # one of each class
    train, none = cross_validation_fold(idx, labels, 4, -1)
    assert none.size == 0 and np.array_equal(train, idx)


def test_k_is_the_smallest_class_count_capped(make_cfg) -> None:
    assert cv_folds_for(make_cfg("data.n_train=10").data, 5) == 2   # 5 classes x 2
    assert cv_folds_for(make_cfg("data.n_train=40").data, 5) == 5   # 8 per class, capped at 5
    cfg = make_cfg("data.n_train=10", "data.cv_folds=2", "data.cv_fold=1")
    task = build_task(cfg.data)
    assert len(task.train) == 5 and len(task.val) == 5
    assert sorted(task.val.y.tolist()) == [0, 1, 2, 3, 4]


def _validation_rows(cfg) -> set[int]:
    """The pool rows of the validation split (n_val is the only split of its size here)."""
    return set(split_rows(cfg, int(cfg.data.n_val)))


@pytest.fixture
def marked_validation(monkeypatch, tmp_path):
    """Validation images turned to NaN in the pool, and any read of those rows fails loudly."""
    cfg = compose_tune(tmp_path, "data.n_val=40", "data.n_test=60")
    rows = _validation_rows(cfg)
    pool = load_pool(cfg.data)
    original = pool.x.clone()
    pool.x[torch.tensor(sorted(rows))] = float("nan")
    real = data_module._Pool.take

    def guarded(self, idx, *args, **kwargs):
        touched = rows & set(int(i) for i in np.asarray(idx).ravel())
        if self is pool and touched:
            raise RuntimeError(f"read {len(touched)} validation-split rows")
        return real(self, idx, *args, **kwargs)

    monkeypatch.setattr(data_module._Pool, "take", guarded)
    yield rows
    pool.x.copy_(original)


@pytest.mark.slow
def test_cv_selection_never_reads_the_validation_split(marked_validation, tmp_path) -> None:
    cfg = compose_tune(tmp_path, "data.n_val=40", "data.n_test=60", "tune.selection=cv", "tune.n_trials=2")
    tune_cell(cfg, tmp_path / "runs")
    study = load(tmp_path)
    assert study.user_attrs["selection"] == "cv" and study.user_attrs["cv_folds"] == 2
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs.get("fail_reason") for t in trials]
    assert all(math.isfinite(t.value) for t in trials)
    assert all(t.value in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0) for t in trials)  # mean of 2 folds of 5
    final = study.user_attrs["final"]
    assert all(r["val_acc"] is None and 0.0 <= r["test_acc"] <= 1.0 for r in final)  # re-runs hold nothing out


@pytest.mark.slow
def test_holdout_selection_does_read_it(marked_validation, tmp_path) -> None:
    """The control: the same guard catches the holdout protocol, which selects on that split."""
    cfg = compose_tune(tmp_path, "data.n_val=40", "data.n_test=60", "tune.n_trials=1")
    with pytest.raises(RuntimeError, match="read 40 validation-split rows"):
        tune_cell(cfg, tmp_path / "runs")


def test_cv_with_one_example_of_a_class_is_refused(tmp_path) -> None:
    cfg = compose_tune(tmp_path, "data.n_train=5", "tune.selection=cv")
    with pytest.raises(ConfigError, match="tune.selection=cv needs >= 2 examples of every class"):
        check_cell_config(cfg)
    with pytest.raises(ConfigError, match="tune.selection=kfold is not one of holdout, cv"):
        check_cell_config(compose_tune(tmp_path, "tune.selection=kfold"))

"""The test split is never read during tuning, proven by content: the test images are marked in the
data pool with a pixel value no real image has, and every input any model of the tuning sees is
checked for it. Copying test rows into training or validation data, or letting them into the
normalisation statistics, would carry the mark; the re-runs' test evaluation is the control that
shows the mark does reach a model that reads the test split."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

import harness.training.run
import harness.tuning.rerun
import harness.tuning.tune
from harness.data.task import build_task
from harness.data.pools import load_pool
from harness.tuning.tune import tune_cell
from tuning_helpers import compose_tune, load, split_rows

MARK = 1e4  # raw pixel value of a marked test image (digits' pixels are 0..16)
SPLITS = ("data.n_val=50", "data.n_test=60")  # n_train=10: each split has a size of its own


def _test_rows(cfg) -> list[int]:
    return split_rows(cfg, int(cfg.data.n_test))


@pytest.fixture
def marked(tmp_path):
    """The pool's test images set to MARK (restored afterwards); yields (cfg, the task unmarked)."""
    cfg = compose_tune(tmp_path, *SPLITS)
    clean = build_task(cfg.data)
    pool = load_pool(cfg.data)
    original = pool.x.clone()
    pool.x[torch.tensor(_test_rows(cfg))] = MARK
    yield cfg, clean
    pool.x.copy_(original)


def test_marking_the_test_images_changes_the_test_split_and_nothing_else(marked):
    cfg, clean = marked
    task = build_task(cfg.data)
    assert torch.equal(task.train.x, clean.train.x) and torch.equal(task.train.y, clean.train.y)
    assert torch.equal(task.val.x, clean.val.x) and torch.equal(task.val.y, clean.val.y)  # statistics included
    assert not torch.equal(task.test.x, clean.test.x)


def test_no_model_of_the_tuning_sees_a_marked_image_and_the_reruns_do(marked, tmp_path, monkeypatch):
    cfg, clean = marked
    real_images = max(float(clean.train.x.abs().max()), float(clean.val.x.abs().max()))
    marked_task = build_task(cfg.data)
    threshold = 10 * real_images
    assert float(marked_task.test.x.abs().min()) > threshold  # every marked image is unmistakable, standardised

    phase, seen = ["before"], {}
    real_create, real_run = harness.training.run.create_backbone, harness.tuning.tune.run_training

    def create_backbone(*args, **kwargs):
        model = real_create(*args, **kwargs)

        def look(module, inputs):
            key = phase[0]
            seen[key] = max(seen.get(key, 0.0), float(inputs[0].detach().abs().max()))
        model.register_forward_pre_hook(look)
        return model

    def run_training(run_cfg, run_dir, **kwargs):
        phase[0] = run_dir.name.split("-")[0]  # "trial" or "final"
        return real_run(run_cfg, run_dir, **kwargs)

    monkeypatch.setattr(harness.training.run, "create_backbone", create_backbone)
    monkeypatch.setattr(harness.tuning.tune, "run_training", run_training)
    monkeypatch.setattr(harness.tuning.rerun, "run_training", harness.tuning.tune.run_training)  # the replicates' runs
    tune_cell(compose_tune(tmp_path, *SPLITS, "tune.n_trials=3", "study.seeds=1"), tmp_path / "runs")

    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [t.user_attrs.get("fail_reason") for t in trials]
    assert set(seen) == {"trial", "final"}
    assert seen["trial"] <= threshold, "a model of the tuning saw a marked test image"
    assert seen["final"] > threshold  # the control: the re-run's test evaluation does read them

"""harness.training.probe: a logistic-regression probe on the frozen source features, scored on the test split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.task import build_task
from harness.training.pretrain import ensure_source
from harness.training.probe import fit_probe, frozen_features, probe_accuracy
from harness.training.run import build_model


def test_features_are_the_frozen_backbones_pre_logits_and_nothing_moves(make_cfg) -> None:
    cfg = make_cfg("strategy=finetune", "data.n_train=20")
    ensure_source(cfg)
    task = build_task(cfg.data, "target")
    model = build_model(cfg, task)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = frozen_features(model, task.train, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats too
    assert model.training  # left as it was found
    model.eval()
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(task.train.x), pre_logits=True).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert feats.shape == (20, model.num_features)


def test_probe_accuracy_is_the_probe_on_those_features(make_cfg) -> None:
    cfg = make_cfg("strategy=finetune", "data.n_train=20")
    ensure_source(cfg)
    task = build_task(cfg.data, "target")
    model = build_model(cfg, task)
    cpu = torch.device("cpu")
    manual = fit_probe(frozen_features(model, task.train, cpu), task.train.y.numpy(),
                       frozen_features(model, task.test, cpu), task.test.y.numpy())
    assert probe_accuracy(cfg) == pytest.approx(manual)
    assert 0.0 <= manual <= 1.0


def test_fit_probe_separates_separable_features() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    x = rng.standard_normal((30, 4)) + 5 * np.eye(4)[y]
    y_test = np.repeat(np.arange(3), 20)
    x_test = rng.standard_normal((60, 4)) + 5 * np.eye(4)[y_test]
    assert fit_probe(x, y, x_test, y_test) > 0.95
    assert fit_probe(x, y, rng.standard_normal((60, 4)), y_test) < 0.6  # features with no information


@pytest.mark.slow
def test_each_fine_tune_replicate_stores_the_probe_of_its_own_training_subset(tmp_path) -> None:
    from harness.settings.schema import replace_path
    from harness.tuning.tune import tune_cell
    from tuning_helpers import compose_tune, load

    cfg = compose_tune(tmp_path, "strategy=finetune", "tune.n_trials=1", "study.seeds=2")
    tune_cell(cfg, tmp_path / "runs")
    final = load(tmp_path, "digits/n000010/finetune/t0").user_attrs["final"]
    for r in final:
        replicate = replace_path(cfg, "data.subset", r["subset"])
        assert r["probe_acc"] == pytest.approx(probe_accuracy(replicate))

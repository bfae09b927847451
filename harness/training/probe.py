"""What the source model knows about the target, without fine-tuning it: a logistic-regression
probe on its frozen features, trained on the same n_train examples a replicate trains on and scored
on the test split.

A linear probe on frozen source features predicts whether a source helps a target (Kornblith et al.
2019; You et al. 2021): where it falls below what scratch reaches with the same examples, the
source features do not carry the target's information, and fine-tuning has to relearn it. It costs
one forward pass over n_train + n_test images, so the report can show it at every size.
"""

from __future__ import annotations

import numpy as np
import torch
from harness.settings.schema import RunConfig

from harness.data.task import Task, build_task, eval_batches
from harness.data.pools import LabelledImages


def frozen_features(model: torch.nn.Module, images: LabelledImages, device: torch.device) -> np.ndarray:
    """The backbone's pooled pre-logit features, in eval mode and without gradients: nothing moves."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in eval_batches(images, 256, device, 0):
            out.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of an L2-regularised multinomial logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def probe_accuracy(cfg: RunConfig, task: Task | None = None) -> float:
    """The probe's test accuracy for `cfg`'s training set (n_train, data.subset) and source weights."""
    from harness.training.run import build_model, resolve_device

    task = task or build_task(cfg.data, "target")
    device = resolve_device(cfg.trainer)
    model = build_model(cfg, task).to(device)
    train_x = frozen_features(model, task.train, device)
    test_x = frozen_features(model, task.test, device)
    return fit_probe(train_x, task.train.y.numpy(), test_x, task.test.y.numpy())

"""What each strategy starts from and trains: fine-tuning starts from the pretrained weights, scratch
does not; a linear probe moves only the head; LP-FT and freeze train what they say; layer-wise lr
decay; and the FLOPs each of them spends."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from harness.data.task import build_task
from harness.training.models import classifier_names, stage_groups
from harness.training.pretrain import ensure_pretrained, ensure_source
from harness.training.run import build_model, run_training
from harness.training.strategies import plan_phases

# Source: 4 classes, target: the other 6, so the head must be rebuilt.
SPLIT = ("data.source_classes=[0,1,2,3]", "data.target_classes=null")


def _backbone(state: dict, head: set[str]) -> dict:
    return {k: v for k, v in state.items() if k not in head}


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_finetune_starts_from_pretrained_weights(make_cfg):
    cfg = make_cfg("strategy=finetune", *SPLIT)
    task = build_task(cfg.data)
    saved = load_file(str(ensure_pretrained(cfg).weights))
    model = build_model(cfg, task)
    head = classifier_names(model)
    assert head == {"fc.weight", "fc.bias"}
    state = model.state_dict()
    backbone = _backbone(state, head)
    assert len(backbone) > 20
    for key, value in backbone.items():
        assert torch.equal(value, saved[key]), key
    # the head is new, sized for the 6 target classes (the source head had 4)
    assert saved["fc.weight"].shape == (4, 64)
    assert state["fc.weight"].shape == (6, 64) and model.num_classes == 6 == task.num_classes


def test_scratch_does_not_start_from_pretrained_weights(make_cfg):
    ft = make_cfg("strategy=finetune", *SPLIT)
    saved = load_file(str(ensure_pretrained(ft).weights))
    cfg = make_cfg("strategy=scratch", *SPLIT)
    model = build_model(cfg, build_task(cfg.data))
    state = model.state_dict()
    weights = [k for k in state if k.endswith(".weight") and state[k].dim() == 4]
    assert len(weights) == 7
    assert not any(torch.equal(state[k], saved[k]) for k in weights)
    assert state["fc.weight"].shape == (6, 64)


@pytest.fixture(scope="module")
def pretrained_state(make_cfg):
    return load_file(str(ensure_pretrained(make_cfg("strategy=finetune")).weights))


@pytest.fixture(scope="module")
def runs(make_cfg, tmp_path_factory):
    """One short run per fine-tuning mode (and scratch), same data and steps."""
    out = {}
    for mode in ("full", "linear_probe", "lp_ft", "freeze"):
        cfg = make_cfg("strategy=finetune", f"strategy.mode={mode}", "strategy.freeze_stages=2", "train.steps=10")
        ensure_source(cfg)
        out[mode] = run_training(cfg, tmp_path_factory.mktemp(mode))
    return out


def test_linear_probe_leaves_backbone_unchanged(runs, pretrained_state):
    model = runs["linear_probe"].model
    head = classifier_names(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    backbone = _backbone(state, head)
    assert any(k.endswith("running_mean") for k in backbone)  # BatchNorm buffers are compared too
    assert _changed(backbone, pretrained_state) == set()
    # the head trained: compare with the head this seed initialises
    assert runs["linear_probe"].compute.steps == 10
    initial = _initial_state(runs["linear_probe"])
    assert torch.equal(initial["stem.0.weight"], state["stem.0.weight"])
    assert not torch.equal(state["fc.weight"], initial["fc.weight"])
    assert not torch.equal(state["fc.bias"], initial["fc.bias"])


def _initial_state(result) -> dict:
    """The model exactly as run_training made it before training (same config, same seeding)."""
    from harness.settings.config import load
    from harness.settings.schema import RunConfig

    cfg = load(RunConfig, OmegaConf.create(result.config))
    task = build_task(cfg.data)
    pl.seed_everything(int(cfg.seed), verbose=False)
    return build_model(cfg, task).state_dict()


def test_full_finetune_moves_the_backbone(runs, pretrained_state):
    model = runs["full"].model
    backbone = _backbone({k: v.detach() for k, v in model.state_dict().items()}, classifier_names(model))
    changed = _changed(backbone, pretrained_state)
    assert len(changed) == len(backbone)


def test_linear_probe_costs_fewer_flops(runs):
    lp, full = runs["linear_probe"].compute, runs["full"].compute
    assert 0 < lp.flops_per_step < full.flops_per_step
    assert lp.train_flops == pytest.approx(10 * lp.flops_per_step)
    assert full.train_flops == pytest.approx(10 * full.flops_per_step)
    assert lp.train_flops < full.train_flops
    # the backward through the backbone is skipped: well under the full cost
    assert lp.flops_per_step < 0.6 * full.flops_per_step
    # the forward is the same model: evaluation costs the same
    assert lp.eval_flops == pytest.approx(full.eval_flops)


def test_lp_ft_phases_sum(runs):
    lp_ft, lp, full = runs["lp_ft"].compute, runs["linear_probe"].compute, runs["full"].compute
    assert [p["name"] for p in lp_ft.phases] == ["linear_probe", "full"]
    probe, tune = lp_ft.phases
    assert probe["start"] == 0 and tune["start"] == probe["steps"] == 3  # lp_fraction 0.3 of 10 steps
    assert probe["steps"] + tune["steps"] == lp_ft.steps == 10
    assert probe["flops_per_step"] == pytest.approx(lp.flops_per_step)
    assert tune["flops_per_step"] == pytest.approx(full.flops_per_step)
    assert lp_ft.train_flops == pytest.approx(3 * lp.flops_per_step + 7 * full.flops_per_step)
    assert lp.train_flops < lp_ft.train_flops < full.train_flops


def test_lp_ft_unfreezes_the_backbone(runs, pretrained_state):
    model = runs["lp_ft"].model
    backbone = _backbone({k: v.detach() for k, v in model.state_dict().items()}, classifier_names(model))
    assert len(_changed(backbone, pretrained_state)) == len(backbone)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_freezes_exactly_the_first_stages(runs, pretrained_state):
    model = runs["freeze"].model
    groups = stage_groups(model)
    assert len(groups) == 5  # stem, 3 stages, head
    assert groups[0] == ["stem.0.weight", "stem.1.weight", "stem.1.bias"]
    frozen = set(groups[0]) | set(groups[1])
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    state = {k: v.detach() for k, v in model.state_dict().items()}
    changed = _changed(_backbone(state, classifier_names(model)), pretrained_state)
    frozen_modules = {n.rsplit(".", 1)[0] for n in frozen}
    frozen_state = {k for k in state if k.rsplit(".", 1)[0] in frozen_modules}
    assert {k for k in frozen_state if k.endswith("running_mean")} == {"stem.1.running_mean", "stages.0.0.1.running_mean", "stages.0.1.1.running_mean"}
    assert not changed & frozen_state, f"frozen tensors moved: {sorted(changed & frozen_state)}"
    trainable_state = set(state) - frozen_state - classifier_names(model)
    assert trainable_state and trainable_state <= changed
    assert runs["freeze"].compute.flops_per_step < runs["full"].compute.flops_per_step
    assert runs["freeze"].compute.phases[0]["name"] == "freeze2"


def test_freeze_cannot_freeze_the_head(make_cfg, tmp_path):
    from harness.errors import ConfigError

    ensure_source(make_cfg("strategy=finetune"))
    with pytest.raises(ConfigError, match=r"freeze_stages=5 .* use 0\.\.4"):
        run_training(make_cfg("strategy=finetune", "strategy.mode=freeze", "strategy.freeze_stages=5"), tmp_path)
    # freezing all 4 groups before the head is a linear probe
    cfg = make_cfg("strategy=finetune", "strategy.mode=freeze", "strategy.freeze_stages=4")
    model = build_model(cfg, build_task(cfg.data))
    (phase,) = plan_phases(model, cfg.strategy, 10)
    assert phase.trainable == {"fc.weight", "fc.bias"}


class _GroupRecorder(pl.Callback):
    def __init__(self):
        self.groups: list[tuple[float, set[str]]] = []
        self.decay: list[tuple[float, set[str]]] = []

    def on_train_start(self, trainer, pl_module):
        names = {id(p): n.removeprefix("model.") for n, p in pl_module.named_parameters()}
        for group in trainer.optimizers[0].param_groups:
            self.groups.append((group["initial_lr"], {names[id(p)] for p in group["params"]}))
            self.decay.append((group["weight_decay"], {names[id(p)] for p in group["params"]}))


def test_layer_decay_lowers_lr_toward_the_stem(make_cfg, tmp_path):
    recorder = _GroupRecorder()
    cfg = make_cfg("strategy=finetune", "strategy.layer_decay=0.5", "train.lr=0.01", "train.steps=5")
    ensure_source(cfg)
    run_training(cfg, tmp_path, callbacks=[recorder])
    lr_of = {name: lr for lr, names in recorder.groups for name in names}
    assert len(lr_of) == 23  # every parameter: stem 3, stages 3x6, head 2
    depth = {"stem": 0, "stages.0": 1, "stages.1": 2, "stages.2": 3, "fc": 4}
    by_depth: dict[int, set[float]] = {}
    for name, lr in lr_of.items():
        d = next(v for k, v in depth.items() if name.startswith(k + "."))
        by_depth.setdefault(d, set()).add(lr)
    assert all(len(lrs) == 1 for lrs in by_depth.values()), by_depth  # one lr per depth
    lrs = [by_depth[d].pop() for d in range(5)]
    assert lrs == sorted(lrs) and len(set(lrs)) == 5  # strictly decreasing toward the stem
    assert lrs[-1] == pytest.approx(0.01)
    assert lrs[0] == pytest.approx(0.01 * 0.5 ** 4)


def test_no_layer_decay_gives_one_lr(make_cfg, tmp_path):
    recorder = _GroupRecorder()
    cfg = make_cfg("strategy=finetune", "train.lr=0.01", "train.steps=5")
    ensure_source(cfg)
    run_training(cfg, tmp_path, callbacks=[recorder])
    assert {lr for lr, _ in recorder.groups} == {0.01}
    assert sum(len(names) for _, names in recorder.groups) == 23
    # weight decay (train.weight_decay=0.05) on conv and linear weights only, not on norms and biases
    no_decay = {n for wd, names in recorder.decay if wd == 0 for n in names}
    decayed = {n for wd, names in recorder.decay if wd == pytest.approx(0.05) for n in names}
    assert decayed == {"stem.0.weight", "fc.weight"} | {f"stages.{s}.{b}.0.weight" for s in range(3) for b in range(2)}
    assert len(no_decay) == 23 - 8 and "fc.bias" in no_decay and "stem.1.weight" in no_decay

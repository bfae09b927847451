"""What each strategy trains, and when: scratch and full fine-tuning train everything; a linear
probe trains the head; LP-FT probes then unfreezes; freeze keeps the first k stages fixed.
Layer-wise lr decay scales each depth's learning rate (timm's grouping, our scheduler)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.settings.schema import STRATEGY_MODES, StrategyConfig
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from harness.errors import ConfigError
from harness.training.models import classifier_names, stage_groups

MODES = STRATEGY_MODES


@dataclass(frozen=True)
class Phase:
    """From optimizer step `start` on, exactly the parameters in `trainable` get gradients."""

    name: str
    start: int
    trainable: frozenset[str]


def plan_phases(model: nn.Module, strategy: StrategyConfig, steps: int) -> list[Phase]:
    everything = frozenset(n for n, _ in model.named_parameters())
    if strategy.name == "scratch" or strategy.mode == "full":
        return [Phase("full", 0, everything)]
    head = frozenset(classifier_names(model))
    if strategy.mode == "linear_probe":
        return [Phase("linear_probe", 0, head)]
    if strategy.mode == "lp_ft":
        switch = max(1, min(steps - 1, round(strategy.lp_fraction * steps)))
        return [Phase("linear_probe", 0, head), Phase("full", switch, everything)]
    if strategy.mode == "freeze":
        groups = stage_groups(model)
        k = strategy.freeze_stages
        if k >= len(groups):
            raise ConfigError(f"strategy.freeze_stages={k} would freeze the head too ({model.__class__.__name__} has {len(groups) - 1} stages before it): use 0..{len(groups) - 1}")
        frozen = {name for group in groups[:k] for name in group}
        return [Phase(f"freeze{k}", 0, everything - frozen)]
    raise ConfigError(f"strategy.mode={strategy.mode} is unknown: use one of {', '.join(MODES)}")


def apply_phase(model: nn.Module, phase: Phase) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(name in phase.trainable)


def hold_frozen_norms(model: nn.Module) -> None:
    """Frozen BatchNorms keep their running statistics: a linear probe must not move the backbone."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def optimizer_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """Parameter groups with their own lr; built while every parameter still requires grad,
    since timm's grouping skips frozen ones. No weight decay on norms and biases."""
    for p in model.parameters():
        p.requires_grad_(True)
    if layer_decay < 1.0:
        groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay=weight_decay)
    for group in groups:
        group["lr"] = lr * float(group.pop("lr_scale", 1.0))
    return groups

"""Backbones come from timm by name. Our default tiny convnet joins timm's registry, so it is made,
loaded from pretrained files, grouped into stages and given a new head through the same calls
as any timm model."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, group_parameters, register_model
from torch import nn

from harness.errors import ConfigError


def _conv_bn_act(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Stem + three conv stages + linear head: 75k parameters, milliseconds per step on a CPU."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64),
                 drop_rate: float = 0.0, global_pool: str = "avg", **_: object):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = widths[-1]
        self.stem = _conv_bn_act(in_chans, widths[0])
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(nn.Sequential(_conv_bn_act(c_in, width, stride=1 if i == 0 else 2), _conv_bn_act(width, width)))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({
    "harness_tiny_cnn": dict(url="", num_classes=10, input_size=(1, 8, 8), pool_size=None, crop_pct=1.0,
                             mean=(0.0,), std=(1.0,), first_conv="stem.0", classifier="fc"),
})


@register_model
def harness_tiny_cnn(pretrained: bool = False, **kwargs) -> TinyCNN:
    return build_model_with_cfg(TinyCNN, "harness_tiny_cnn", pretrained, **kwargs)


def check_model_name(name: str) -> None:
    if timm.is_model(name.split(".")[0]):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "list them with timm.list_models()"
    raise ConfigError(f"model.name={name} is not a timm model: {hint}")


def create_backbone(model_cfg, num_classes: int, in_chans: int, image_size: int,
                    pretrained_file: Path | None = None, hub: bool = False) -> nn.Module:
    """Every model is made here: random, from a local file (through timm's pretrained path, which
    drops the old head and adapts the input channels), or from a hub tag."""
    name = str(model_cfg.name)
    check_model_name(name)
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=float(model_cfg.drop_rate), **dict(model_cfg.kwargs or {}))
    if pretrained_file is not None:
        # num_classes=-1 in the overlay never equals ours, so timm always drops the source head.
        overlay = dict(file=str(pretrained_file), num_classes=-1)
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    try:
        return timm.create_model(name, pretrained=hub, **kwargs)
    except (RuntimeError, TypeError, ValueError) as err:
        if hub:
            raise
        raise ConfigError(f"model.name={name} cannot be built for {in_chans}x{image_size}x{image_size} inputs and {num_classes} classes ({err}): pick another model.name or data.image_size") from None


def stage_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names by depth (stem first, head last), from timm's group_matcher."""
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"{type(model).__name__} has no stage structure: strategy.mode=freeze needs a timm model with group_matcher")
    layer_of = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    depth = max(layer_of.values()) + 1
    groups: list[list[str]] = [[] for _ in range(depth)]
    for name, layer in layer_of.items():
        groups[layer].append(name)
    return [g for g in groups if g]


def classifier_names(model: nn.Module) -> set[str]:
    """Names of the head's parameters (the part a new target task replaces)."""
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}

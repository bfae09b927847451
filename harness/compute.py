"""Compute accounting: FLOPs measured on a real batch with the actual trainable set, so frozen
layers (no weight gradients, often no backward at all) cost what they really cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Compute:
    train_flops: float = 0.0
    eval_flops: float = 0.0
    wall_s: float = 0.0
    samples_seen: int = 0
    steps: int = 0
    flops_per_step: float = 0.0   # the full-model phase when a run has two (lp_ft)
    peak_mem_bytes: int | None = None
    phases: list[dict] = field(default_factory=list)

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.eval_flops

    def to_dict(self) -> dict:
        return asdict(self)


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def train_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward on this batch, leaving the model exactly as it was."""
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        if loss.requires_grad:
            loss.backward()

    flops = _count(step)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name])
    for name, p in model.named_parameters():
        p.grad = grads[name]
    model.train(was_training)
    return flops


@torch.no_grad()
def eval_flops_per_sample(model: nn.Module, x: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    flops = _count(lambda: model(x))
    model.train(was_training)
    return flops / max(1, x.shape[0])


def peak_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
    except (ImportError, OSError):
        return None

"""Compute accounting: FLOPs measured on a real batch with the actual trainable set, so frozen
layers (no weight gradients, often no backward at all) cost what they really cost, and counted
as the run goes (ComputeMeter), so a run that fails or is interrupted reports what it spent."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pytorch_lightning as pl
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


@dataclass(frozen=True)
class PhaseCost:
    """One training phase (harness.training.strategies.Phase) and the measured FLOPs of one of its steps."""
    name: str
    start: int
    flops_per_step: float


def phase_flops(phases: Sequence[PhaseCost], steps_done: int) -> tuple[float, list[dict]]:
    """Training FLOPs of the first `steps_done` steps, each at its phase's cost, and one row per phase."""
    total, rows = 0.0, []
    for i, phase in enumerate(phases):
        end = phases[i + 1].start if i + 1 < len(phases) else steps_done
        n = max(0, min(end, steps_done) - phase.start)
        total += n * phase.flops_per_step
        rows.append({"name": phase.name, "start": phase.start, "steps": n, "flops_per_step": phase.flops_per_step})
    return total, rows


class ComputeMeter(pl.Callback):
    """What a run spends, counted as it goes: optimizer steps done at their phase's measured cost,
    the examples validation read, wall time since the run started. `spent()` may be read at any
    point, so a failed, interrupted or pruned run reports exactly what it spent up to there."""

    def __init__(self, phases: Sequence[PhaseCost], eval_flops_per_sample: float, n_val: int,
                 samples_per_step: int, device: torch.device, started: float):
        self.phases, self.eval_flops_per_sample, self.n_val = list(phases), eval_flops_per_sample, n_val
        self.samples_per_step, self.device, self.started = samples_per_step, device, started
        self.steps = 0
        self.evaluated = 0  # examples run through the model to score it
        self.trainer: pl.Trainer | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trainer = trainer  # its global_step is read when asked: no work per step

    @property
    def steps_done(self) -> int:
        """Optimizer steps finished (a fault's step, if it broke one, not counted)."""
        return int(self.trainer.global_step) if self.trainer is not None else self.steps

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.evaluated += self.n_val


    def count_evaluated(self, n: int) -> None:
        """Examples scored after training (the last validation, the test split)."""
        self.evaluated += n

    def spent(self) -> Compute:
        steps = self.steps_done
        train_flops, rows = phase_flops(self.phases, steps)
        return Compute(train_flops=train_flops, eval_flops=self.eval_flops_per_sample * self.evaluated,
                       wall_s=time.perf_counter() - self.started, samples_seen=steps * self.samples_per_step,
                       steps=steps, flops_per_step=self.phases[-1].flops_per_step,
                       peak_mem_bytes=peak_memory_bytes(self.device), phases=rows)

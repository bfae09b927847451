"""K runs of one configuration trained together as one model of K members (issue 23): the re-runs
of a tuning run's best, and the recipe trials the K tuning runs of a cell share.

Such runs differ only in seed, training subset and validation draw, so their K models have one
architecture. Stacking them along the channel axis makes one model: a convolution with groups g
becomes one with K*g groups, a BatchNorm over C channels one over K*C (each member keeps its own
statistics), a linear layer a batched matmul over K weight matrices. Nothing couples the members: each has its own
initialisation (built with its own seed), data stream, augmentation, normalisation statistics and
loss term, the loss is their sum (so each member's gradient is its own), and the optimizers used
here act element by element (AdamW's decoupled decay, SGD's momentum); every member follows the
same schedule because they share one configuration. Each member gets its own results: validation
curve, per-example test correctness, FLOPs (what its separate run would have counted) and a share
of the wall time. A member can be stopped on its own: one whose loss stops being finite (diverged),
or one its judge stops at a validation (a trial its pruner rejects); it is masked out of the loss
and its results are what it had then, as its separate run would have stopped there.

A model with a layer this module cannot stack (attention, LayerNorm over channels, ...) or whose
forward mixes channels in code is refused with NotFusable, checked numerically on a random batch,
and its re-runs train one at a time (harness/tuning/rerun.py says so in the log).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.augment import augment_batch
from harness.data.task import FixedBatches, Task, build_task, train_batches
from harness.settings.schema import RunConfig, TrainConfig, as_dict
from harness.training.compute import Compute, ComputeMeter, eval_flops_per_sample
from harness.training.loggers import finish_logger, make_logger
from harness.training.module import Classifier, TrainingDiverged, accuracy_of
from harness.training.run import (RunFailed, RunResult, build_model, phase_costs, precision_of, resolve_device,
                                  uses_channels_last)
from harness.training.strategies import Phase, optimizer_groups, plan_phases
from harness.training.weights import InitialWeights

# judge(module, step, val_acc) -> stop this member now (a trial's pruner: harness/tuning/pruning.py)
Judge = Callable[[pl.LightningModule, int, float], bool]

# Layers that act on each channel (or each element) alone: a stacked model runs them unchanged.
CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
               nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)


class NotFusable(Exception):
    """The model cannot be stacked into members exactly; the message says which layer and why."""


class GroupedLinear(nn.Module):
    """K linear layers side by side: (B, K*in) -> (B, K*out). The bias stays one-dimensional, so
    weight-decay grouping (no decay on 1-D parameters) treats it as it treats a Linear's."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members * out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        out = torch.einsum("bki,koi->bko", x.reshape(b, self.members, self.in_features), self.weight)
        out = out.reshape(b, self.members * self.out_features)
        return out if self.bias is None else out + self.bias


def _stack_conv(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    c, k = convs[0], len(convs)
    out = nn.Conv2d(k * c.in_channels, k * c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                    groups=k * c.groups, bias=c.bias is not None, padding_mode=c.padding_mode)
    with torch.no_grad():
        out.weight.copy_(torch.cat([m.weight for m in convs]))
        if c.bias is not None:
            out.bias.copy_(torch.cat([m.bias for m in convs]))
    return out


def _stack_norm(norms: Sequence[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    n, k = norms[0], len(norms)
    out = nn.BatchNorm2d(k * n.num_features, n.eps, n.momentum, n.affine, n.track_running_stats)
    with torch.no_grad():
        for name, value in list(out.named_parameters(recurse=False)) + list(out.named_buffers(recurse=False)):
            parts = [getattr(m, name) for m in norms]
            value.copy_(parts[0] if value.ndim == 0 else torch.cat(parts))
    return out


def _stack_linear(linears: Sequence[nn.Linear]) -> GroupedLinear:
    lin, k = linears[0], len(linears)
    out = GroupedLinear(k, lin.in_features, lin.out_features, lin.bias is not None)
    with torch.no_grad():
        out.weight.copy_(torch.stack([m.weight for m in linears]))
        if lin.bias is not None:
            out.bias.copy_(torch.cat([m.bias for m in linears]))
    return out


def _stacked(name: str, layers: Sequence[nn.Module]) -> nn.Module | None:
    """The stacked replacement of one leaf layer, None to keep it as it is."""
    first = layers[0]
    if type(first) is nn.Conv2d:
        return _stack_conv(layers)
    if type(first) is nn.BatchNorm2d:
        return _stack_norm(layers)
    if type(first) is nn.Linear:
        return _stack_linear(layers)
    if isinstance(first, CHANNELWISE):
        return None
    raise NotFusable(f"{type(first).__name__} at `{name}` has no exact stacked form")


def fuse(models: Sequence[nn.Module], example: torch.Tensor) -> nn.Module:
    """One model whose input is the members' inputs stacked on the channel axis, (B, K*C, H, W), and
    whose output is their logits side by side, (B, K*classes). The members must share an
    architecture (one configuration, different seeds); their weights are copied, not shared.
    `example`: a batch of one member's input (B, C, H, W), to check the stacked model on."""
    if len(models) < 2:
        raise NotFusable("fewer than two members")
    body = copy.deepcopy(models[0])
    named = [dict(m.named_modules()) for m in models]
    for name, module in list(body.named_modules()):
        if name == "" or any(True for _ in module.children()):
            continue
        layers = [n.get(name) for n in named]
        if any(type(layer) is not type(module) for layer in layers):
            raise NotFusable(f"the members differ at `{name}`")
        replacement = _stacked(name, layers)
        if replacement is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, leaf, replacement)
    _check_exact(body, models, example)
    return body


@torch.no_grad()
def _check_exact(body: nn.Module, models: Sequence[nn.Module], example: torch.Tensor) -> None:
    """A forward that mixes channels in code (a reshape, a channel shuffle) passes the layer check
    but not this one: the stacked model must give each member's own logits on a random batch."""
    k = len(models)
    probe = example[:2].float()
    states = [m.training for m in models] + [body.training]
    for m in (*models, body):
        m.eval()
    try:
        inputs = [torch.randn_like(probe) for _ in range(k)]
        want = torch.cat([m(x) for m, x in zip(models, inputs)], dim=1)
        got = body(torch.cat(inputs, dim=1))
    except RuntimeError as err:
        raise NotFusable(f"the stacked model does not run: {str(err).splitlines()[0]}") from err
    finally:
        for m, state in zip((*models, body), states):
            m.train(state)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise NotFusable("its forward mixes channels outside its layers: the stacked model's logits differ")


def member(body: nn.Module, template: nn.Module, k: int, members: int) -> nn.Module:
    """Member k cut out of the stacked model, as a model of `template`'s architecture."""
    out = copy.deepcopy(template)
    stacked = dict(body.named_modules())
    with torch.no_grad():
        for name, module in out.named_modules():
            source = stacked.get(name)
            if isinstance(source, GroupedLinear):
                module.weight.copy_(source.weight[k])
                if module.bias is not None:
                    module.bias.copy_(source.bias.view(members, -1)[k])
            elif isinstance(source, (nn.Conv2d, nn.BatchNorm2d)) and source is not module:
                for pname, value in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                    whole = getattr(source, pname)
                    value.copy_(whole if whole.ndim == 0 else whole.view(members, -1, *whole.shape[1:])[k])
    return out


# --------------------------------------------------------------------------------------- training


class MemberBatches:
    """Endless training batches of every member, each from its own subset and seed, stacked:
    x (B, K, C, H, W), y (B, K)."""

    def __init__(self, streams: Sequence):
        self.streams = streams

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.streams):
            yield torch.stack([x for x, _ in batches], 1), torch.stack([y for _, y in batches], 1)


def _stacked_eval(tasks: Sequence[Task], split: str, batch_size: int, device: torch.device) -> FixedBatches:
    """Each member's evaluation split (its own standardisation), stacked the same way, pre-sliced."""
    parts = [getattr(t, split) for t in tasks]
    return FixedBatches(torch.stack([p.x for p in parts], 1).to(device), torch.stack([p.y for p in parts], 1).to(device),
                        batch_size)


class Members(Classifier):
    """The training step of K members at once: one forward of the stacked model, one cross-entropy
    per member, their sum backpropagated (each member's gradient is its own). Phases, frozen norms
    and the optimizer are the one-model Classifier's."""

    def __init__(self, body: nn.Module, members: int, train: TrainConfig, augment: str, phases: list[Phase],
                 groups: list[dict], channels_last: bool = False, judges: Sequence[Judge | None] = ()):
        super().__init__(body, train, augment, phases, groups, channels_last)
        self.members = members
        self.alive = torch.ones(members, dtype=torch.bool)
        self.diverged_at: dict[int, int] = {}
        self.stopped_at: dict[int, int] = {}  # members their judge stopped (pruned trials), by step
        self.judges = list(judges) or [None] * members
        self.val_history: list[list[tuple[int, float]]] = [[] for _ in range(members)]  # type: ignore[assignment]
        self.last_losses = torch.zeros(members)
        self.loggers_of: list = [None] * members
        self.meters: list[ComputeMeter] = []
        self.spent_at_death: dict[int, Compute] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, C, H, W) -> (B, K, classes): the members' inputs stacked on the channel axis."""
        b = x.shape[0]
        return super().forward(x.reshape(b, -1, *x.shape[3:])).view(b, self.members, -1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = augment_batch(x.flatten(0, 1), self.augment).view_as(x)
        logits = self(x)  # (B, K, classes)
        losses = F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none",
                                 label_smoothing=self.cfg.label_smoothing).mean(0)  # (K,)
        self.last_losses = losses.detach()
        alive = self.alive.to(losses.device)
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()  # a diverged member adds nothing

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._correct += (self(x).argmax(2) == y).sum(0)
        self._count += y.shape[0]

    def on_validation_epoch_start(self) -> None:
        self._correct, self._count = torch.zeros(self.members, dtype=torch.long, device=self.device), 0

    def on_validation_epoch_end(self) -> None:
        step = int(self.global_step)
        losses = self.last_losses.float().cpu()
        for k in range(self.members):
            if not self.alive[k]:
                continue
            if not math.isfinite(float(losses[k])):
                self.alive[k] = False
                self.diverged_at[k] = step
                if self.meters:  # as its own run would have: raised before this validation was counted
                    self.spent_at_death[k] = self.meters[k].spent()
                continue
            acc = float(self._correct[k]) / max(1, self._count)
            self.val_history[k].append((step, acc))
            if self.loggers_of[k] is not None:
                self.loggers_of[k].log_metrics({"val_acc": acc, "train_loss": float(losses[k])}, step=step)
            judge = self.judges[k]
            if judge is not None and judge(self, step, acc):
                self.alive[k] = False
                self.stopped_at[k] = step
                if self.meters:  # as its own run, stopped here: this validation counted, nothing after it
                    spent = self.meters[k].spent()
                    self.spent_at_death[k] = dataclasses.replace(
                        spent, eval_flops=spent.eval_flops + self.meters[k].eval_flops_per_sample * self.meters[k].n_val)
        if not bool(self.alive.any()):
            self.trainer.should_stop = True  # every member diverged or was stopped; nothing left to train


@torch.no_grad()
def _correct_per_member(module: Members, batches: FixedBatches) -> np.ndarray:
    """(K, N) per-example correctness on a stacked evaluation split, from one pass."""
    was = module.training
    module.eval()
    hits = [module(x).argmax(2) == y for x, y in batches]
    hits = torch.cat(hits) if hits else torch.zeros(0, module.members, dtype=torch.bool)
    module.train(was)
    return hits.T.cpu().numpy().astype(bool)


def check_members(cfgs: Sequence[RunConfig]) -> None:
    """Members must differ only in what a replicate or a tuning run varies: the seed, the data subset,
    the data draw (the validation split) and the tuning run's index."""
    def shape(cfg: RunConfig) -> dict:
        plain = as_dict(cfg)
        plain.pop("seed", None)
        plain["data"] = {k: v for k, v in plain["data"].items() if k not in ("subset", "draw")}
        if "tune" in plain:
            plain["tune"] = {k: v for k, v in plain["tune"].items() if k != "run"}
        return plain

    first = shape(cfgs[0])
    if any(shape(c) != first for c in cfgs[1:]):
        raise NotFusable("the members' settings differ beyond their seed, data subset, data draw and tuning run")


def train_members(cfgs: Sequence[RunConfig], run_dirs: Sequence[Path], *, weights: InitialWeights | None = None,
                  log_kind: str = "rerun", evaluate_test: bool = True, judges: Sequence[Judge | None] = (),
                  run_names: Sequence[str | None] = (), log_extras: Sequence[dict | None] = ()) -> list[RunResult | RunFailed]:
    """Train the K runs `cfgs` (one configuration, own seeds, subsets and draws) as one stacked model
    in one Lightning run. Returns, per member, its RunResult (stopped_early for one its judge stopped)
    or a RunFailed (with what it spent) whose cause is TrainingDiverged for a member whose loss stopped
    being finite. `judges[k](module, step, val_acc)` is asked at each of member k's validations and
    stops it when True. Without `evaluate_test` the test split is never read (trials). Raises
    NotFusable before training when the model cannot be stacked; any other error of the joint run is
    raised as is."""
    started = time.perf_counter()
    check_members(cfgs)
    cfg, k = cfgs[0], len(cfgs)
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    device = resolve_device(cfg.trainer)
    tasks = [build_task(c.data, "target") for c in cfgs]
    if not all(t.train.in_memory and t.val.in_memory and t.test.in_memory for t in tasks):
        raise NotFusable("the data is read from files per batch; members are stacked from tensors in memory")
    models = []
    for c, task in zip(cfgs, tasks):
        pl.seed_everything(c.seed, workers=True, verbose=False)
        models.append(build_model(c, task, weights))
    body = fuse(models, tasks[0].train.x[:2])
    train = cfg.train
    phases = plan_phases(body, cfg.strategy, train.steps)
    groups = optimizer_groups(body, train.lr, train.weight_decay, cfg.strategy.layer_decay)
    template = models[0].to(device)
    costs = phase_costs(template, plan_phases(template, cfg.strategy, train.steps), tasks[0], train.batch_size, device)
    validates = len(tasks[0].val) > 0
    x_eval = (tasks[0].val if validates else tasks[0].train).x[:train.batch_size].to(device)
    per_sample = eval_flops_per_sample(template, x_eval)
    meters = [ComputeMeter(costs, per_sample, n_val=len(t.val), samples_per_step=min(train.batch_size, len(t.train)),
                           device=device, started=started) for t in tasks]
    channels_last = uses_channels_last(cfg.trainer, device)
    body.to(device)
    module = Members(body, k, train, cfg.data.augment, phases, groups, channels_last, judges)
    if channels_last:
        body.to(memory_format=torch.channels_last)
    names, extras = list(run_names) or [None] * k, list(log_extras) or [None] * k
    loggers = [make_logger(c, d, "target", name=n, extra_config=e, job_type=log_kind)
               for c, d, n, e in zip(cfgs, run_dirs, names, extras)]
    module.loggers_of = loggers
    for d in run_dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=int(cfg.trainer.devices) if device.type == "cuda" else 1,
        precision=precision_of(cfg.trainer, device), max_steps=train.steps, max_epochs=-1,
        val_check_interval=train.val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=False,
        callbacks=meters, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(run_dirs[0]), deterministic=False, limit_val_batches=1.0 if validates else 0,
    )
    streams = [train_batches(t.train, train.batch_size, c.seed, device, 0) for c, t in zip(cfgs, tasks)]
    val = _stacked_eval(tasks, "val", train.batch_size * 4, device) if validates else None
    module.meters = meters
    states = ["failed"] * k
    test = np.zeros((k, 0), dtype=bool)
    try:
        trainer.fit(module, train_dataloaders=MemberBatches(streams), val_dataloaders=val)
        module.to(device)  # Lightning's teardown moved it back to the CPU
        steps_done = int(trainer.global_step)
        alive = [bool(a) for a in module.alive]
        last = [h[-1][0] if h else None for h in module.val_history]
        if validates and any(a and s != steps_done for a, s in zip(alive, last)):
            accs = _correct_per_member(module, val).mean(1)
            for j in range(k):
                if alive[j] and last[j] != steps_done:
                    module.val_history[j].append((steps_done, float(accs[j])))
                    meters[j].count_evaluated(len(tasks[j].val))
        if any(alive) and evaluate_test:
            test = _correct_per_member(module, _stacked_eval(tasks, "test", train.batch_size * 4, device))
        for meter, a in zip(meters, alive):
            if a:
                meter.count_evaluated(test.shape[1])
        states = ["complete" if a else "pruned" if j in module.stopped_at else "failed" for j, a in enumerate(alive)]
    finally:
        wall = time.perf_counter() - started
        for j, logger in enumerate(loggers):
            if logger is None:
                continue
            logger.finalize("success" if states[j] == "complete" else "failed")
            h = module.val_history[j]
            finish_logger(logger, states[j], {"val_acc": h[-1][1] if h else None,
                                              "test_acc": accuracy_of(test[j]) if test.shape[1] else None})
    out: list[RunResult | RunFailed] = []
    for j, (c, task, meter) in enumerate(zip(cfgs, tasks, meters)):
        if j in module.stopped_at:  # its wall time: the joint run's until then, split K ways
            history, spent = module.val_history[j], module.spent_at_death[j]
            out.append(RunResult(strategy=c.strategy.name, n_train=len(task.train), val_acc=history[-1][1],
                                 test_acc=None, compute=dataclasses.replace(spent, wall_s=spent.wall_s / k),
                                 val_history=history, stopped_early=True, config=as_dict(c),
                                 class_names=task.class_names, model=None, test_split=task.test_split))
            continue
        if not module.alive[j]:
            failed = RunFailed(dataclasses.replace(module.spent_at_death[j], wall_s=wall / k))
            failed.__cause__ = TrainingDiverged(f"loss is not finite at step {module.diverged_at[j]}")
            out.append(failed)
            continue
        history = module.val_history[j]
        out.append(RunResult(strategy=c.strategy.name, n_train=len(task.train), val_acc=history[-1][1] if history else None,
                             test_acc=accuracy_of(test[j]) if evaluate_test else None,
                             compute=dataclasses.replace(meter.spent(), wall_s=wall / k),
                             val_history=history, stopped_early=False, config=as_dict(c), class_names=task.class_names,
                             model=member(body, models[j], j, k), test_correct=test[j] if evaluate_test else None,
                             test_split=task.test_split))
    return out

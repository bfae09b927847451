"""The one function that trains: a composed config in, a RunResult out. Every entry point
(train, pretrain, tune, study) calls `run_training`; nothing else trains. It only trains: the
source model of a fine-tune is read from the cache, which the callers fill first
(harness.pretrain.ensure_source), so this module never imports harness.pretrain."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from harness.compute import Compute, eval_flops_per_sample, peak_memory_bytes, train_step_flops
from harness.config import validate_run
from harness.data import Task, build_task, eval_batches, one_batch, train_batches
from harness.errors import ConfigError
from harness.loggers import finish_logger, make_logger
from harness.models import classifier_names, create_backbone
from harness.module import Classifier, accuracy, accuracy_of, correct_per_example
from harness.source_cache import cache_dir, find_pretrained
from harness.strategies import Phase, apply_phase, optimizer_groups, plan_phases
from harness.weights import check_fits, read_state_dict, require_hub

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "timm"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Your `IterableDataset` has `__len__`.*")
warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")


@dataclass
class RunResult:
    strategy: str
    n_train: int
    val_acc: float | None  # None when nothing was held out (data.cv_fold=-1)
    test_acc: float | None
    compute: Compute
    val_history: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    config: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained model, not serialised
    # Per-example correctness on the test split, in its order (None when the test split was not read),
    # and the digest naming that split (data.split_digest): what pairs runs on the same test examples.
    test_correct: np.ndarray | None = field(default=None, repr=False)
    test_split: str = ""

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "n_train": self.n_train, "val_acc": self.val_acc,
                "test_acc": self.test_acc, "compute": self.compute.to_dict(),
                "val_history": [list(p) for p in self.val_history], "stopped_early": self.stopped_early,
                "config": self.config}


def resolve_device(trainer_cfg: DictConfig) -> torch.device:
    want = str(trainer_cfg.accelerator)
    if want == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible: use trainer.accelerator=cpu or auto")
    return torch.device("cuda" if want in ("gpu", "auto") and torch.cuda.is_available() else "cpu")


def _precision(trainer_cfg: DictConfig, device: torch.device) -> str:
    if str(trainer_cfg.precision) != "auto":
        return str(trainer_cfg.precision)
    return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32-true"


def pretrained_file(cfg: DictConfig) -> Path | None:
    """Where a fine-tune's weights come from: harness-pretrain's cache (read, never made here: the
    callers make it, see harness.pretrain.ensure_source), a file, or None for the hub."""
    weights = str(cfg.strategy.weights)
    if weights == "source":
        found = find_pretrained(cfg)
        if found is None:
            raise ConfigError(f"strategy.weights=source but no source model is cached in {cache_dir(cfg)}: run harness-pretrain "
                              "with the same overrides first (harness-train, -tune and -study make it themselves)")
        return found.weights
    if weights == "hub":
        require_hub(str(cfg.model.name))
        return None
    return Path(weights).expanduser()


def build_model(cfg: DictConfig, task: Task) -> torch.nn.Module:
    args = (cfg.model, task.num_classes, task.in_chans, task.image_size)
    if cfg.strategy.name == "scratch":
        return create_backbone(*args)
    path = pretrained_file(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)  # callers other than run_training (the probe) too
    if path is None:
        return create_backbone(*args, hub=True)
    check_weights_fit(cfg, task, path)
    return create_backbone(*args, pretrained_file=path)


def check_weights_fit(cfg: DictConfig, task: Task, path: Path) -> None:
    """Read the file safely and check it against a fresh model before timm loads it non-strictly."""
    reference = create_backbone(cfg.model, task.num_classes, task.in_chans, task.image_size)
    check_fits(read_state_dict(path), reference, classifier_names(reference),
               reference.pretrained_cfg.get("first_conv"), path)


def _count_flops(model: torch.nn.Module, phases: Sequence[Phase], task: Task, batch_size: int,
                 device: torch.device) -> list[float]:
    x, y = (t.to(device) for t in one_batch(task.train, batch_size))
    per_phase = []
    for phase in phases:
        apply_phase(model, phase)
        per_phase.append(train_step_flops(model, x, y))
    apply_phase(model, phases[0])
    return per_phase


def _train_flops(phases: Sequence[Phase], per_phase: Sequence[float], steps_done: int) -> tuple[float, list[dict]]:
    total, rows = 0.0, []
    for i, (phase, flops) in enumerate(zip(phases, per_phase)):
        end = phases[i + 1].start if i + 1 < len(phases) else steps_done
        n = max(0, min(end, steps_done) - phase.start)
        total += n * flops
        rows.append({"name": phase.name, "start": phase.start, "steps": n, "flops_per_step": flops})
    return total, rows


def run_training(cfg: DictConfig, run_dir: Path, *, role: str = "target", callbacks: Sequence[pl.Callback] = (),
                 evaluate_test: bool = True, run_name: str | None = None, log_extra: dict | None = None) -> RunResult:
    """Train one model as `cfg` says and measure it. role="source" trains on the source classes
    (pretraining) and reads no test split."""
    started = time.perf_counter()
    validate_run(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if int(cfg.trainer.threads) > 0:
        torch.set_num_threads(int(cfg.trainer.threads))
    device = resolve_device(cfg.trainer)
    task = build_task(cfg.data, role)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_model(cfg, task)
    train = cfg.train
    phases = plan_phases(model, cfg.strategy, int(train.steps))
    layer_decay = float(cfg.strategy.get("layer_decay", 1.0))
    groups = optimizer_groups(model, float(train.lr), float(train.weight_decay), layer_decay)
    # Counting runs a real forward and backward: on the training device, not on one CPU thread.
    model.to(device)
    per_phase = _count_flops(model, phases, task, int(train.batch_size), device)
    validates = len(task.val) > 0  # none held out: a re-run after cross-validated selection
    x_eval, _ = one_batch(task.val if validates else task.train, int(train.batch_size))
    eval_per_sample = eval_flops_per_sample(model, x_eval.to(device))

    precision = _precision(cfg.trainer, device)
    # Hydra reads trainer.channels_last=true as a bool: str() of it is "True"
    channels_last = str(cfg.trainer.channels_last).lower() == "true" or (str(cfg.trainer.channels_last) == "auto" and device.type == "cuda")
    module = Classifier(model, train, str(cfg.data.augment), phases, groups, channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    logger = make_logger(cfg, run_dir, role, name=run_name, extra_config=log_extra)
    workers = int(cfg.data.num_workers)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=int(cfg.trainer.devices) if device.type == "cuda" else 1,
        precision=precision, max_steps=int(train.steps), max_epochs=-1, val_check_interval=int(train.val_every),
        check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=logger or False, callbacks=list(callbacks),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=int(train.val_every), default_root_dir=str(run_dir), deterministic=False,
        limit_val_batches=1.0 if validates else 0,
    )
    val_loader = eval_batches(task.val, int(train.batch_size) * 4, device, workers)
    state = "failed"
    try:
        trainer.fit(module, train_dataloaders=train_batches(task.train, int(train.batch_size), int(cfg.seed), device, workers),
                    val_dataloaders=val_loader)
        state = "complete" if trainer.global_step >= int(train.steps) else "pruned"
    except BaseException as err:
        # What a failed or interrupted run spent still counts against its budget.
        flops, _ = _train_flops(phases, per_phase, int(trainer.global_step))
        err.harness_compute = Compute(train_flops=flops, eval_flops=eval_per_sample * len(task.val) * len(module.val_history),
                                      wall_s=time.perf_counter() - started, steps=int(trainer.global_step),
                                      flops_per_step=per_phase[-1])
        raise
    finally:
        finish_logger(logger, state)
    steps_done = int(trainer.global_step)
    module.to(device)  # Lightning's teardown moved it back to the CPU; the evaluation batches live on the device
    stopped_early = steps_done < int(train.steps)
    history = list(module.val_history)
    evaluated = len(task.val) * len(history)
    if validates and (not history or history[-1][0] != steps_done):
        history.append((steps_done, accuracy(module, val_loader, device)))
        evaluated += len(task.val)
    test_acc, test_correct = None, None
    if role == "target" and evaluate_test and not stopped_early:
        test_correct = correct_per_example(module, eval_batches(task.test, int(train.batch_size) * 4, device, workers), device)
        test_acc = accuracy_of(test_correct)
        evaluated += len(task.test)
    train_flops, phase_rows = _train_flops(phases, per_phase, steps_done)
    compute = Compute(
        train_flops=train_flops, eval_flops=eval_per_sample * evaluated, wall_s=time.perf_counter() - started,
        samples_seen=steps_done * min(int(train.batch_size), len(task.train)), steps=steps_done,
        flops_per_step=per_phase[-1], peak_mem_bytes=peak_memory_bytes(device), phases=phase_rows,
    )
    return RunResult(strategy=str(cfg.strategy.name), n_train=len(task.train), val_acc=history[-1][1] if history else None, test_acc=test_acc,
                     compute=compute, val_history=history, stopped_early=stopped_early,
                     config=OmegaConf.to_container(cfg, resolve=True), class_names=task.class_names, model=model,
                     test_correct=test_correct, test_split=task.test_split)

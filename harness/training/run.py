"""The one function that trains: a composed config in, a RunResult out. Every entry point
(train, pretrain, tune, study) calls `run_training`; the one other trainer is
harness.training.fused.train_members, which runs K runs of one configuration (re-runs, a cell's recipe
trials) as one stacked model with this module's parts and gives each its own RunResult. It only trains: the
callers resolve the starting weights (harness.training.weights.resolve_weights; a fine-tune's source model
is made first by harness.training.pretrain.ensure_source, which this module never imports), and what a run
spends is counted by a callback (harness.training.compute.ComputeMeter) that a failed or interrupted run
reports through RunFailed, RunInterrupted or RunExited."""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from harness.training.compute import Compute, ComputeMeter, PhaseCost, eval_flops_per_sample, train_step_flops
from harness.data.task import Task, build_task, eval_batches, one_batch, train_batches
from harness.errors import ConfigError
from harness.training.loggers import finish_logger, make_logger
from harness.training.models import classifier_names, create_backbone
from harness.training.module import Classifier, accuracy, accuracy_of, correct_per_example
from harness.settings.schema import RunConfig, TrainerConfig, as_dict
from harness.training.strategies import Phase, apply_phase, optimizer_groups, plan_phases
from harness.training.weights import InitialWeights, check_fits, read_state_dict, resolve_weights

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


class RunFailed(Exception):
    """The run raised (diverged, out of memory, a callback's error, optuna.TrialPruned): what it
    spent until then, with the run's own error as __cause__."""

    def __init__(self, compute: Compute):
        super().__init__(f"the run failed after {compute.steps} steps")
        self.compute = compute


class RunInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt (Ctrl-C, or a signal turned into one) stopped the run: what it spent,
    the interrupt as __cause__. Still a KeyboardInterrupt to callers that only stop on one."""

    def __init__(self, compute: Compute):
        super().__init__(f"the run was interrupted after {compute.steps} steps")
        self.compute = compute


class RunExited(SystemExit):
    """sys.exit inside the run (Lightning's answer to Ctrl-C, a launcher's requeue): what it spent,
    the SystemExit as __cause__, and its exit code kept, since a launcher's code is its message."""

    def __init__(self, code: object, compute: Compute):
        super().__init__(code)
        self.compute = compute


@contextmanager
def _accounted(meter: ComputeMeter) -> Iterator[None]:
    """Whatever stops the run here goes up typed, carrying what the run spent until then."""
    try:
        yield
    except Exception as err:
        raise RunFailed(meter.spent()) from err
    except KeyboardInterrupt as err:
        raise RunInterrupted(meter.spent()) from err
    except SystemExit as err:
        raise RunExited(err.code, meter.spent()) from err


def resolve_device(trainer_cfg: TrainerConfig) -> torch.device:
    want = str(trainer_cfg.accelerator)
    if want == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible: use trainer.accelerator=cpu or auto")
    return torch.device("cuda" if want in ("gpu", "auto") and torch.cuda.is_available() else "cpu")


def precision_of(trainer_cfg: TrainerConfig, device: torch.device) -> str:
    if str(trainer_cfg.precision) != "auto":
        return str(trainer_cfg.precision)
    return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32-true"


def build_model(cfg: RunConfig, task: Task, weights: InitialWeights | None = None) -> torch.nn.Module:
    """The model `weights` start (resolved from cfg when not given: the probe, tests)."""
    args = (cfg.model, task.num_classes, task.in_chans, task.image_size)
    if cfg.strategy.name == "scratch":
        return create_backbone(*args)
    weights = weights or resolve_weights(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # callers other than run_training (the probe) too
    if weights.file is None:
        return create_backbone(*args, hub=weights.hub)
    check_weights_fit(cfg, task, weights.file)
    return create_backbone(*args, pretrained_file=weights.file)


def check_weights_fit(cfg: RunConfig, task: Task, path: Path) -> None:
    """Read the file safely and check it against a fresh model before timm loads it non-strictly."""
    reference = create_backbone(cfg.model, task.num_classes, task.in_chans, task.image_size)
    check_fits(read_state_dict(path), reference, classifier_names(reference),
               reference.pretrained_cfg.get("first_conv"), path)


def uses_channels_last(trainer_cfg: TrainerConfig, device: torch.device) -> bool:
    """auto: on, on a GPU and on a CPU alike (oneDNN's convolutions are faster in NHWC: 1.1-1.3x per
    step for the default CNN on this project's CPU). Hydra reads channels_last=true as a bool."""
    return str(trainer_cfg.channels_last).lower() in ("true", "auto")


def phase_costs(model: torch.nn.Module, phases: Sequence[Phase], task: Task, batch_size: int,
                 device: torch.device) -> list[PhaseCost]:
    x, y = (t.to(device) for t in one_batch(task.train, batch_size))
    costs = []
    for phase in phases:
        apply_phase(model, phase)
        costs.append(PhaseCost(phase.name, phase.start, train_step_flops(model, x, y)))
    apply_phase(model, phases[0])
    return costs


def run_training(cfg: RunConfig, run_dir: Path, *, role: str = "target", callbacks: Sequence[pl.Callback] = (),
                 evaluate_test: bool = True, run_name: str | None = None, log_extra: dict | None = None,
                 weights: InitialWeights | None = None, log_kind: str = "train") -> RunResult:
    """Train one model as `cfg` says and measure it. role="source" trains on the source classes
    (pretraining) and reads no test split. `weights`: what the model starts from, resolved by the
    caller (harness.training.weights.resolve_weights; resolved from cfg here when not given). A run that
    stops once training began raises RunFailed, RunInterrupted or RunExited with what it spent."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    device = resolve_device(cfg.trainer)
    task = build_task(cfg.data, role)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, task, weights)
    train = cfg.train
    phases = plan_phases(model, cfg.strategy, train.steps)
    layer_decay = cfg.strategy.layer_decay
    groups = optimizer_groups(model, train.lr, train.weight_decay, layer_decay)
    # Counting runs a real forward and backward: on the training device, not on one CPU thread.
    model.to(device)
    costs = phase_costs(model, phases, task, train.batch_size, device)
    validates = len(task.val) > 0  # none held out: a re-run after cross-validated selection
    x_eval, _ = one_batch(task.val if validates else task.train, train.batch_size)
    meter = ComputeMeter(costs, eval_flops_per_sample(model, x_eval.to(device)), n_val=len(task.val),
                         samples_per_step=min(train.batch_size, len(task.train)), device=device, started=started)

    precision = precision_of(cfg.trainer, device)
    channels_last = uses_channels_last(cfg.trainer, device)
    module = Classifier(model, train, cfg.data.augment, phases, groups, channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    logger = make_logger(cfg, run_dir, role, name=run_name, extra_config=log_extra, job_type=log_kind)
    workers = cfg.data.num_workers
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=int(cfg.trainer.devices) if device.type == "cuda" else 1,
        precision=precision, max_steps=train.steps, max_epochs=-1, val_check_interval=train.val_every,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=logger or False, callbacks=[meter, *callbacks],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=train.val_every, default_root_dir=str(run_dir), deterministic=False,
        limit_val_batches=1.0 if validates else 0,
    )
    val_loader = eval_batches(task.val, train.batch_size * 4, device, workers)
    state, history, test_acc, test_correct = "failed", [], None, None
    with _accounted(meter):
        try:
            trainer.fit(module, train_dataloaders=train_batches(task.train, train.batch_size, cfg.seed, device, workers),
                        val_dataloaders=val_loader)
            state = "complete" if trainer.global_step >= train.steps else "pruned"
            steps_done = int(trainer.global_step)
            module.to(device)  # Lightning's teardown moved it back to the CPU; the evaluation batches live on the device
            stopped_early = steps_done < train.steps
            history = list(module.val_history)
            if validates and (not history or history[-1][0] != steps_done):
                history.append((steps_done, accuracy(module, val_loader, device)))
                meter.count_evaluated(len(task.val))
            if role == "target" and evaluate_test and not stopped_early:
                test_correct = correct_per_example(module, eval_batches(task.test, train.batch_size * 4, device, workers), device)
                test_acc = accuracy_of(test_correct)
                meter.count_evaluated(len(task.test))
        finally:  # the logger's run ends with the accuracies in its summary (the test's too, for a re-run)
            finish_logger(logger, state, {"val_acc": history[-1][1] if history else None, "test_acc": test_acc})
    return RunResult(strategy=cfg.strategy.name, n_train=len(task.train), val_acc=history[-1][1] if history else None, test_acc=test_acc,
                     compute=meter.spent(), val_history=history, stopped_early=stopped_early,
                     config=as_dict(cfg), class_names=task.class_names, model=model,
                     test_correct=test_correct, test_split=task.test_split)

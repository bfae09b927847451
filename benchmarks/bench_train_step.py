"""Time per optimizer step of harness's `run_training` against a plain PyTorch loop on the same
model, data, batch size, optimizer and schedule, in one process, interleaved and repeated; and the
fixed cost per run of `run_training` (entering it -> first step, last step -> result returned).

Prints figures; not a test.  Usage:
    python benchmarks/bench_train_step.py [--steps 300] [--repeats 3] [--model harness_tiny_cnn]
    python benchmarks/bench_train_step.py --device gpu --model resnet18 --image-size 64 --n-train 400 --batch-size 256
    python benchmarks/bench_train_step.py --device gpu --precision 32-true ...   # fp32 against the bf16 default

On a GPU both loops run the same precision (bf16 autocast for bf16-mixed) and channels_last, and the
clocks synchronise the device, so the figures are device time, not launch time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")


def now(device: str) -> float:
    """perf_counter after the device's queued work is done (CUDA runs asynchronously)."""
    if device == "gpu":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


class StepClock:
    """perf_counter at the start of optimizer step 0 and at the end of the last step."""

    def __init__(self, steps: int, device: str):
        import pytorch_lightning as pl

        outer = self

        class _Clock(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == 0 and outer.first is None:
                    outer.first = now(device)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == steps:
                    outer.last = now(device)

        self.first: float | None = None
        self.last: float | None = None
        self.callback = _Clock()


def harness_run(cfg, steps: int, run_dir: Path, device: str) -> dict:
    from harness.training.run import run_training

    clock = StepClock(steps, device)
    entered = time.perf_counter()
    result = run_training(cfg, run_dir, callbacks=[clock.callback], evaluate_test=False)  # the reports' test split: never read here
    returned = time.perf_counter()
    assert result.compute.steps == steps and clock.first and clock.last
    return {"ms_per_step": (clock.last - clock.first) / steps * 1e3, "setup_s": clock.first - entered,
            "teardown_s": returned - clock.last, "val_acc": result.val_acc,
            "flops_per_step": result.compute.flops_per_step, "peak_mem_bytes": result.compute.peak_mem_bytes}


def plain_run(cfg, task, steps: int, device: str, precision: str) -> dict:
    """The same training step by hand: same model factory, seed, batches, param groups, AdamW and
    warmup-cosine schedule, augmentation off, same precision and memory format; no validation
    inside the timed window."""
    import contextlib

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from harness.data.task import TensorBatches
    from harness.training.models import create_backbone
    from harness.training.module import accuracy, warmup_cosine
    from harness.training.strategies import optimizer_groups

    train = cfg.train
    pl.seed_everything(int(cfg.seed), verbose=False)
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    model = create_backbone(cfg.model, task.num_classes, task.in_chans, task.image_size).to(dev)
    channels_last = device == "gpu"  # what trainer.channels_last=auto does
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())
    groups = optimizer_groups(model, float(train.lr), float(train.weight_decay), 1.0)
    opt = torch.optim.AdamW(groups, lr=float(train.lr))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, float(train.warmup_frac)))
    batches = iter(TensorBatches(task.train.x.to(dev), task.train.y.to(dev), int(train.batch_size), int(cfg.seed)))
    model.train()
    x, y = next(batches)
    first = now(device)
    for step in range(steps):
        if step:
            x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss = F.cross_entropy(model(x), y, label_smoothing=float(train.label_smoothing))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    last = now(device)
    with autocast:
        val = accuracy(model, [(task.val.x, task.val.y)], dev)
    return {"ms_per_step": (last - first) / steps * 1e3, "val_acc": val}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="harness_tiny_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--precision", default="auto", help="auto = bf16-mixed on gpu, 32-true on cpu")
    parser.add_argument("--image-size", type=int, default=None, help="digits resized to this (default 8x8)")
    parser.add_argument("--n-train", type=int, default=None, help="training examples (default: data.n_train)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's measured peak, to print model FLOP utilisation")
    args = parser.parse_args()
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if args.device == "gpu" else "32-true")

    t_import = time.perf_counter()
    import torch
    from hydra import compose, initialize_config_dir

    import harness.training.run  # noqa: F401  (imports excluded from every figure below)
    from harness.cli import CONFIG_DIR
    from harness.settings.config import load
    from harness.settings.schema import RunConfig
    from harness.data.task import build_task

    import_s = time.perf_counter() - t_import
    torch.set_num_threads(1)
    overrides = [f"train.steps={args.steps}", f"train.val_every={args.steps}", f"train.batch_size={args.batch_size}",
                 f"model.name={args.model}", "strategy=scratch", "data.augment=off", "logger=none",
                 f"trainer.accelerator={args.device}", f"trainer.precision={precision}", "trainer.threads=1"]
    if args.image_size:
        overrides.append(f"data.image_size={args.image_size}")
    if args.n_train:
        overrides.append(f"data.n_train={args.n_train}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = load(RunConfig, compose("train", overrides=overrides))
        warm_cfg = load(RunConfig, compose("train", overrides=overrides[2:] + ["train.steps=20", "train.val_every=20"]))
    task = build_task(cfg.data)

    with tempfile.TemporaryDirectory() as tmp:
        # One short warm-up of each (first-call lazy initialisation), not counted.
        harness_run(warm_cfg, 20, Path(tmp) / "warm", args.device)
        plain_run(warm_cfg, task, 20, args.device, precision)
        rows = {"harness": [], "plain": []}
        for r in range(args.repeats):  # interleaved: harness, plain, harness, plain, ...
            rows["harness"].append(harness_run(cfg, args.steps, Path(tmp) / f"h{r}", args.device))
            rows["plain"].append(plain_run(cfg, task, args.steps, args.device, precision))

    med = {k: statistics.median(r["ms_per_step"] for r in v) for k, v in rows.items()}
    setup = statistics.median(r["setup_s"] for r in rows["harness"])
    teardown = statistics.median(r["teardown_s"] for r in rows["harness"])
    print(f"model={args.model} data=digits target task (n_train={len(task.train)}, classes={task.num_classes}, "
          f"{task.in_chans}x{task.image_size}x{task.image_size}) batch={min(args.batch_size, len(task.train))} "
          f"steps={args.steps} augment=off threads={torch.get_num_threads()} repeats={args.repeats} "
          f"torch={torch.__version__} python={sys.version.split()[0]}")
    device_name = torch.cuda.get_device_name() if args.device == "gpu" else "cpu"
    print(f"device={device_name} precision={precision} channels_last={args.device == 'gpu'}")
    print(f"(cold import of torch+lightning+timm+harness: {import_s:.1f} s, excluded)")
    print()
    print(f"{'loop':<10}{'ms/step (median)':>18}{'all repeats':>28}{'final val_acc':>16}")
    for name, v in rows.items():
        reps = ", ".join(f"{r['ms_per_step']:.2f}" for r in v)
        print(f"{name:<10}{med[name]:>18.2f}{reps:>28}{v[-1]['val_acc']:>16.3f}")
    print()
    pairs = [h["ms_per_step"] / p["ms_per_step"] for h, p in zip(rows["harness"], rows["plain"])]
    print(f"ratio harness/plain: {med['harness'] / med['plain']:.2f}x of medians "
          f"(overhead {med['harness'] - med['plain']:+.2f} ms/step); "
          f"per interleaved pair: {', '.join(f'{r:.2f}' for r in pairs)} -> median {statistics.median(pairs):.2f}x")
    print("(pairs run back to back, so their ratio is the robust figure when other load on the machine varies)")
    flops_per_step = rows["harness"][0]["flops_per_step"]
    achieved = {k: flops_per_step / (med[k] / 1e3) / 1e12 for k in med}
    print(f"training FLOPs per step (torch.utils.flop_counter, fwd+bwd): {flops_per_step:.3e}; achieved "
          + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in achieved.items())
          + (f"; model FLOP utilisation against {args.peak_tflops:.0f} TFLOP/s: "
             + ", ".join(f"{k} {100 * v / args.peak_tflops:.2f}%" for k, v in achieved.items()) if args.peak_tflops else ""))
    if args.device == "gpu":
        print(f"peak device memory of a harness run: {rows['harness'][0]['peak_mem_bytes'] / 2**20:.0f} MiB")
    print()
    print("fixed cost per run_training call (median):")
    print(f"  enter run_training -> first optimizer step : {setup * 1e3:8.1f} ms "
          f"(config checks, data, model, FLOP counting, Trainer)")
    print(f"  last optimizer step -> result returned    : {teardown * 1e3:8.1f} ms "
          f"(final validation, result; no test split)")
    print(f"  per-run setup+teardown in plain-loop steps: {(setup + teardown) * 1e3 / med['plain']:8.0f} steps")


if __name__ == "__main__":
    main()

"""Fused members against separate runs (issue 23, item 2): K re-runs of one configuration of the
default model on the default data, trained one at a time (harness.training.run.run_training, as
before) and as one stacked model (harness.training.fused.train_members), side by side in one
process, alternating which goes first. Prints the wall time per member and the speed-up; not a test.

    python benchmarks/bench_fused.py                          # batch 32 and 64, K = 2, 3, 4, 8
    python benchmarks/bench_fused.py --batch 16 32 64 --members 3 --channels-last false true

Everything else is the default train config (300 steps, validation every 50, augmentation light as
the recipes use, one CPU thread); data.n_train sets the training subset each member draws.
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

from hydra import compose, initialize_config_dir  # noqa: E402

import harness.cli  # noqa: E402
from harness.settings import config  # noqa: E402
from harness.settings.schema import RunConfig  # noqa: E402
from harness.training.fused import train_members  # noqa: E402
from harness.training.run import run_training  # noqa: E402
from harness.tuning.replicates import replicate  # noqa: E402


def replicates(batch: int, k: int, steps: int, n_train: int, augment: str, channels_last: str) -> list[RunConfig]:
    overrides = ["logger=none", f"train.batch_size={batch}", f"train.steps={steps}", f"data.n_train={n_train}",
                 f"data.augment={augment}", f"trainer.channels_last={channels_last}"]
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        cfg = config.load(RunConfig, compose(config_name="train", overrides=overrides))
    return [replicate(cfg, r) for r in range(1, k + 1)]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(arms: dict[str, list[RunConfig]], root: Path, repeats: int) -> dict[str, float]:
    """Median wall per member of each arm ("separate/<cl>" or "fused/<cl>"), over `repeats` rounds
    that run every arm once, in an order rotated each round, after one round not counted (the
    data pool's first load, first calls)."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(repeats + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            cfgs = arms[name]
            dirs = [root / f"{name.replace('/', '-')}-{i}-{j}" for j in range(len(cfgs))]
            if name.startswith("fused"):
                wall = timed(lambda: train_members(cfgs, dirs))
            else:
                wall = timed(lambda: [run_training(c, d) for c, d in zip(cfgs, dirs)])
            if i > 0:
                times[name].append(wall / len(cfgs))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="*", default=[32, 64])
    p.add_argument("--members", type=int, nargs="*", default=[2, 3, 4, 8])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--augment", default="light")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--channels-last", nargs="*", default=["auto"],
                   help="trainer.channels_last values, each measured both ways (auto: on a GPU only)")
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 thread per process; steps {args.steps}, "
          f"n_train {args.n_train}, augment {args.augment}, median of {args.repeats} rounds, arms interleaved")
    base = f"separate/{args.channels_last[0]}"
    print(f"{'batch':>5} {'K':>3} {'arm (way/channels_last)':>24} {'s/member':>9} {'speed-up vs ' + base:>22}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            for k in args.members:
                arms = {f"{way}/{cl}": replicates(batch, k, args.steps, args.n_train, args.augment, cl)
                        for cl in args.channels_last for way in ("separate", "fused")}
                median = measure(arms, Path(tmp) / f"b{batch}k{k}", args.repeats)
                for name, wall in median.items():
                    print(f"{batch:>5} {k:>3} {name:>24} {wall:>9.2f} {median[base] / wall:>21.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

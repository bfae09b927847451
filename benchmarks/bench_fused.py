"""Fused members against separate runs (issue 23, item 2): K re-runs of one configuration of the
default model on the default data, trained one at a time (harness.training.run.run_training, as
before) and as one stacked model (harness.training.fused.train_members), side by side in one
process, alternating which goes first. Prints the wall time per member and the speed-up; not a test.

    python benchmarks/bench_fused.py                          # batch 32 and 64, K = 2, 3, 4, 8
    python benchmarks/bench_fused.py --batch 32 --members 3 --steps 300 --repeats 3

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
from harness.settings.schema import RunConfig, replace_path  # noqa: E402
from harness.training.fused import train_members  # noqa: E402
from harness.training.run import run_training  # noqa: E402
from harness.tuning.replicates import replicate_overrides  # noqa: E402


def replicates(batch: int, k: int, steps: int, n_train: int, augment: str) -> list[RunConfig]:
    overrides = ["logger=none", f"train.batch_size={batch}", f"train.steps={steps}", f"data.n_train={n_train}",
                 f"data.augment={augment}"]
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        cfg = config.load(RunConfig, compose(config_name="train", overrides=overrides))
    out = []
    for r in range(1, k + 1):
        c = cfg
        for key, value in replicate_overrides(r, cfg.seed).items():
            c = replace_path(c, key, value)
        out.append(c)
    return out


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(cfgs: list[RunConfig], root: Path, repeats: int) -> tuple[float, float]:
    """Median wall per member, separate and fused, over `repeats` alternating pairs."""
    apart, fused = [], []
    for i in range(repeats):
        def one_by_one() -> None:
            for j, c in enumerate(cfgs):
                run_training(c, root / f"a{i}-{j}")

        def together() -> None:
            train_members(cfgs, [root / f"f{i}-{j}" for j in range(len(cfgs))])

        pair = [(apart, one_by_one), (fused, together)]
        for bucket, fn in (pair if i % 2 == 0 else pair[::-1]):
            bucket.append(timed(fn) / len(cfgs))
    return statistics.median(apart), statistics.median(fused)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="*", default=[32, 64])
    p.add_argument("--members", type=int, nargs="*", default=[2, 3, 4, 8])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--augment", default="light")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 thread per process; steps {args.steps}, "
          f"n_train {args.n_train}, augment {args.augment}, median of {args.repeats} alternating pairs")
    print(f"{'batch':>5} {'K':>3} {'separate s/member':>18} {'fused s/member':>15} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch:
            for k in args.members:
                cfgs = replicates(batch, k, args.steps, args.n_train, args.augment)
                apart, fused = measure(cfgs, Path(tmp) / f"b{batch}k{k}", args.repeats)
                print(f"{batch:>5} {k:>3} {apart:>18.2f} {fused:>15.2f} {apart / fused:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

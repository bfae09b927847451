"""Pruning vs no pruning: the compute needed to reach the best validation accuracy found.

For each TPE seed, one cell (digits, a strategy, an n_train, the strategy's default search space)
is tuned twice into SQLite storages of their own:

1. `pruner=none` with `--trials` trials: its best validation accuracy B and the cumulative FLOPs
   and wall seconds (sum of the trials' `flops` / `wall_s`, in trial order) until B was first
   reached;
2. the pruner under test on an equal compute budget (`tune.max_flops` = everything run 1 spent):
   the cumulative FLOPs and wall seconds until a COMPLETE trial first reaches B - 0.5 points.

The ratio (1) / (2) is the saving the target speaks of. Its tolerance is one-sided (the run without
pruning must reach B itself), so a second ratio is printed with the same target B - 0.5 points for
both runs: when an early trial (the recipe, say) comes within 0.5 points, only that one shows
whether pruning saved anything. One seed's ratio depends on when TPE happens to hit a good
configuration, so several seeds are run (in parallel processes, one torch thread each) and the
geometric mean and the spread are printed. The default cell is chosen not to saturate: digits
n_train=40 with 400 validation images (one image = 0.25 points), so "within 0.5 points" is a real
tolerance, not "both hit 100%".

Figures, not a pass/fail test. 9-15 minutes on 2 cores with the defaults:

    python benchmarks/bench_pruning.py
    python benchmarks/bench_pruning.py --pruner median --seeds 0 1 --trials 20
    python benchmarks/bench_pruning.py --pruner-override pruner.min_resource=100 --dir /tmp/bp

The same --dir again reads finished storages back instead of re-running them. For the expected
saving over many search orders (and the bound no pruner can beat), see bench_pruning_replay.py.
Validation only: the best is not re-run (`tune_cell(..., rerun=False)`), so the test split the
reports use is never read (the held-out accuracy of the selected configuration is the replay's).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing as mp
import os
import re
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TOLERANCE = 0.005  # 0.5 points of accuracy


def compose_cell(args: argparse.Namespace, seed: int, pruner: str, overrides: list[str], db: Path):
    from hydra import compose, initialize_config_dir

    import harness.cli

    from harness.settings.config import load
    from harness.settings.schema import CellConfig

    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return load(CellConfig, compose(config_name="tune", overrides=[
            f"strategy={args.strategy}", "data=digits", f"data.n_train={args.n_train}", f"data.n_val={args.n_val}",
            f"tune.sampler_seed={seed}", "study.seeds=1", "logger=none", "tune.progress=false",
            "trainer.threads=1", f"storage.url=sqlite:///{db}", f"pretrain.cache_dir={db.parent}/pretrained",
            f"pruner={pruner}", *overrides]))


def tune_one(args: argparse.Namespace, seed: int, pruner: str, overrides: list[str], db: Path) -> dict:
    """Tune (or read back) one cell in this process; returns plain figures, trial by trial."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    from optuna.trial import TrialState

    from harness.store.records import num, trial_records
    from harness.tuning.tune import tune_cell

    reused = db.exists()
    cfg = compose_cell(args, seed, pruner, overrides, db)
    started = time.perf_counter()
    study = tune_cell(cfg, db.parent / f"runs-{db.stem}", rerun=False)
    trials = sorted(trial_records(study.get_trials(deepcopy=False)), key=lambda t: t.number)
    return {
        "db": str(db), "elapsed": None if reused else time.perf_counter() - started,
        "trials": [{"number": t.number, "state": t.state.name,
                    "value": t.value if t.state == TrialState.COMPLETE else None,
                    "flops": t.spent_flops, "wall": t.spent_wall_s,
                    "steps": int(num(t.steps, 0))} for t in trials],
    }


def cost_to_reach(trials: list[dict], target: float) -> tuple[float, float, int] | None:
    """Cumulative FLOPs and wall seconds, in trial order, until a COMPLETE trial reaches target."""
    flops = wall = 0.0
    for t in trials:
        flops += t["flops"]
        wall += t["wall"]
        if t["value"] is not None and t["value"] >= target - 1e-9:
            return flops, wall, t["number"]
    return None


def best(run: dict) -> float:
    return max((t["value"] for t in run["trials"] if t["value"] is not None), default=math.nan)


def counts(run: dict) -> str:
    states = [t["state"] for t in run["trials"]]
    return "/".join(str(states.count(s)) for s in ("COMPLETE", "PRUNED", "FAIL"))


def geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="scratch")
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--trials", type=int, default=30, help="trials of the run without pruning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="TPE seeds (tune.sampler_seed)")
    parser.add_argument("--pruner", default="hyperband", help="the pruner compared with pruner=none")
    parser.add_argument("--pruner-override", action="append", default=[], help="e.g. pruner.min_resource=100")
    parser.add_argument("--override", action="append", default=[], help="applied to both runs, e.g. train.val_every=25")
    parser.add_argument("--jobs", type=int, default=2, help="processes in parallel (one torch thread each)")
    parser.add_argument("--dir", default=None, help="where the storages go (default: a new temporary folder)")
    args = parser.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-pruning-"))
    root.mkdir(parents=True, exist_ok=True)
    cell = f"{args.strategy}-n{args.n_train}-v{args.n_val}-t{args.trials}" + "".join(
        "-" + re.sub(r"[^\w.-]+", "_", o) for o in args.override)
    tag = re.sub(r"[^\w.-]+", "_", "_".join([args.pruner, *args.pruner_override]))
    if len(cell) > 120:  # file names stop at 255 bytes: keep the start readable, the rest as a hash
        cell = f"{cell[:100]}-{hashlib.sha1(cell.encode()).hexdigest()[:10]}"
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        unpruned = {s: pool.submit(tune_one, args, s, "none", [*args.override, f"tune.n_trials={args.trials}"], root / f"{cell}-none-s{s}.db")
                    for s in args.seeds}
        pruned = {}
        for s, future in unpruned.items():  # each pruned run's FLOPs budget is what its twin spent
            spent = sum(t["flops"] for t in future.result()["trials"])
            overrides = [*args.override, *args.pruner_override, f"tune.max_flops={spent:.6e}",
                         f"tune.n_trials={10 * args.trials}"]
            pruned[s] = pool.submit(tune_one, args, s, args.pruner, overrides, root / f"{cell}-{tag}-s{s}.db")
        runs = {s: (unpruned[s].result(), pruned[s].result()) for s in args.seeds}

    label = f"{args.pruner} {' '.join(args.pruner_override)}".strip()
    print(f"\ncell: digits {args.strategy} n_train={args.n_train} n_val={args.n_val}, default search space "
          f"{' '.join(args.override)}; none: {args.trials} trials; {label}: same FLOPs budget")
    print(f"storages in {root}; {time.perf_counter() - started:.0f} s\n")
    header = (f"{'seed':>4} {'none best':>9} {'c/p/f':>8} {'FLOPs to best':>13} {'wall':>7} | "
              f"{'pruned best':>11} {'c/p/f':>8} {'FLOPs to B-0.5':>14} {'wall':>7} | {'FLOPs x':>7} {'wall x':>6} | "
              f"{'none to B-0.5':>13} {'same-target x':>13}")
    print(header)
    flops_ratios, wall_ratios, same_target_ratios, missed = [], [], [], []
    for s, (none, prn) in runs.items():
        b = best(none)
        n_cost = cost_to_reach(none["trials"], b)
        n_cost_tolerant = cost_to_reach(none["trials"], b - TOLERANCE)
        p_cost = cost_to_reach(prn["trials"], b - TOLERANCE)
        if p_cost:
            flops_ratios.append(n_cost[0] / p_cost[0])
            wall_ratios.append(n_cost[1] / p_cost[1])
            same_target_ratios.append(n_cost_tolerant[0] / p_cost[0])
        else:
            missed.append(s)
        fr, wr = (f"{n_cost[0] / p_cost[0]:.2f}", f"{n_cost[1] / p_cost[1]:.2f}") if p_cost else ("never", "-")
        sr = f"{n_cost_tolerant[0] / p_cost[0]:.2f}" if p_cost else "-"
        p_flops, p_wall = (f"{p_cost[0]:.3e}", f"{p_cost[1]:.1f}") if p_cost else ("never", "-")
        print(f"{s:>4} {b:>9.4f} {counts(none):>8} {n_cost[0]:>13.3e} {n_cost[1]:>7.1f} | "
              f"{best(prn):>11.4f} {counts(prn):>8} {p_flops:>14} {p_wall:>7} | {fr:>7} {wr:>6} | "
              f"{n_cost_tolerant[0]:>13.3e} {sr:>13}")
    print()
    if flops_ratios:
        print(f"none / {args.pruner}, compute to reach the no-pruning best within 0.5 points, over "
              f"{len(flops_ratios)} of {len(runs)} seeds: FLOPs geometric mean {geomean(flops_ratios):.2f}x "
              f"(min {min(flops_ratios):.2f}x, max {max(flops_ratios):.2f}x), wall {geomean(wall_ratios):.2f}x")
        print(f"same target B - 0.5 points for both runs: FLOPs geometric mean {geomean(same_target_ratios):.2f}x "
              f"(min {min(same_target_ratios):.2f}x, max {max(same_target_ratios):.2f}x)")
    if missed:
        print(f"seeds where {args.pruner} never came within 0.5 points on the equal budget: {missed}")
    gaps = [100 * (best(p) - best(n)) for n, p in runs.values()]
    print(f"best val_acc {args.pruner} - none on the equal budget: {', '.join(f'{g:+.2f}' for g in gaps)} points "
          f"(target: >= 3x less compute within 0.5 points)")


if __name__ == "__main__":
    main()

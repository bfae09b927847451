"""Throughput of one cell's tuning with 1 worker process vs 2, on the default SQLite storage.

Each worker is a process of its own (one torch thread, as `trainer.threads=1` sets) running
`harness.tuning.tune.tune_cell` on the same cell, so the two share the study, its budget and its lock.
The best is not re-run (`rerun=False`): nothing here reads the test split the reports use.
Workers import everything first and start together at a barrier; throughput is read from the
storage (first trial start to last trial end), so imports and the final re-run do not count.

    python benchmarks/bench_workers.py            # N = 50 trials per worker
    python benchmarks/bench_workers.py --n 20 --steps 20
    python benchmarks/bench_workers.py --accelerator gpu --workers 1 4 8   # several workers sharing one GPU

Prints trials/minute for each worker count (1 and 2 by default), the ratios to the first, and the
storage errors seen (failed trials, worker crashes, "database is locked"), which should be none. Not a pass/fail test: on a
machine with fewer than 2 free cores the ratio falls below 2 for lack of CPU, not of the storage;
"cores busy" (the workers' CPU seconds over the wall time, after the barrier) and the load average
show how much CPU the workers actually got.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cell_config(tmp: Path, name: str, n_trials: int, steps: int, accelerator: str):
    import dataclasses

    from hydra import compose, initialize_config_dir

    from harness.cli import CONFIG_DIR
    from harness.settings.config import load
    from harness.settings.schema import CellConfig
    from harness.settings.schema import SearchSpaceConfig

    overrides = [
        f"storage.url=sqlite:///{tmp}/bench.db", f"study.name={name}", f"tune.n_trials={n_trials}",
        "study.seeds=1", "tune.progress=false", "logger=none", "pruner=none", f"trainer.accelerator={accelerator}",
        "trainer.threads=1", "data.n_train=20", "data.n_val=50", "data.n_test=50", f"train.steps={steps}",
        f"train.val_every={steps}", "train.batch_size=16", f"pretrain.cache_dir={tmp}/pretrained",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = load(CellConfig, compose(config_name="tune", overrides=overrides))
    # Every trial costs the same: only the learning rate is tuned (batch size and steps are fixed).
    lr = {"key": "train.lr", "type": "float", "low": 1e-3, "high": 1e-2, "log": True}
    return dataclasses.replace(cfg, search_space=SearchSpaceConfig(params={"lr": lr}),
                               tune=dataclasses.replace(cfg.tune, enqueue_recipe=False))


def worker(cfg, run_root: str, barrier, errors, cpu) -> None:
    os.environ["WANDB_MODE"] = "disabled"
    try:
        import torch

        from harness.tuning.tune import tune_cell

        torch.set_num_threads(1)
        barrier.wait()
        started = time.process_time()  # this process's CPU seconds, every thread
        tune_cell(cfg, Path(run_root), rerun=False)  # no re-run of the best: no test split read
        cpu.put(time.process_time() - started)
    except BaseException:  # noqa: BLE001 - reported to the parent
        errors.put(traceback.format_exc())
        raise


def run(tmp: Path, workers: int, n_per_worker: int, steps: int, accelerator: str) -> dict:
    import optuna
    from optuna.trial import TrialState

    from harness.store.records import CellId, trial_records

    name = f"bench-{workers}w"
    cfg = cell_config(tmp, name, workers * n_per_worker, steps, accelerator)
    ctx = mp.get_context("spawn")
    barrier, errors, cpu = ctx.Barrier(workers + 1), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(cfg, str(tmp / f"{name}-{i}"), barrier, errors, cpu))
             for i in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()  # every worker has imported torch, Lightning, Optuna...
    started = time.perf_counter()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    cpu_s = sum(cpu.get() for p in procs if p.exitcode == 0)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    problems += [f"worker exit code {p.exitcode}" for p in procs if p.exitcode]

    study = optuna.load_study(study_name=CellId(name, "scratch", 20).name, storage=f"sqlite:///{tmp}/bench.db")
    trials = trial_records(study.get_trials(deepcopy=False))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    problems += [f"trial {t.number} {t.state.name}: {t.fail_reason}" for t in trials
                 if t.state != TrialState.COMPLETE]
    window = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    per_trial = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return {"workers": workers, "trials": len(done), "window_s": window, "wall_s": wall,
            "per_minute": 60.0 * len(done) / window, "median_trial_s": per_trial[len(per_trial) // 2],
            "cores_used": cpu_s / wall, "load": os.getloadavg()[0], "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="trials per worker")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per trial")
    parser.add_argument("--dir", type=Path, default=None, help="keep the storage here (default: a temp folder, removed)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare with the first")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="gpu: every worker on the one visible GPU")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="bench-workers-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"storage sqlite:///{tmp}/bench.db, {args.n} trials per worker, {args.steps} steps per trial, "
          f"{os.cpu_count()} CPUs, accelerator={args.accelerator}", flush=True)
    results = []
    for workers in args.workers:
        r = run(tmp, workers, args.n, args.steps, args.accelerator)
        results.append(r)
        print(f"{r['workers']} worker(s): {r['trials']} trials in {r['window_s']:.1f} s -> "
              f"{r['per_minute']:.1f} trials/min (median trial {r['median_trial_s']:.2f} s, wall {r['wall_s']:.1f} s, "
              f"{r['cores_used']:.2f} cores busy, load average {r['load']:.1f}), storage errors: {len(r['problems'])}",
              flush=True)
        for problem in r["problems"][:5]:
            print("   ", problem.strip().splitlines()[-1])
    for r in results[1:]:
        ratio = r["per_minute"] / results[0]["per_minute"]
        print(f"speed-up {r['workers']} vs {results[0]['workers']} worker(s): {ratio:.2f}x"
              + (" (target >= 1.7x for 2 vs 1 with one torch thread per worker)" if r["workers"] == 2 else ""))
    if args.dir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

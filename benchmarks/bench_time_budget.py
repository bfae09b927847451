"""Where a study's wall time goes (issue 23, item 1): start-up, pretraining, trials (inside the
training function and around it), re-runs, report, and what is left (waiting, storage, the
orchestration), against a lower bound: the study's training FLOPs at the plain-PyTorch-loop rate
of the same model and batch sizes on this machine.

    python benchmarks/bench_time_budget.py --dir /tmp/tb                       # run the default study, then decompose
    python benchmarks/bench_time_budget.py --dir /tmp/tb --overrides 'study.n_train=[20,80]'
    python benchmarks/bench_time_budget.py --storage sqlite:///b.db --study rep_b --wall 611 --workers 2  # decompose a finished one

Accounting, in worker-seconds (wall x workers; the workers run side by side):
- start-up: a fresh interpreter importing the entry point (timed here, once per worker);
- pretraining: its wall time from the cache's meta.json (0 when the cache was warm);
- trials: Optuna's start-to-complete time of every finished trial (1/K of it for trials trained
  together as K members, which share one stretch); of it, "inside run_training" is the run's own
  wall clock (trial attr wall_s; a member's share), the rest is the trial's set-up around it
  (sampling, config, storage writes, the pruner; for fused members also the compute of a member
  its pruner stopped, which stays in the stacked model until the group ends);
- re-runs: the wall clock each replicate recorded (training, test evaluation, the probe);
- report: harness-report on the finished storage, timed here;
- other: worker-seconds minus the above (waiting for other workers and locks, storage reads, the
  study's own decisions).
The lower bound times the plain loop of benchmarks/bench_train_step.py (one thread, augmentation
off, no validation) for each batch size the study trained, and divides every run's training FLOPs
by that rate: the time the study's arithmetic takes at that loop's speed. Prints a table; not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
HERE = Path(__file__).resolve().parent


def _console(name: str) -> list[str]:
    here = Path(sys.executable).with_name(name)
    return [str(here)] if here.exists() else [shutil.which(name) or name]


def start_up_s() -> float:
    """A fresh interpreter importing harness-study's module (torch, Lightning, timm, Optuna, Hydra)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import harness.cli.study, harness.study.orchestrator, harness.training.run, "
                    "harness.tuning.tune"], check=True)
    return time.perf_counter() - started


def run_study(root: Path, overrides: list[str]) -> tuple[float, str, str]:
    url, name = f"sqlite:///{root / 'study.db'}", "budget"
    cmd = _console("harness-study") + [f"study.name={name}", f"storage.url={url}", f"report.dir={root / 'report'}",
                                       *overrides]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=root, check=True)
    return time.perf_counter() - started, url, name


def report_s(root: Path, url: str, name: str) -> float:
    started = time.perf_counter()
    subprocess.run(_console("harness-report") + [f"study.name={name}", f"storage.url={url}",
                                                 f"report.dir={root / 'report-again'}"], cwd=root, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def collect(url: str, name: str) -> dict:
    """Per-run times and FLOPs from the storage (the study's tuning runs only)."""
    import optuna

    from harness.store.records import TuningRunRecord

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(url)
    out = {"trial_s": 0.0, "trial_inside_s": 0.0, "rerun_s": 0.0, "trials": 0, "reruns": 0,
           "flops_by_batch": defaultdict(float), "flops": 0.0}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        record = TuningRunRecord.of(study)
        if record.attrs.get("study") != name:
            continue
        n_train = int(record.attrs.get("n_train", 0))
        for t in study.trials:
            if t.datetime_complete is None or t.datetime_start is None:
                continue
            out["trials"] += 1
            # trials trained together (harness/tuning/together.py) share one stretch of a worker's time
            out["trial_s"] += (t.datetime_complete - t.datetime_start).total_seconds() / max(1, int(t.user_attrs.get("members") or 1))
            out["trial_inside_s"] += float(t.user_attrs.get("wall_s") or 0.0)
            flops = float(t.user_attrs.get("train_flops") or t.user_attrs.get("flops") or 0.0)
            batch = min(int(t.params.get("batch_size", 32)), n_train or 10**9)
            out["flops_by_batch"][batch] += flops
            out["flops"] += float(t.user_attrs.get("flops") or 0.0)
        best = record.attrs.get("best_params") or {}
        for r in record.final:
            out["reruns"] += 1
            out["rerun_s"] += r.wall_s
            out["flops_by_batch"][min(int(best.get("batch_size", 32)), n_train or 10**9)] += r.flops
            out["flops"] += r.flops
    return out


def plain_rates(batches: list[int], steps: int = 60) -> dict[int, float]:
    """FLOP/s of benchmarks/bench_train_step.py's plain loop at each batch size (tiny CNN, digits)."""
    spec = importlib.util.spec_from_file_location("bench_train_step", HERE / "bench_train_step.py")
    bts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bts)
    import torch
    from hydra import compose, initialize_config_dir

    from harness.cli import CONFIG_DIR
    from harness.data.task import build_task
    from harness.settings.config import load
    from harness.settings.schema import RunConfig

    torch.set_num_threads(1)
    rates = {}
    for batch in batches:
        overrides = [f"train.steps={steps}", f"train.val_every={steps}", f"train.batch_size={batch}", "strategy=scratch",
                     "data.augment=off", "logger=none", "trainer.threads=1", f"data.n_train={max(batch, 80)}",
                     "data.source=glyphs", "data.source_classes=null", "data.target_classes=null"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = load(RunConfig, compose("train", overrides=overrides))
        task = build_task(cfg.data)
        bts.plain_run(cfg, task, 10, "cpu", "32-true")  # warm-up
        ms = min(bts.plain_run(cfg, task, steps, "cpu", "32-true")["ms_per_step"] for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            flops = bts.harness_run(cfg, steps, Path(tmp), "cpu")["flops_per_step"]
        rates[batch] = flops / (ms / 1e3)
    return rates


def pretrain_s(root: Path | None) -> float:
    if root is None:
        return 0.0
    metas = list(root.rglob("pretrained/*/meta.json"))
    return sum(float(json.loads(m.read_text()).get("wall_s") or 0.0) for m in metas)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, help="run the study here (fresh: the pretraining is timed too)")
    p.add_argument("--overrides", nargs="*", default=[])
    p.add_argument("--storage", help="decompose a finished study instead (with --study, --wall, --workers)")
    p.add_argument("--study")
    p.add_argument("--wall", type=float)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if args.storage:
        if not (args.study and args.wall):
            p.error("--storage needs --study NAME and --wall SECONDS (the study's measured wall time)")
        url, name, wall, root, rep_s = args.storage, args.study, args.wall, None, None
    else:
        if args.dir is None:
            p.error("give --dir (run a study) or --storage (decompose a finished one)")
        root = args.dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if (root / "study.db").exists():
            p.error(f"{root}/study.db exists: give an empty --dir")
        wall, url, name = run_study(root, args.overrides)
        rep_s = report_s(root, url, name)
    boot = start_up_s()
    data = collect(url, name)
    rates = plain_rates(sorted(data["flops_by_batch"]))
    bound = sum(f / rates[b] for b, f in data["flops_by_batch"].items())
    worker_s = wall * args.workers
    rows = [("start-up (imports, per worker)", boot * args.workers),
            ("pretraining", pretrain_s(root)),
            ("trials: inside run_training", data["trial_inside_s"]),
            ("trials: set-up around the run", data["trial_s"] - data["trial_inside_s"]),
            ("re-runs (training, test, probe)", data["rerun_s"]),
            ("report (harness-report, timed apart)", rep_s or 0.0)]
    other = worker_s - sum(v for _, v in rows)  # the study builds its report inside its wall, as timed apart here
    rows.append(("other: waiting, storage, orchestration", other))
    print(f"study {name}: wall {wall:.0f} s x {args.workers} workers = {worker_s:.0f} worker-s; "
          f"{data['trials']} trials, {data['reruns']} re-runs, {data['flops']:.3e} FLOPs")
    print()
    print("| component | worker-s | share |")
    print("|---|---|---|")
    for label, v in rows:
        print(f"| {label} | {v:.0f} | {v / worker_s:.0%} |")
    print()
    print("plain-loop rate (tiny CNN, one thread, no augmentation or validation): "
          + ", ".join(f"batch {b}: {r / 1e9:.1f} GFLOP/s" for b, r in sorted(rates.items())))
    print(f"lower bound: the study's training FLOPs at those rates = {bound:.0f} worker-s "
          f"({bound / args.workers:.0f} s of wall on {args.workers} workers); measured / bound = {worker_s / bound:.2f}x; "
          f"time inside training runs (trials + re-runs) {data['trial_inside_s'] + data['rerun_s']:.0f} worker-s = "
          f"{(data['trial_inside_s'] + data['rerun_s']) / worker_s:.0%} of the worker time")


if __name__ == "__main__":
    main()

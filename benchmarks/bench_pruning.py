"""Pruning vs no pruning on one default-ish cell: how much compute does the pruner save, and at
what cost in best-found validation accuracy?

Runs the same cell (digits, strategy=scratch, n_train=80, the default search space, a fixed TPE
seed) with the same number of trials once per pruner, each into its own SQLite storage in a
temporary folder, then reads the storages back and prints:

- best validation accuracy found (over COMPLETE trials) and the re-run test accuracy of that best,
- total FLOPs (sum of the trials' `flops` user attr) and total wall time (sum of `wall_s`),
- FLOPs and wall time spent until the best accuracy was first reached (cumulative, trial order),
- the same to first reach a common target (the lower of the two bests, minus 0.5 points),
- ratios none / <pruner>.

Figures, not a pass/fail test. Example (about 6-8 minutes on one CPU core):

    python benchmarks/bench_pruning.py --trials 24 --steps-low 100 --steps-high 600
    python benchmarks/bench_pruning.py --pruner hyperband --pruner-override pruner.min_resource=100
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import optuna  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import harness.cli  # noqa: E402
from harness.tuning import tune_cell  # noqa: E402


def compose_cell(args, pruner: str, overrides: list[str], db: Path) -> object:
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return compose(config_name="tune", overrides=[
            "strategy=scratch", "data=digits", f"data.n_train={args.n_train}",
            f"search_space.params.steps.low={args.steps_low}", f"search_space.params.steps.high={args.steps_high}",
            f"tune.n_trials={args.trials}", f"tune.sampler_seed={args.sampler_seed}", "study.seeds=1",
            "logger=none", "tune.progress=false", f"storage.url=sqlite:///{db}", f"pruner={pruner}", *overrides])


def cost_to_reach(trials: list[optuna.trial.FrozenTrial], target: float) -> tuple[float, float, int] | None:
    """Cumulative FLOPs and wall seconds (in trial order) until a COMPLETE trial reaches target."""
    flops = wall = 0.0
    for t in trials:
        flops += float(t.user_attrs.get("flops", 0.0))
        wall += float(t.user_attrs.get("wall_s", 0.0))
        if t.state == TrialState.COMPLETE and t.value is not None and t.value >= target - 1e-12:
            return flops, wall, t.number
    return None


def summarise(study: optuna.Study, elapsed: float) -> dict:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(t.value for t in complete)
    final = study.user_attrs.get("final") or []
    return {
        "trials": trials, "best": best, "elapsed": elapsed,
        "flops": sum(float(t.user_attrs.get("flops", 0.0)) for t in trials),
        "wall": sum(float(t.user_attrs.get("wall_s", 0.0)) for t in trials),
        "steps": sum(int(t.user_attrs.get("steps", 0)) for t in trials),
        "n": {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
        "to_best": cost_to_reach(trials, best),
        "test": final[0]["test_acc"] if final else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--steps-low", type=int, default=100)
    parser.add_argument("--steps-high", type=int, default=600)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--pruner", default="hyperband", help="the pruner compared with pruner=none")
    parser.add_argument("--pruner-override", action="append", default=[], help="e.g. pruner.min_resource=100")
    parser.add_argument("--dir", default=None, help="where the storages go (default: a new temporary folder)")
    args = parser.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-pruning-"))
    # Warm-up (lazy imports, first-call costs) so that neither measured cell pays for it.
    warm = compose_cell(args, "none", ["tune.n_trials=1", "tune.enqueue_recipe=false", "train.steps=10",
                                       "~search_space.params.steps"], root / "warmup.db")
    (root / "warmup.db").unlink(missing_ok=True)
    tune_cell(warm, root / "runs-warmup")
    runs = {}
    tag = re.sub(r"[^\w.-]+", "_", "_".join([args.pruner, *args.pruner_override]))
    for name, pruner, overrides in ((args.pruner, args.pruner, args.pruner_override), ("none", "none", [])):
        # Same --dir again: a cell whose storage is already complete is read back, not re-run.
        db = root / f"{tag if name != 'none' else 'none'}-t{args.trials}-s{args.steps_low}-{args.steps_high}.db"
        reused = db.exists()
        cfg = compose_cell(args, pruner, overrides, db)
        started = time.perf_counter()
        study = tune_cell(cfg, root / f"runs-{db.stem}")
        runs[name] = summarise(study, None if reused else time.perf_counter() - started)
        print(f"[{name}] {len(runs[name]['trials'])} trials {'read back from' if reused else 'run into'} {db}", flush=True)

    p, n = runs[args.pruner], runs["none"]
    target = min(p["best"], n["best"]) - 0.005
    for r in runs.values():
        r["to_target"] = cost_to_reach(r["trials"], target)

    label = f"{args.pruner} {' '.join(args.pruner_override)}".strip()
    print()
    print(f"cell: digits scratch n_train={args.n_train}, default search space, steps {args.steps_low}-{args.steps_high}, "
          f"{args.trials} trials, sampler_seed={args.sampler_seed}")
    print(f"pruner: {label}  vs  none")
    print()

    def cost(c):
        return f"{c[0]:.3e} FLOPs, {c[1]:6.1f} s (trial {c[2]})" if c else "never reached"

    rows = [
        ("trials complete/pruned/failed", lambda r: "/".join(str(r["n"][k]) for k in ("COMPLETE", "PRUNED", "FAIL"))),
        ("best val_acc found", lambda r: f"{r['best']:.4f}"),
        ("re-run test_acc of the best", lambda r: f"{r['test']:.4f}" if r["test"] is not None else "-"),
        ("total optimizer steps", lambda r: f"{r['steps']}"),
        ("total FLOPs (sum of trials)", lambda r: f"{r['flops']:.3e}"),
        ("total wall s (sum of trials)", lambda r: f"{r['wall']:.1f}"),
        ("wall s of the whole cell", lambda r: f"{r['elapsed']:.1f}" if r["elapsed"] is not None else "(read back)"),
        ("cost to first reach own best", lambda r: cost(r["to_best"])),
        (f"cost to first reach {target:.4f}", lambda r: cost(r["to_target"])),
    ]
    cells = [(title, fn(p), fn(n)) for title, fn in rows]
    width = max(len(label), *(len(c[1]) for c in cells)) + 3
    print(f"{'':32}{label:<{width}}none")
    for title, a, b in cells:
        print(f"{title:32}{a:<{width}}{b}")

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    print()
    print(f"none / {args.pruner}: total FLOPs {ratio(n['flops'], p['flops'])}, total wall {ratio(n['wall'], p['wall'])}, "
          f"FLOPs to own best {ratio(n['to_best'][0], p['to_best'][0])}, "
          f"FLOPs to {target:.4f} {ratio(n['to_target'] and n['to_target'][0], p['to_target'] and p['to_target'][0])}")
    print(f"best val_acc {args.pruner} - none: {100 * (p['best'] - n['best']):+.2f} points "
          f"(target: >= 3x less compute within 0.5 points)")


if __name__ == "__main__":
    main()

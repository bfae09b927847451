"""Warm-started tuning against cold starts (issue 23, item 3), on the default study's cells.

Each arm tunes tuning run 0 of every (strategy, size) of the default study, sizes in increasing
order as a study's workers take them (so when a size opens, the smaller ones have finished), one
process per strategy, with its own storage: `cold` as today (the recipes, then TPE's random start),
`warm` with tune.warm_start=true (the recipes, then the winner of the nearest finished smaller
size). Per cell, the reference is the best validation accuracy either arm found there; printed: the
trials and the training FLOPs each arm spent until its best-so-far came within 0.5 points of it
("-" when it never did), and each arm's best.

    python benchmarks/bench_warm_start.py --dir /tmp/ws
    python benchmarks/bench_warm_start.py --dir /tmp/ws --overrides 'study.n_train=[20,80,320]' tune.n_trials=8
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

WITHIN = 0.005  # 0.5 points


def _settings(root: Path, arm: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import harness.cli
    from harness.settings import config
    from harness.settings.schema import StudyAppConfig

    base = [f"storage.url=sqlite:///{root}/{arm}.db", f"pretrain.cache_dir={root}/pretrained", "logger=none",
            "tune.progress=false", f"tune.warm_start={'true' if arm == 'warm' else 'false'}", "study.tunings=1"]
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return config.load(StudyAppConfig, compose(config_name="study", overrides=base + overrides))


def _tune_strategy(root: str, arm: str, strategy: str, overrides: list[str]) -> None:
    """One process: every size of one strategy, smallest first, as the study's workers take them."""
    from harness.study.orchestrator import cell_config
    from harness.tuning.tune import tune_cell

    cfg = _settings(Path(root), arm, overrides)
    for n in sorted(cfg.study.n_train):
        tune_cell(cell_config(cfg, strategy, n, 0), Path(root) / "runs" / arm / f"{strategy}-{n}")


def _trials(root: Path, arm: str) -> dict[tuple[str, int], list[tuple[float | None, float, bool]]]:
    """Per cell: (value or None, training FLOPs, warm-start trial?) of each trial in number order."""
    import optuna

    from harness.store.records import CellId

    storage = f"sqlite:///{root}/{arm}.db"
    out = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        cell = CellId.from_attrs(summary.user_attrs)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[(cell.strategy, cell.n_train)] = [
            (t.value if t.state == optuna.trial.TrialState.COMPLETE else None, float(t.user_attrs.get("train_flops", 0.0)),
             "warm_from" in t.user_attrs) for t in sorted(study.trials, key=lambda t: t.number)]
    return out


def _reach(trials: list[tuple[float | None, float, bool]], target: float) -> tuple[int | None, float | None]:
    best, flops = -1.0, 0.0
    for i, (value, cost, _) in enumerate(trials, 1):
        flops += cost
        if value is not None:
            best = max(best, value)
        if best >= target - WITHIN:
            return i, flops
    return None, None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--overrides", nargs="*", default=[])
    args = p.parse_args()
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    strategies = list(_settings(root, "cold", args.overrides).study.strategies)
    ctx = mp.get_context("spawn")
    for arm in ("cold", "warm"):
        if (root / f"{arm}.done").exists():
            continue
        procs = [ctx.Process(target=_tune_strategy, args=(str(root), arm, s, args.overrides)) for s in strategies]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            print(f"{arm}: a worker failed", file=sys.stderr)
            return 1
        (root / f"{arm}.done").touch()

    cold, warm = _trials(root, "cold"), _trials(root, "warm")
    print(f"{'strategy':>9} {'n':>5} {'best cold':>9} {'best warm':>9} {'trials cold':>11} {'trials warm':>11} "
          f"{'FLOPs cold':>10} {'FLOPs warm':>10} {'warm trials':>11}")
    sums = {"cold": [], "warm": []}
    for key in sorted(cold, key=lambda k: (k[0], k[1])):
        if key not in warm:
            continue
        c, w = cold[key], warm[key]
        best_c = max((v for v, _, _ in c if v is not None), default=float("nan"))
        best_w = max((v for v, _, _ in w if v is not None), default=float("nan"))
        target = max(best_c, best_w)
        (tc, fc), (tw, fw) = _reach(c, target), _reach(w, target)
        sums["cold"].append((tc, fc, best_c))
        sums["warm"].append((tw, fw, best_w))
        show = lambda v, f="{}": "-" if v is None else f.format(v)  # noqa: E731
        print(f"{key[0]:>9} {key[1]:>5} {best_c:>9.3f} {best_w:>9.3f} {show(tc):>11} {show(tw):>11} "
              f"{show(fc, '{:.2e}'):>10} {show(fw, '{:.2e}'):>10} {sum(x for _, _, x in w):>11}")
    both = [i for i, (c, w) in enumerate(zip(sums["cold"], sums["warm"])) if c[0] is not None and w[0] is not None]
    for arm, rows in sums.items():
        reached = [r for r in rows if r[0] is not None]
        print(f"{arm}: within 0.5 points of the cell's best in {len(reached)}/{len(rows)} cells; where both arms "
              f"got there ({len(both)} cells): {sum(rows[i][0] for i in both)} trials, "
              f"{sum(rows[i][1] for i in both):.3e} training FLOPs; mean best {sum(r[2] for r in rows) / max(1, len(rows)):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

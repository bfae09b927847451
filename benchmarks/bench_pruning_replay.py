"""Pruning vs no pruning, replayed: the expected compute to reach the best, over many search orders.

bench_pruning.py tunes a cell for real, so a handful of seeds costs an hour, and one seed's ratio
swings 1x-10x with when the search happens to draw a good configuration. This script separates
the pruner from that luck, as tabular HPO benchmarks do (LCBench, HPOBench):

1. collect (the costly part, once per cell): train C configurations drawn at random from the
   cell's search space (plus its recipe) to the end of their schedules with harness.training.run,
   validating every --grain steps; store each curve and what each step and validation costs.
   Training is seeded and validating does not change it, so a trial pruned at step s would have
   produced exactly the first s steps of its stored curve.
2. replay (seconds): R random search orders, each drawn with replacement from the stored
   configurations (random search over the cell's space, bootstrapped) and shared by both runs.
   Without pruning the search runs --trials trials; with the pruner (harness.tuning.pruning.make_pruner on
   the cell's real config, fed through real Optuna trials as harness.tuning.pruning.PruningCallback feeds
   it) it runs on the same FLOPs budget and each trial stops where the pruner says. Per order:
   FLOPs until the no-pruning run first reaches its best B; FLOPs until the pruned run first
   completes a trial within 0.5 points of B; and, for the same target, until the no-pruning run does.
3. verify: one order run for real by harness.tuning.tune.tune_cell (the order enqueued) beside its
   replay, trial by trial: same pruned/complete states, values and FLOPs, or the replay is wrong.

Never the test split the reports use: runs are trained with evaluate_test=False, and the quality of
the configuration a search selects is read on a held-out split of the benchmark's own (--holdout
examples of the cell's training pool beyond its n_train: disjoint from its training, validation and
test examples), stored per configuration as `holdout_acc`. Curves collected before that hold a
`test_acc` instead, which the replay ignores.

Printed: the ratio of expected costs (mean FLOPs over orders) with a bootstrap interval, the
median and geometric mean per order, how often the pruned search misses B - 0.5 on the equal
budget, and why: the rank correlation of the accuracy at each early validation with the final
one, and the bound no pruner can beat (one that knows every trial's end and stops each loser at
its first validation). The search is random, not TPE: the replay measures the pruner. FLOPs only
(wall time: bench_pruning.py). Figures, not a pass/fail test.

    python benchmarks/bench_pruning_replay.py collect --strategy scratch --n-train 80 --n-val 150 --out curves.json
    python benchmarks/bench_pruning_replay.py replay benchmarks/curves/scratch-n80-v150.json --pruner hyperband
    python benchmarks/bench_pruning_replay.py verify benchmarks/curves/scratch-n80-v150.json --trials 12
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

TOLERANCE = 0.005  # 0.5 points of accuracy
Trial = tuple[float | None, float]  # (value of a COMPLETE trial or None if pruned, FLOPs it spent)


def compose_cell(cell: dict, overrides: list[str] = ()):
    """harness/conf/tune.yaml for the stored cell, as harness-tune composes it."""
    from hydra import compose, initialize_config_dir

    import harness.cli

    from harness.settings.config import load
    from harness.settings.schema import CellConfig

    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return load(CellConfig, compose(config_name="tune", overrides=[
            f"strategy={cell['strategy']}", "data=digits", f"data.n_train={cell['n_train']}", f"data.n_val={cell['n_val']}",
            "logger=none", "tune.progress=false", "trainer.threads=1", f"pretrain.cache_dir={cell['cache']}",
            *cell["overrides"], *overrides]))


# --- collect -------------------------------------------------------------------------------------

def draw_configurations(cfg, count: int, seed: int) -> list[dict]:
    """The recipes, then `count` draws of Optuna's random sampler over the cell's search space."""
    import optuna

    from harness.tuning.search_space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_config(cfg.search_space, base=cfg)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = [space.suggest(study.ask()) for _ in range(count)]
    recipes = [{"recipe": True, "params": r.values} for r in space.recipes_within_space()]
    return recipes + [{"recipe": False, "params": p} for p in drawn]


def holdout_split(cfg, size: int):
    """The benchmark's own held-out examples: up to `size` examples of the cell's training pool that
    follow its n_train (training subsets are nested prefixes of one order), so they are none of the
    cell's training, validation or test examples. Standardised as the cell's data are."""
    import numpy as np

    from harness.settings.schema import replace_path
    from harness.data.task import build_task, split_classes
    from harness.data.pools import LabelledImages, load_pool

    d = cfg.data
    pool = load_pool(d)
    members = int(np.isin(pool.labels, split_classes(d, pool.class_names)[1]).sum())
    left = members - int(d.n_val) - (0 if pool.test is not None else int(d.n_test)) - int(d.n_train)
    if left < 1:
        raise SystemExit("no examples are left in the training pool for a held-out split: lower --n-train or --n-val")
    n_train = int(d.n_train)
    wider = replace_path(cfg, "data.n_train", n_train + min(size, left))
    train = build_task(wider.data).train
    if train.in_memory:
        return LabelledImages(y=train.y[n_train:], x=train.x[n_train:])
    return LabelledImages(y=train.y[n_train:], dataset=train.dataset, indices=train.indices[n_train:])


def train_to_the_end(cell: dict, params: dict) -> dict:
    """One configuration trained to the end of its schedule, validated every cell['grain'] steps,
    then scored on the benchmark's held-out split (never on the test split)."""
    os.environ.setdefault("WANDB_MODE", "disabled")

    from harness.data.task import eval_batches
    from harness.training.module import accuracy
    from harness.training.run import resolve_device, run_training
    from harness.settings.schema import replace_path
    from harness.tuning.search_space import SearchSpace

    cfg = compose_cell(cell)
    run_cfg = replace_path(SearchSpace.from_config(cfg.search_space, base=cfg).apply(cfg, params), "train.val_every",
                           cell["grain"])
    with tempfile.TemporaryDirectory() as run_dir:
        result = run_training(run_cfg, Path(run_dir), evaluate_test=False)
    c = result.compute
    per_sample = c.eval_flops / (len(result.val_history) * cell["n_val"])
    device = resolve_device(run_cfg.trainer)
    held = holdout_split(cfg, int(cell["holdout"]))
    holdout_acc = accuracy(result.model, eval_batches(held, 256, device, 0), device)
    return {"params": params, "steps": c.steps, "curve": result.val_history,
            "phases": [{"start": p["start"], "flops_per_step": p["flops_per_step"]} for p in c.phases],
            "eval_flops_per_validation": per_sample * cell["n_val"], "holdout_acc": holdout_acc}


def collect(cell: dict, configs: int, seed: int, jobs: int) -> dict:
    cfg = compose_cell(cell)
    holdout_split(cfg, int(cell["holdout"]))  # fails now, not in every worker, when the pool is too small
    if cell["strategy"] == "finetune" and str(cfg.strategy.weights) == "source":
        from harness.training.pretrain import ensure_pretrained

        ensure_pretrained(cfg)  # once, before the workers start
    drawn = draw_configurations(cfg, configs, seed)
    if jobs <= 1:
        runs = [train_to_the_end(cell, d["params"]) for d in drawn]
    else:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(train_to_the_end, [cell] * len(drawn), [d["params"] for d in drawn]))
    return {"cell": cell, "runs": [{**r, "recipe": d["recipe"]} for d, r in zip(drawn, runs)]}


# --- replay --------------------------------------------------------------------------------------

class Configuration:
    """One stored configuration: what a trial of it reports, and what it has cost, at any step."""

    def __init__(self, run: dict, val_every: int):
        self.recipe, self.params, self.steps = bool(run["recipe"]), run["params"], int(run["steps"])
        self.holdout_acc = run.get("holdout_acc")  # None in curves collected before it (their test_acc is not read)
        self.phases, self.eval_flops = run["phases"], float(run["eval_flops_per_validation"])
        curve = {int(s): float(a) for s, a in run["curve"]}
        # harness.training.run validates every val_every steps, and once more at the end if the end is off that grid.
        points = list(range(val_every, self.steps + 1, val_every))
        self.pruning_points = len(points)  # validations the pruner is asked at (the extra one at the end is reported only)
        if not points or points[-1] != self.steps:
            points.append(self.steps)
        missing = [s for s in points if s not in curve]
        if missing:
            raise SystemExit(f"the stored curves have no validation at step {missing[0]}: collect with a --grain that divides {val_every}")
        self.reports = [(s, curve[s]) for s in points]

    @property
    def final(self) -> float:
        return self.reports[-1][1]

    def flops_to(self, step: int, validations: int) -> float:
        train = 0.0
        for i, phase in enumerate(self.phases):
            end = self.phases[i + 1]["start"] if i + 1 < len(self.phases) else step
            train += max(0, min(end, step) - phase["start"]) * phase["flops_per_step"]
        return train + validations * self.eval_flops

    @property
    def full_flops(self) -> float:
        return self.flops_to(self.steps, len(self.reports))


def search_without_pruning(order: list[Configuration], n_trials: int) -> list[Trial]:
    return [(c.final, c.full_flops) for c in order[:n_trials]]


def search_with_pruner(order: list[Configuration], pruner, max_flops: float, study_name: str,
                       max_trials: int | None = None) -> list[Trial]:
    """Real Optuna trials in an in-memory study: each stored curve reported step by step, the
    pruner asked after each validation on the grid (harness.tuning.pruning.PruningCallback), the trial
    stopped where it says; the budget checked before each trial starts (harness.tuning.budget.Budget).
    The study name matters: Hyperband assigns brackets by a hash of it and the trial number."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, direction="maximize", pruner=pruner)
    trials: list[Trial] = []
    spent = 0.0
    for config in order:
        if spent >= max_flops or (max_trials is not None and len(trials) >= max_trials):
            return trials
        trial = study.ask()
        value, cost = config.final, config.full_flops
        for i, (step, acc) in enumerate(config.reports):
            trial.report(acc, step)
            # Asked at every validation on the grid, the last included (its answer is moot there, but
            # successive halving records the rung a trial reached when asked, which later trials see).
            if i < config.pruning_points and trial.should_prune() and step < config.steps:
                value, cost = None, config.flops_to(step, i + 1)
                break
        study.tell(trial, value, state=TrialState.COMPLETE if value is not None else TrialState.PRUNED)
        trials.append((value, cost))
        spent += cost
    if max_trials is None or len(trials) < max_trials:
        raise SystemExit("the replay ran out of drawn configurations: raise --draws")
    return trials


def search_with_oracle(order: list[Configuration], target: float) -> list[Trial]:
    """The bound no pruner can beat on this order: one that knows every trial's end stops each
    trial that will not reach the target at its first validation."""
    trials: list[Trial] = []
    for config in order:
        if config.final >= target - 1e-9:
            return [*trials, (config.final, config.full_flops)]
        trials.append((None, config.flops_to(config.reports[0][0], 1)))
    return trials


def cost_to_reach(trials: list[Trial], target: float) -> float | None:
    spent = 0.0
    for value, cost in trials:
        spent += cost
        if value is not None and value >= target - 1e-9:
            return spent
    return None


def draw_order(configs: list[Configuration], draws: int, recipe_first: bool, rng: random.Random) -> list[Configuration]:
    recipes = [c for c in configs if c.recipe]
    pool = [c for c in configs if not c.recipe]
    return (recipes if recipe_first else []) + [rng.choice(pool) for _ in range(draws)]  # all recipes first, as harness-tune


def selected_holdout_acc(order: list[Configuration], trials: list[Trial]) -> float | None:
    """Held-out accuracy (the benchmark's own split) of the configuration the search selects: its
    first best complete trial, as rerun_best takes it."""
    best = max(range(len(trials)), key=lambda i: -1.0 if trials[i][0] is None else trials[i][0])
    return order[best].holdout_acc


def replay_one(order: list[Configuration], make_pruner: Callable, n_trials: int, study_name: str) -> dict:
    """Both runs on one search order, as bench_pruning.py's two runs share their TPE seeds."""
    none = search_without_pruning(order, n_trials)
    best = max(v for v, _ in none)
    pruned = search_with_pruner(order, make_pruner(), sum(c for _, c in none), study_name)
    target = best - TOLERANCE
    return {"best": best, "none_to_best": cost_to_reach(none, best), "none_to_tolerance": cost_to_reach(none, target),
            "pruned_to_tolerance": cost_to_reach(pruned, target),
            "oracle_to_tolerance": cost_to_reach(search_with_oracle(order, target), target),
            "pruned_best": max((v for v, _ in pruned if v is not None), default=math.nan),
            "none_holdout": selected_holdout_acc(order, none), "pruned_holdout": selected_holdout_acc(order, pruned),
            "trials": len(pruned), "pruned": sum(v is None for v, _ in pruned)}


def bootstrap_ratio_of_means(num: list[float], den: list[float], rng: random.Random, n: int = 2000) -> tuple[float, float]:
    pairs = list(zip(num, den))
    ratios = sorted(sum(a for a, _ in s) / sum(b for _, b in s) for s in ([rng.choice(pairs) for _ in pairs] for _ in range(n)))
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def rank_correlations(configs: list[Configuration], first: int = 6) -> list[tuple[int, float, int]]:
    """(step, Spearman rho, trials) of the accuracy at each early validation with the final one:
    what a rung at that step can know."""
    from scipy.stats import spearmanr

    out = []
    for step in sorted({s for c in configs for s, _ in c.reports[:-1]})[:first]:
        pairs = [(dict(c.reports)[step], c.final) for c in configs if c.steps > step]
        if len(pairs) >= 10:
            out.append((step, float(spearmanr([a for a, _ in pairs], [b for _, b in pairs])[0]), len(pairs)))
    return out


def load(path: str, pruner: str, pruner_overrides: list[str], val_every: int | None):
    """The stored cell, its configurations on the replayed validation grid, and its pruner factory."""
    from harness.tuning.pruning import make_pruner

    stored = json.loads(Path(path).read_text())
    cell = {**stored["cell"], "cache": tempfile.gettempdir()}
    cfg = compose_cell(cell, [f"pruner={pruner}", *pruner_overrides])
    every = int(val_every or cfg.train.val_every)
    return cell, cfg, [Configuration(r, every) for r in stored["runs"]], every, (lambda: make_pruner(cfg))


def replay(args: argparse.Namespace) -> None:
    from harness.tuning.tune import cell_of

    cell, cfg, configs, val_every, make_pruner = load(args.curves, args.pruner, args.pruner_override, args.val_every)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    rows = [replay_one(draw_order(configs, args.draws, not args.no_recipe, rng), make_pruner, args.trials,
                       f"{cell_of(cfg).name}/replay-{i}") for i in range(args.orders)]
    reached = [r for r in rows if r["pruned_to_tolerance"] is not None]
    label = " ".join([args.pruner, *args.pruner_override])
    print(f"cell: digits {cell['strategy']} n_train={cell['n_train']} n_val={cell['n_val']} {' '.join(cell['overrides'])}")
    print(f"{len(configs)} stored configurations; {args.orders} random orders (recipe first: {not args.no_recipe}); "
          f"none: {args.trials} trials; {label}: the same FLOPs budget, validation every {val_every} steps "
          f"({time.perf_counter() - started:.0f} s)")
    finals = [c.final for c in configs if not c.recipe]
    top = max(finals)
    print(f"stored: best final val {top:.4f}, median {statistics.median(finals):.4f}, "
          f"{sum(v >= top - TOLERANCE for v in finals) / len(finals):.0%} within 0.5 points of the best")
    print("rank correlation of the accuracy at a validation with the final one: "
          + ", ".join(f"step {s} {rho:+.2f} (n={n})" for s, rho, n in rank_correlations(configs)))
    print(f"{label} reached B - 0.5 on the equal budget in {len(reached)} of {len(rows)} orders; trials "
          f"{statistics.mean(r['trials'] for r in rows):.1f} (pruned {statistics.mean(r['pruned'] for r in rows):.1f}) "
          f"vs {args.trials}; best {args.pruner} - none: {100 * statistics.mean(r['pruned_best'] - r['best'] for r in rows):+.2f} points (mean)")
    if all(c.holdout_acc is not None for c in configs):
        print(f"held-out accuracy (the benchmark's own split) of the selected configuration, mean over orders: "
              f"none {statistics.mean(r['none_holdout'] for r in rows):.4f}, "
              f"{args.pruner} {statistics.mean(r['pruned_holdout'] for r in rows):.4f}")
    else:
        print("held-out accuracy of the selected configuration: not in these curves (collected before the benchmark "
              "had a split of its own; re-collect them); their test_acc is not read")
    oracle = [r["none_to_tolerance"] / r["oracle_to_tolerance"] for r in rows]
    print(f"bound (a pruner that knows every trial's end), same target: ratio of mean FLOPs "
          f"{sum(r['none_to_tolerance'] for r in rows) / sum(r['oracle_to_tolerance'] for r in rows):.2f}x, "
          f"median per order {statistics.median(oracle):.2f}x")
    if not reached:
        return
    for target, key in (("B (as the target defines it)", "none_to_best"), ("B - 0.5 (same target)", "none_to_tolerance")):
        num, den = [r[key] for r in reached], [r["pruned_to_tolerance"] for r in reached]
        low, high = bootstrap_ratio_of_means(num, den, rng)
        per_order = [a / b for a, b in zip(num, den)]
        print(f"none to {target} / {args.pruner} to B - 0.5, over the {len(reached)} orders: ratio of mean FLOPs "
              f"{sum(num) / sum(den):.2f}x (95% bootstrap {low:.2f}-{high:.2f}x); per order median "
              f"{statistics.median(per_order):.2f}x, geometric mean {math.exp(statistics.fmean(map(math.log, per_order))):.2f}x, "
              f"{sum(x >= 3 for x in per_order) / len(per_order):.0%} of orders >= 3x")


# --- verify --------------------------------------------------------------------------------------

def replay_against_harness(path: str, pruner: str, pruner_overrides: list[str], n_trials: int, seed: int,
                           root: Path) -> list[dict]:
    """One order, replayed and run for real by harness.tuning.tune.tune_cell (the order enqueued into
    the cell's study, so the sampler does not choose), side by side per trial."""
    import optuna

    from harness.store.records import TrialRecord, open_storage
    from harness.settings.schema import replace_path
    from harness.tuning.tune import cell_of, tune_cell

    cell, cfg, configs, _, make_pruner = load(path, pruner, pruner_overrides, None)
    order = draw_order(configs, n_trials, recipe_first=True, rng=random.Random(seed))[:n_trials]
    replayed = search_with_pruner(order, make_pruner(), math.inf, cell_of(cfg).name, max_trials=n_trials)
    for key, value in {"storage.url": f"sqlite:///{root / 'verify.db'}", "pretrain.cache_dir": str(root / "pretrained"),
                       "tune.n_trials": n_trials, "tune.enqueue_recipe": False, "study.seeds": 1}.items():
        cfg = replace_path(cfg, key, value)
    storage = open_storage(cfg.storage, heartbeats=False)
    study = optuna.create_study(study_name=cell_of(cfg).name, storage=storage, direction="maximize")
    for config in order:
        study.enqueue_trial(config.params)
    del study, storage
    real = sorted(tune_cell(cfg, root / "runs", rerun=False).get_trials(deepcopy=False), key=lambda t: t.number)
    return [{"number": t.number, "replayed_state": "COMPLETE" if value is not None else "PRUNED", "real_state": t.state.name,
             "replayed_value": value, "real_value": t.value, "replayed_flops": flops, "real_flops": TrialRecord.of(t).flops}
            for (value, flops), t in zip(replayed, real)]


def agrees(row: dict) -> bool:
    """Same state, same FLOPs, and for a complete trial the same value (Optuna gives a pruned
    trial its last reported value; the replay keeps None)."""
    return (row["replayed_state"] == row["real_state"] and math.isclose(row["replayed_flops"], row["real_flops"], rel_tol=1e-9)
            and (row["real_state"] != "COMPLETE" or row["replayed_value"] == row["real_value"]))


def verify(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = replay_against_harness(args.curves, args.pruner, args.pruner_override, args.trials, args.seed, Path(tmp))
    agree = 0
    for r in rows:
        same = agrees(r)
        agree += same
        print(f"trial {r['number']:>3}: replay {r['replayed_state']:<8} {r['replayed_flops']:.4e} FLOPs | "
              f"harness {r['real_state']:<8} {r['real_flops']:.4e} FLOPs {'' if same else '<- differs'}")
    print(f"{agree} of {len(rows)} trials agree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="train configurations to the end and store their curves")
    c.add_argument("--strategy", default="scratch")
    c.add_argument("--n-train", type=int, default=80)
    c.add_argument("--n-val", type=int, default=150)
    c.add_argument("--configs", type=int, default=100, help="random configurations (the recipe comes on top)")
    c.add_argument("--grain", type=int, default=10, help="validate every this many steps")
    c.add_argument("--holdout", type=int, default=250, help="held-out examples of the benchmark's own (from the training pool)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    c.add_argument("--override", action="append", default=[], help="applied to the cell, e.g. search_space.params.steps.high=3000")
    c.add_argument("--jobs", type=int, default=2, help="processes in parallel (one torch thread each)")
    c.add_argument("--cache", default=None, help="pretraining cache (fine-tune cells)")
    c.add_argument("--out", required=True)
    for name, text in (("replay", "replay random search orders over stored curves, with and without the pruner"),
                       ("verify", "replay one order and run it for real with harness-tune's code, trial by trial")):
        r = sub.add_parser(name, help=text)
        r.add_argument("curves")
        r.add_argument("--pruner", default="hyperband")
        r.add_argument("--pruner-override", action="append", default=[], help="e.g. pruner.min_resource=100")
        r.add_argument("--trials", type=int, default=20 if name == "replay" else 12,
                       help="trials of the search without pruning" if name == "replay" else "trials of the order run")
        r.add_argument("--seed", type=int, default=0)
        if name == "replay":
            r.add_argument("--orders", type=int, default=500, help="random search orders replayed")
            r.add_argument("--draws", type=int, default=2000, help="configurations drawn per order (the pruned search may need many)")
            r.add_argument("--val-every", type=int, default=None, help="validation interval replayed (default: the cell's)")
            r.add_argument("--no-recipe", action="store_true", help="no recipe trial first (tune.enqueue_recipe=false)")
    args = parser.parse_args()
    if args.command == "collect":
        started = time.perf_counter()
        cell = {"strategy": args.strategy, "n_train": args.n_train, "n_val": args.n_val, "overrides": args.override,
                "grain": args.grain, "holdout": args.holdout, "draw_seed": args.seed, "cache": args.cache or tempfile.mkdtemp(prefix="bench-replay-")}
        stored = collect(cell, args.configs, args.seed, args.jobs)
        stored["cell"].pop("cache")
        Path(args.out).write_text(json.dumps(stored))
        print(f"{len(stored['runs'])} configurations in {time.perf_counter() - started:.0f} s -> {args.out}")
    elif args.command == "replay":
        replay(args)
    else:
        verify(args)


if __name__ == "__main__":
    main()

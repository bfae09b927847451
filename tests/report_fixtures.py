"""A crafted Optuna storage shaped exactly like harness/tuning/tune.py writes it, with known answers.

No training: each cell is created directly with optuna (study user attrs, trials made with
optuna.trial.create_trial, some pruned, failed or left RUNNING), and each cell's ``final`` re-run
accuracies are drawn around a known power-law learning curve, so the crossover is known.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial
from scipy import optimize

GRID = (16, 32, 64, 128, 256, 512)
FINETUNE = (0.90, 0.60, 0.5)  # acc(n) = a - b n^-c
SCRATCH_CATCHES_UP = (0.99, 1.87, 0.5)  # meets FINETUNE at n ~ 199, inside GRID
SCRATCH_NEVER = (0.84, 2.5, 0.5)  # asymptote below fine-tune's curve everywhere
N_VAL = 200
PRETRAIN_FLOPS = 3.0e11
EDGE_LR = 0.0295  # log position 0.997 in [1e-4, 3e-2]: at the high edge
MID = {"lr": 0.0017, "steps": 300, "optimizer": "adamw", "label_smoothing": 0.1}  # all mid-range

SPACE = {
    "lr": FloatDistribution(1e-4, 3e-2, log=True),
    "steps": IntDistribution(50, 600, step=50),
    "optimizer": CategoricalDistribution(["adamw", "sgd"]),
    "label_smoothing": FloatDistribution(0.0, 0.2),
}
KEYS = {"lr": "train.lr", "steps": "train.steps", "optimizer": "train.optimizer",
        "label_smoothing": "train.label_smoothing"}


def curve(params: tuple[float, float, float], n: float) -> float:
    a, b, c = params
    return a - b * n ** -c


def true_crossover(finetune: tuple[float, float, float], scratch: tuple[float, float, float],
                   margin: float = 0.0) -> float | None:
    """Where fine-tune's lead (finetune - scratch) falls to `margin`: the crossing itself at 0, n*
    at the report's margin."""
    def gap(lx: float) -> float:
        return curve(scratch, math.exp(lx)) + margin - curve(finetune, math.exp(lx))

    lo, hi = math.log(1.0), math.log(1e9)
    if gap(lo) * gap(hi) > 0:
        return None
    return math.exp(optimize.brentq(gap, lo, hi))


@dataclass
class Crafted:
    path: Path
    url: str
    study: str
    grid: tuple[int, ...]
    crossover: float | None
    edge_cell: str
    cells: list[str] = field(default_factory=list)


def craft_storage(
    path: Path,
    study: str = "toy",
    *,
    finetune: tuple[float, float, float] = FINETUNE,
    scratch: tuple[float, float, float] = SCRATCH_CATCHES_UP,
    grid: tuple[int, ...] = GRID,
    seeds: int = 3,
    sd: float = 0.004,
    trials: int = 6,
    without_final: tuple[str, ...] = (),
    rng_seed: int = 0,
    name_format: str = "{study}/{strategy}/n{n}",
    scratch_flops_scale: float = 1.0,
    pruner: Callable[[str, int], dict[str, Any] | None] | None = None,
    weights: dict[str, Any] | None = None,
) -> Crafted:
    """Write one study's cells into the SQLite file `path`; returns what the report should find.

    Per cell: `trials` trials -- complete ones below the best, one PRUNED (with intermediate
    values), one FAIL (fail_reason) -- and for "<study>/scratch/n<grid[0]>" one extra RUNNING
    trial without compute attrs. The best trial's params are mid-range except in the edge cell
    "<study>/finetune/n<grid[0]>", whose best lr sits at the high edge of its range.

    Cells are named `name_format` (fields: study, strategy, n, and i, the cell's index in
    creation order: fine-tune first, then scratch, each by size); the names above are the
    default's. The name changes nothing else: the same arguments give the same trials and values.

    `scratch_flops_scale` multiplies scratch trials' FLOPs; `pruner(strategy, n)` gives a cell's
    `pruner` attr (none by default, as in storages from before it); `weights` replaces fine-tune
    cells' own pretraining (`pretrain`) by that `weights` attr (a file or a hub tag).
    """
    url = f"sqlite:///{path}"
    storage = RDBStorage(url)
    rng = random.Random(rng_seed)
    edge_cell = name_format.format(study=study, strategy="finetune", n=grid[0], i=0)
    made = Crafted(path, url, study, tuple(grid), true_crossover(finetune, scratch), edge_cell)
    for strategy, params in (("finetune", finetune), ("scratch", scratch)):
        for n in grid:
            name = name_format.format(study=study, strategy=strategy, n=n, i=len(made.cells))
            made.cells.append(name)
            s = optuna.create_study(study_name=name, storage=storage, direction="maximize")
            attrs = {
                "strategy": strategy, "n_train": n, "study": study, "tuning": 0,
                "budget": {"n_trials": trials, "max_flops": None, "max_wall_s": None},
                "search_space": {k: {"key": KEYS[k], "distribution": distribution_to_json(d)}
                                 for k, d in SPACE.items()},
                "n_val": N_VAL, "n_test": 500, "model": "tiny_cnn", "data": "digits",
            }
            if strategy == "finetune" and weights is None:
                attrs["pretrain"] = {"flops": PRETRAIN_FLOPS, "wall_s": 40.0, "source_val_acc": 0.97,
                                     "steps": 1000, "config_hash": "abc123", "source_classes": [0, 1, 2, 3, 4]}
                attrs["weights"] = {"origin": "own pretraining", "ref": "abc123", "pretrain_flops": PRETRAIN_FLOPS,
                                    "pretrain_flops_from": "measured"}
            elif strategy == "finetune":
                attrs["weights"] = weights
            if pruner is not None and pruner(strategy, n) is not None:
                attrs["pruner"] = pruner(strategy, n)
            for key, value in attrs.items():
                s.set_user_attr(key, value)

            truth = curve(params, n)
            best_index = (1 + n % 3) % (trials - 2)  # not always the first trial
            best_params = dict(MID, lr=EDGE_LR) if name == edge_cell else dict(MID)
            for i in range(trials):
                p = {"lr": 10 ** rng.uniform(-4, math.log10(3e-2)), "steps": rng.randrange(50, 650, 50),
                     "optimizer": rng.choice(["adamw", "sgd"]), "label_smoothing": rng.uniform(0.0, 0.2)}
                flops = p["steps"] * 2.0e7 * n ** 0.25 * rng.uniform(0.9, 1.1) * (scratch_flops_scale if strategy == "scratch" else 1.0)
                ua = {"flops": flops, "wall_s": flops / 2e9, "steps": p["steps"]}
                if i == 0:  # the enqueued recipe; every attr tuning records (fewer elsewhere: faster)
                    ua.update(recipe=True, recipe_name="standard", train_flops=0.9 * flops, eval_flops=0.1 * flops,
                              flops_per_step=flops / p["steps"], samples_seen=32 * p["steps"])
                if i == trials - 2:
                    state, value = TrialState.PRUNED, None
                    ua["flops"] = ua["flops"] / 3
                    inter = {25: truth - 0.3, 50: truth - 0.25}
                elif i == trials - 1:
                    state, value = TrialState.FAIL, None
                    ua = {"fail_reason": "diverged: loss is nan", "flops": flops / 10, "wall_s": 0.5,
                          "flops_per_step": flops / p["steps"]}
                    inter = {}
                else:
                    state = TrialState.COMPLETE
                    if i == best_index:
                        p, value = best_params, truth
                    else:
                        value = truth - rng.uniform(0.02, 0.15)
                    inter = {p["steps"] // 2: value - 0.05, p["steps"]: value}
                s.add_trial(create_trial(state=state, value=value, params=p, distributions=SPACE,
                                         user_attrs=ua, intermediate_values=inter))
            if strategy == "scratch" and n == grid[0]:
                s.add_trial(create_trial(state=TrialState.RUNNING, params=MID, distributions=SPACE))
            if name in without_final:
                continue
            best = [t for t in s.trials if t.state == TrialState.COMPLETE and t.value == truth][0]
            final = []
            for k in range(seeds):
                acc = truth + rng.gauss(0.0, sd)
                final.append({"seed": k + 1, "val_acc": truth + rng.gauss(0.0, sd), "test_acc": acc,
                              "flops": best.user_attrs["flops"], "wall_s": best.user_attrs["wall_s"]})
            s.set_user_attr("best_trial", best.number)
            s.set_user_attr("best_params", best.params)
            s.set_user_attr("final", final)
    storage.engine.dispose()
    return made

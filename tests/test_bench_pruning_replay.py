"""The pruning replay benchmark speaks for harness-tune only if replaying a stored curve does what
a real trial does: the same pruning decisions at the same steps and the same FLOPs. Checked here
on a tiny cell, for both successive-halving pruners, against harness.tuning.tune.tune_cell itself."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_pruning_replay", REPO / "benchmarks" / "bench_pruning_replay.py")
replay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replay)

# Schedules of 15 or 45 steps: the rungs of min_resource 5, reduction 3 lie at 5, 15 and 45, so a
# trial may end on a rung, and whether the pruner is asked at a trial's last validation shows.
TINY = ["train.val_every=5", "~search_space.params.steps", "+search_space.params.steps={key: train.steps, type: categorical, choices: [15, 45]}",
        "~search_space.recipes.sgd", "~search_space.recipes.adamw_long", "search_space.recipes.adamw.steps=45", "data.n_test=50", "pretrain.train.steps=20", "pretrain.train.val_every=10"]


@pytest.fixture(scope="module")
def tiny_collected(tmp_path_factory) -> tuple[Path, list[str]]:
    """The tiny cell's curves, collected while every evaluation of a test split is recorded."""
    import harness.data.task
    import harness.training.run

    root = tmp_path_factory.mktemp("replay")
    cell = {"strategy": "scratch", "n_train": 20, "n_val": 50, "overrides": TINY, "grain": 5, "holdout": 20,
            "draw_seed": 0, "cache": str(root / "pretrained")}
    tests, reads = [], []

    def recording_build(module):
        real = module.build_task

        def build_task(*args, **kwargs):
            task = real(*args, **kwargs)
            tests.append(task.test)
            return task
        return build_task

    def recording_eval(module):
        real = module.eval_batches

        def eval_batches(images, *args, **kwargs):
            if any(images is t for t in tests):
                reads.append("test split evaluated")
            return real(images, *args, **kwargs)
        return eval_batches

    with pytest.MonkeyPatch.context() as mp:
        for module in (harness.data.task, harness.training.run):
            mp.setattr(module, "build_task", recording_build(module))
            mp.setattr(module, "eval_batches", recording_eval(module))
        stored = replay.collect(cell, configs=10, seed=0, jobs=1)
    assert tests, "the recorder saw no task"
    path = root / "curves.json"
    path.write_text(json.dumps(stored))
    return path, reads


@pytest.fixture(scope="module")
def tiny_curves(tiny_collected) -> Path:
    return tiny_collected[0]


def test_collecting_curves_never_reads_the_test_split_and_scores_a_split_of_its_own(tiny_collected) -> None:
    path, reads = tiny_collected
    assert reads == []
    runs = json.loads(path.read_text())["runs"]
    assert all("test_acc" not in r and 0.0 <= r["holdout_acc"] <= 1.0 for r in runs)
    assert len({r["holdout_acc"] for r in runs}) > 1  # a real score per configuration


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["hyperband", "asha"])
def test_a_replayed_order_prunes_and_costs_what_harness_tune_does(tiny_curves: Path, tmp_path: Path, pruner: str) -> None:
    # Order 10: one that both prunes and completes trials under both pruners. (Hyperband assigns a trial's bracket
    # from a hash of the study's name and the trial's number, so the sortable tuning-run names moved which orders
    # do: the earlier order 14 no longer prunes under Hyperband; orders 10-13 and 15-20 do under both.)
    rows = replay.replay_against_harness(str(tiny_curves), pruner, ["pruner.min_resource=5"], n_trials=10, seed=10,
                                         root=tmp_path)
    assert len(rows) == 10
    states = {r["real_state"] for r in rows}
    assert states == {"COMPLETE", "PRUNED"}, f"the order must exercise both outcomes to check anything: {states}"
    disagreeing = [r for r in rows if not replay.agrees(r)]
    assert not disagreeing, disagreeing


def test_the_bound_stops_every_loser_at_its_first_validation_and_completes_the_first_winner(tiny_curves: Path) -> None:
    _, _, configs, _, _ = replay.load(str(tiny_curves), "none", [], None)
    order = replay.draw_order(configs, 30, recipe_first=False, rng=random.Random(0))
    finals = [c.final for c in order]
    first_winner = next(i for i in range(1, len(order)) if finals[i] > max(finals[:i]))  # a target not met at once
    target = finals[first_winner]
    trials = replay.search_with_oracle(order, target)
    assert len(trials) == first_winner + 1
    assert trials[-1] == (order[first_winner].final, order[first_winner].full_flops)
    for (value, flops), config in zip(trials[:-1], order):
        assert value is None and math.isclose(flops, config.flops_to(config.reports[0][0], 1))
        assert flops < config.full_flops
    assert replay.cost_to_reach(trials, target) == pytest.approx(sum(f for _, f in trials))


def test_the_selected_configuration_is_the_first_best_complete_trial(tiny_curves: Path) -> None:
    _, _, configs, _, _ = replay.load(str(tiny_curves), "none", [], None)
    order = list({c.holdout_acc: c for c in configs}.values())[:3]  # three with different held-out accuracies
    assert len(order) == 3
    trials = [(0.5, 1.0), (0.7, 1.0), (None, 1.0)]  # a pruned trial is never selected
    assert replay.selected_holdout_acc(order, trials) == order[1].holdout_acc
    trials = [(0.9, 1.0), (0.9, 1.0), (0.1, 1.0)]  # a tie goes to the first, as in harness.tuning.rerun.rerun_best
    assert replay.selected_holdout_acc(order, trials) == order[0].holdout_acc

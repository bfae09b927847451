"""The adaptive study: the policy that picks the next size (a pure function of the verdict), and the
study loop that measures it on a real storage, within its caps, resumably."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import optuna
import pytest

from harness.study.adaptive import n_star_bracket, next_size
from harness.errors import ConfigError
from harness.report.verdict import Comparison, SizeVerdict
from harness.study.orchestrator import check_study

sys.path.insert(0, str(Path(__file__).parent))
from harness.settings.config import load  # noqa: E402
from harness.settings.schema import StudyAppConfig  # noqa: E402
from test_study import compose_study  # noqa: E402


def comparison(sizes, n_star, status="catch_up") -> Comparison:
    per_n = [SizeVerdict(n, 0.0, (-0.1, 0.1), "inconclusive", {"finetune": 3, "scratch": 3}, True) for n in sizes]
    return Comparison("test_acc", 0.01, status, "", per_n, (sizes[0], sizes[-1]), n_star=n_star)


def test_the_bracket_is_the_pair_of_measured_sizes_either_side_of_n_star():
    assert n_star_bracket(comparison([10, 20, 40, 80], 33.0)) == (20, 40)
    assert n_star_bracket(comparison([10, 20, 40, 80], 40.0)) == (20, 40)  # lower < n* <= upper
    assert n_star_bracket(comparison([10, 20, 40, 80], 8.0)) is None
    assert n_star_bracket(comparison([10, 20, 40, 80], 200.0)) is None
    assert n_star_bracket(comparison([10, 20, 40, 80], None)) is None


def test_the_next_size_is_the_geometric_midpoint_until_the_bracket_is_within_the_factor():
    step = next_size(comparison([10, 20, 40, 80], 33.0), 1.5)
    assert step.size == 28 and step.bracket == (20, 40) and "adding n = 28" in step.reason
    # after measuring 28, n* = 33 lies between 28 and 40 (1.43x): done at 1.5, one more at 1.2
    done = next_size(comparison([10, 20, 28, 40, 80], 33.0), 1.5)
    assert done.size is None and done.bracket == (28, 40) and "1.43x <= study.bracket 1.5" in done.reason
    assert next_size(comparison([10, 20, 28, 40, 80], 33.0), 1.2).size == 33


@pytest.mark.parametrize("n_star,status,words", [
    (None, "finetune_ahead", "the verdict is finetune_ahead"),
    (math.inf, "inconclusive", "beyond the search horizon"),
    (5.0, "catch_up", "at or below the smallest"),
    (300.0, "inconclusive", "beyond the largest"),
])
def test_nothing_is_added_where_no_measured_pair_brackets_n_star(n_star, status, words):
    step = next_size(comparison([10, 20, 40, 80], n_star, status), 1.5)
    assert step.size is None and words in step.reason


def test_no_whole_size_between_neighbours_stops_the_refinement():
    assert next_size(comparison([2, 3], 2.5), 1.2).size is None


@pytest.mark.parametrize("override,fix", [
    ("study.bracket=1", "study.bracket=1 must be a number > 1"),
    ("study.max_cells=-1", "study.max_cells=-1 must be null or an integer >= 0"),
    ("study.max_flops=0", "study.max_flops=0 must be null or a positive number"),
    ("study.adaptive=maybe", "study.adaptive=maybe must be true or false"),
])
def test_adaptive_settings_are_checked_before_any_training(tmp_path, override, fix):
    cfg = compose_study(override, f"storage.url=sqlite:///{tmp_path}/s.db", typed=False)
    with pytest.raises(ConfigError, match=fix.replace(".", r"\.").replace("+", r"\+")):
        check_study(load(StudyAppConfig, cfg))
    assert not (tmp_path / "s.db").exists()


def tiny(tmp_path, *extra):
    return compose_study("study.strategies=[finetune,scratch]", "study.n_train=[10,40]", "tune.n_trials=1",
                         "study.seeds=1", "study.max_seeds=1", "study.tunings=1", "study.max_tunings=1",
                         f"storage.url=sqlite:///{tmp_path}/study.db",
                         "logger=none", "data.n_val=50", "train.steps=10", "train.val_every=10",
                         "~search_spaces.scratch.params.steps", "~search_spaces.finetune.params.steps",
                         f"pretrain.cache_dir={tmp_path}/pre", "pretrain.train.steps=20", "study.workers=1",
                         "report.n_boot=50", *extra)


class Scripted:
    """next_size answering from a script (the policy has its own tests above); records what it saw."""

    def __init__(self, sizes):
        self.sizes, self.seen = list(sizes), []

    def __call__(self, comparison, ratio):
        from harness.study.adaptive import Refinement

        self.seen.append(sorted(p.n for p in comparison.per_n))
        size = self.sizes.pop(0) if self.sizes else None
        return Refinement(size, f"scripted n = {size}", (10, 40) if size else None)


def names(tmp_path):
    return sorted(optuna.get_all_study_names(f"sqlite:///{tmp_path}/study.db"))


def test_refinement_tunes_the_new_size_for_both_strategies_with_the_full_budget_and_resumes(tmp_path, monkeypatch, capsys):
    from harness.study import adaptive
    from harness.study.orchestrator import run_study

    script = Scripted([20])
    monkeypatch.setattr(adaptive, "next_size", script)
    cfg = tiny(tmp_path, f"report.dir={tmp_path}/report")
    run_study(cfg, tmp_path / "runs")
    assert names(tmp_path) == sorted(f"digits/n{n:06d}/{s}/t0" for s in ("finetune", "scratch") for n in (10, 20, 40))
    assert script.seen == [[10, 40], [10, 20, 40]]  # the second decision saw the added size measured
    for s in ("finetune", "scratch"):
        study = optuna.load_study(study_name=f"digits/n000020/{s}/t0", storage=f"sqlite:///{tmp_path}/study.db")
        assert len(study.trials) == 1 and len(study.user_attrs["final"]) == 1  # the grid's budget and replicates
    assert "refining: scripted n = 20" in capsys.readouterr().err

    # a rerun of the same command counts the added size like the grid's: nothing is redone
    before = {n: optuna.load_study(study_name=n, storage=f"sqlite:///{tmp_path}/study.db").user_attrs["final"]
              for n in names(tmp_path)}
    again = Scripted([])
    monkeypatch.setattr(adaptive, "next_size", again)
    run_study(cfg, tmp_path / "runs")
    assert again.seen == [[10, 20, 40]]
    assert {n: optuna.load_study(study_name=n, storage=f"sqlite:///{tmp_path}/study.db").user_attrs["final"]
            for n in names(tmp_path)} == before


def test_max_cells_and_max_flops_stop_the_refinement_and_say_so(tmp_path, monkeypatch, capsys):
    from harness.study import adaptive
    from harness.study.orchestrator import refine, run_study

    monkeypatch.setattr(adaptive, "next_size", Scripted([]))
    cfg = tiny(tmp_path, f"report.dir={tmp_path}/report")
    run_study(cfg, tmp_path / "runs")
    cells = check_study(cfg)

    monkeypatch.setattr(adaptive, "next_size", Scripted([20, 28]))
    refine(tiny(tmp_path, "study.max_cells=2"), cells, tmp_path / "runs")
    err = capsys.readouterr().err
    assert "study.max_cells=2 allows no more cells" in err
    assert names(tmp_path) == sorted(f"digits/n{n:06d}/{s}/t0" for s in ("finetune", "scratch") for n in (10, 20, 40))

    monkeypatch.setattr(adaptive, "next_size", Scripted([28]))
    refine(tiny(tmp_path, "study.max_flops=1"), cells, tmp_path / "runs")
    assert "of study.max_flops=1" in capsys.readouterr().err
    assert not any("/n000028/" in n for n in names(tmp_path))


def test_a_fixed_grid_adds_neither_replicates_nor_sizes(tmp_path, monkeypatch):
    from harness.study import adaptive
    from harness.study.orchestrator import run_study

    script = Scripted([20])
    monkeypatch.setattr(adaptive, "next_size", script)
    run_study(tiny(tmp_path, "study.adaptive=false", "study.max_seeds=3", f"report.dir={tmp_path}/report"),
              tmp_path / "runs")
    assert script.seen == [] and len(names(tmp_path)) == 4
    for name in names(tmp_path):  # study.seeds=1 and no top-up, though max_seeds allows 3
        assert len(optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/study.db").user_attrs["final"]) == 1


def test_on_simulated_studies_the_adaptive_rule_adds_sizes_only_where_n_star_is_in_range():
    import numpy as np

    from harness.calibration.simulate import SCENARIOS
    from harness.calibration.adaptive import Policy, adaptive, fine_grid

    policy = Policy(n_boot=200)
    grid_cells = 2 * len(SCENARIOS["crossover"].sizes)
    ahead = [adaptive(SCENARIOS["finetune_ahead"], policy, np.random.default_rng(k), k) for k in range(5)]
    assert all(o.cells == grid_cells for o in ahead)  # n* beyond the range: nothing to bracket
    cross = [adaptive(SCENARIOS["crossover"], policy, np.random.default_rng(k), k) for k in range(10)]
    assert all(grid_cells <= o.cells <= grid_cells + policy.max_cells for o in cross)
    assert sum(o.cells > grid_cells for o in cross) >= 5
    # true n* = 24: bracketed within 1.5x in some studies; sizes are added only where n*'s interval is
    # finite, and with one tuning run a cell the between-run variance estimated from the curves
    # keeps many intervals open (3 of 10 bracketed here; 5 before tuning runs entered the interval)
    assert sum(o.bracketed for o in cross) >= 2
    assert fine_grid((10, 20, 40, 80, 160, 320), 1.5) == (10, 15, 22, 32, 47, 69, 101, 148, 218, 320)

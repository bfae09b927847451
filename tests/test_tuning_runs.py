"""Tuning runs (issue 21): each tuning run of a cell is its own Optuna study with its own sampler
seed, seeds and validation draw; the test split is shared; a failed re-run is data; old storages
read as one run a cell; the statistics use the runs as the unit of replication."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from harness.data.task import build_task
from harness.store.records import CellId
from harness.tuning.replicates import DIVERGED, FAILED, RUN_SEED_STRIDE, failure_record, make_record, tuning_run
from harness.report.crossover import Crossover
from harness.report.noise import Replicates
from harness.report.verdict import compare
from harness.settings.schema import CellConfig, DataConfig, TrainerConfig, TuneConfig


def _ids(images) -> set:
    return {tuple(np.asarray(x).ravel().round(4)) for x in images.x}


def test_each_draw_has_its_own_validation_split_and_training_order_but_one_test_split():
    base = DataConfig(n_train=40, n_val=150, n_test=300)
    tasks = [build_task(dataclasses.replace(base, draw=d)) for d in (0, 1, 2)]
    assert len({t.test_split for t in tasks}) == 1  # the test examples never move
    assert all(np.array_equal(tasks[0].test.y.numpy(), t.test.y.numpy()) for t in tasks)
    vals = [_ids(t.val) for t in tasks]
    assert vals[0] != vals[1] != vals[2]  # own validation draws
    assert _ids(tasks[0].train) != _ids(tasks[1].train)
    for t in tasks:  # no validation or test image trains
        assert not (_ids(t.train) & _ids(t.val)) and not (_ids(t.train) & _ids(t.test))
    # nested across sizes within a draw
    small = build_task(dataclasses.replace(base, draw=1, n_train=20))
    assert _ids(small.train) <= _ids(tasks[1].train)
    # draw 0 is the split every earlier study used
    assert _ids(build_task(base).val) == vals[0]


def test_tuning_run_k_has_its_own_seed_draw_and_name_and_run_0_is_unchanged():
    cfg = CellConfig(seed=7, data=DataConfig(draw=2), tune=TuneConfig(n_trials=5))
    assert tuning_run(cfg, 0) is cfg
    run = tuning_run(cfg, 3)
    assert (run.tune.run, run.seed, run.data.draw) == (3, 7 + 3 * RUN_SEED_STRIDE, 5)
    from harness.tuning.tune import cell_of, cell_sampler_seed

    assert cell_of(run).name.endswith("/t3") and cell_of(cfg).name == f"{cfg.study.name}/n000080/{cfg.strategy.name}/t0"
    assert cell_sampler_seed(run) != cell_sampler_seed(cfg)
    with pytest.raises(ValueError):
        tuning_run(cfg, -1)


def test_cell_ids_round_trip_and_incomplete_attrs_are_no_cell():
    cell = CellId("s", "finetune", 40, 2)
    assert CellId.from_attrs(cell.attrs()) == cell and CellId.parse(cell.name) == cell
    bare = {"study": "s", "strategy": "finetune", "n_train": 40}
    assert CellId.from_attrs(bare) is None and CellId.from_attrs({**bare, "tuning": -1}) is None
    assert CellId.parse("s/finetune/n40/t2") is None and CellId.parse("s/n000040/finetune/t2") == cell


def test_study_names_sort_by_study_size_strategy_and_run():
    """What optuna-dashboard's sorted study list shows: a study's sizes in numeric order, at each
    size its two strategies side by side, then the tuning runs."""
    cells = [CellId("digits", s, n, k) for n in (640, 10, 80, 160, 20) for s in ("scratch", "finetune") for k in (1, 0)]
    names = sorted(c.name for c in cells)
    assert [CellId.parse(n) for n in names] == sorted(cells, key=lambda c: (c.n_train, c.strategy, c.tuning))
    assert names[:4] == ["digits/n000010/finetune/t0", "digits/n000010/finetune/t1", "digits/n000010/scratch/t0",
                         "digits/n000010/scratch/t1"]


def test_a_failed_rerun_is_recorded_with_its_reason():
    record = failure_record(2, 12, FAILED, "RuntimeError: boom", chance=0.1)
    assert record.status == FAILED and record.test_acc is None and "boom" in record.reason
    diverged = failure_record(2, 12, DIVERGED, "TrainingDiverged: nan", chance=0.1)
    assert diverged.test_acc == 0.1  # counted at chance: the configuration's real outcome
    at_chance = SimpleNamespace(val_acc=0.1, test_acc=0.1, test_correct=np.arange(500) % 10 == 0, test_split="x",
                                compute=SimpleNamespace(total_flops=1.0, wall_s=1.0))
    assert make_record(1, 1, at_chance, chance=0.1).status == "collapsed"
    good = SimpleNamespace(**{**vars(at_chance), "test_acc": 0.9, "test_correct": np.arange(500) % 10 != 0})
    assert make_record(1, 1, good, chance=0.1).status == "ok"


def test_rerun_that_raises_becomes_a_record_and_the_cell_goes_on(monkeypatch, tmp_path):
    import harness.tuning.rerun as rerun
    from harness.training.module import TrainingDiverged
    from harness.training.run import RunFailed
    from harness.training.compute import Compute

    def boom(cfg, run_dir, weights=None, **kwargs):
        if cfg.data.subset == 1:
            raise RunFailed(Compute(train_flops=5.0)) from TrainingDiverged("loss is nan")
        raise RuntimeError("disk full")

    def fused_breaks(cfgs, run_dirs, **kwargs):
        raise RuntimeError("the stacked run broke")

    monkeypatch.setattr(rerun, "run_training", boom)
    monkeypatch.setattr(rerun, "train_members", fused_breaks)
    monkeypatch.setattr(rerun, "resolve_weights", lambda cfg: None)
    for fuse in (False, True):  # fused, a joint failure trains each member again on its own
        cfg = CellConfig(data=DataConfig(n_train=20, n_test=250), trainer=TrainerConfig(fuse=fuse))
        stored: list = []
        first, second = rerun._run_replicates(cfg, 0, [1, 2], tmp_path, done=stored.append)
        assert first.status == DIVERGED and first.test_acc == pytest.approx(0.1) and first.flops == 5.0
        assert second.status == FAILED and "disk full" in second.reason and second.test_acc is None
        assert len(stored) == 2  # told after each one, so a caller can store it before the next


def _cells(rng, gap, tune_sd, runs, reps, sizes=(10, 20, 40, 80, 160, 320)):
    out = {}
    for name, shift in (("finetune", gap), ("scratch", 0.0)):
        out[name] = {}
        for n in sizes:
            offsets = tune_sd * rng.standard_normal(runs)
            acc = np.concatenate([0.9 + shift + o + 0.004 * rng.standard_normal(reps) for o in offsets])
            out[name][n] = Replicates.of(acc, runs=np.repeat(np.arange(runs), reps))
    return out


def test_between_run_noise_is_measured_and_widens_the_interval():
    """Replicates of one configuration cannot see tuning noise; the run means can."""
    rng = np.random.default_rng(0)
    cells = _cells(rng, 0.0, 0.02, runs=3, reps=3)
    c = compare(cells["finetune"], cells["scratch"], n_boot=400)
    assert c.between_runs == "measured"
    true_se = np.sqrt(2 * (0.02 ** 2 / 3 + 0.004 ** 2 / 9))  # the gap's sd over re-runs of the whole study
    assert 0.6 * true_se < np.mean([p.se for p in c.per_n]) < 1.6 * true_se
    # one tuning run's replicates alone (what the intervals held before) are five times too narrow
    one = {s: {n: Replicates.of(r.acc[r.run_ids == 0]) for n, r in v.items()} for s, v in cells.items()}
    replicate_only = np.sqrt(2 * np.mean([r.acc.var(ddof=1) / r.n for r in one["finetune"].values()]))
    assert replicate_only < 0.3 * true_se
    assert all(p.shares["tuning"] > 0.5 for p in c.per_n)
    assert all(p.tuning_runs == {"finetune": 3, "scratch": 3} for p in c.per_n)


def test_one_run_a_cell_estimates_tau_from_the_curves_and_says_so():
    rng = np.random.default_rng(1)
    cells = _cells(rng, 0.0, 0.02, runs=1, reps=4)
    c = compare(cells["finetune"], cells["scratch"], n_boot=400)
    assert c.between_runs == "estimated" and c.tau is not None and c.tau > 0.005
    assert "estimated" in c.intervals
    few = compare({n: r for n, r in list(cells["finetune"].items())[:3]},
                  {n: r for n, r in list(cells["scratch"].items())[:3]}, n_boot=200)
    assert few.between_runs == "not estimable" and few.tau is None


def test_tau_is_where_the_refitted_lack_of_fit_meets_its_chi_square_quantile():
    """The batched grid search for tau^2 solves its defining equation: at the returned tau^2 the
    weighted residual sum of squares, refitted one tau at a time, equals the (1 - level) chi-square
    quantile to 1%, and a tenth more or less moves it off."""
    from scipy import stats

    from harness.report.learning_curves import fit_power_law_batch
    from harness.report.noise import TAU_LEVEL, between_run_variance

    rng = np.random.default_rng(4)
    cells = _cells(rng, 0.0, 0.02, runs=1, reps=4)
    flat = [(s, n, r) for s in ("finetune", "scratch") for n, r in sorted(cells[s].items())]
    mean_var = np.array([r.acc.var(ddof=1) / r.n for _, _, r in flat])
    estimate = between_run_variance(flat, mean_var)
    tau2 = estimate.tau2

    def q(t: float) -> float:
        total = 0.0
        for s in ("finetune", "scratch"):
            ix = [i for i, c in enumerate(flat) if c[0] == s]
            log_n = np.log([float(flat[i][1]) for i in ix])
            y = np.array([flat[i][2].acc.mean() for i in ix])
            w = 1.0 / (mean_var[ix] + t)
            a, b, c, _ = fit_power_law_batch(log_n, y[None, :], w / w.sum())
            total += float((w * (y - (a[0] - b[0] * np.exp(-c[0] * log_n))) ** 2).sum())
        return total

    target = stats.chi2.ppf(1 - TAU_LEVEL, len(flat) - 6)
    assert tau2 > 0
    assert q(tau2) == pytest.approx(target, rel=0.01)
    assert q(0.9 * tau2) > 1.01 * target and q(1.1 * tau2) < 0.99 * target
    # the relative model: every variance scaled by 1 + ratio divides q(0) by it, to the same quantile
    assert q(0.0) / (1 + estimate.ratio) == pytest.approx(target, rel=1e-6)
    assert np.all(estimate.per_cell(mean_var) >= tau2) and np.any(estimate.per_cell(mean_var) > tau2)


def test_the_band_is_wider_than_the_pointwise_interval_and_decides_the_verdicts():
    rng = np.random.default_rng(2)
    cells = _cells(rng, 0.03, 0.005, runs=3, reps=3)
    c = compare(cells["finetune"], cells["scratch"], n_boot=600)
    assert c.band_critical > 1.96
    for p in c.per_n:
        assert p.band95[0] < p.ci95[0] and p.band95[1] > p.ci95[1]
        assert 0.0 <= p.p_within <= 1.0 and p.upper975 >= p.gap and p.resolution > 0
    js = Crossover.of(c).to_json()
    assert js["band"]["critical"] == pytest.approx(c.band_critical)
    assert {"band95", "p_within_margin", "upper975", "resolution", "variance_shares"} <= set(js["per_n"][0])

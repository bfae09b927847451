"""What a run spends, counted by harness.training.compute.ComputeMeter: a run that raises, is interrupted,
exits or is pruned by a raised optuna.TrialPruned reports exactly the steps it did through a typed
exception (the run's own error as __cause__), and a run that ends reports the meter's count."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import pytorch_lightning as pl
import torch
from optuna.trial import TrialState

import harness.training.module
import harness.training.run
from harness.training.compute import ComputeMeter, PhaseCost, phase_flops
from harness.training.run import RunExited, RunFailed, RunInterrupted, run_training
from harness.tuning.tune import tune_cell
from test_trial_failures import _cfg as _tune_cfg
from tuning_helpers import load

STEPS, VAL_EVERY, N_VAL = 12, 5, 50  # N_VAL: the test config's data.n_val


class _RaisesAfter(pl.Callback):
    """Raises `error` once `steps` optimizer steps are done, as a fault in a callback would."""

    def __init__(self, steps: int, error: BaseException):
        self.steps, self.error = steps, error

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.steps:
            raise self.error


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One run to the end, with the same config as the stopped runs below."""
    from conftest import compose_cfg

    cfg = compose_cfg(f"train.steps={STEPS}", f"train.val_every={VAL_EVERY}",
                      cache_dir=tmp_path_factory.mktemp("cache"))
    return cfg, run_training(cfg, tmp_path_factory.mktemp("run"))


def _stopped(cfg, tmp_path, k: int, error: BaseException, expect: type[BaseException]):
    with pytest.raises(expect) as raised:
        run_training(cfg, tmp_path, callbacks=[_RaisesAfter(k, error)])
    return raised.value


def _spent_exactly(compute, k: int, finished_compute) -> None:
    """k steps at the measured cost of a step, the validations done by step k, and nothing more."""
    assert compute.steps == k and compute.samples_seen == k * 16
    assert compute.flops_per_step == pytest.approx(finished_compute.flops_per_step) and compute.flops_per_step > 0
    assert compute.train_flops == pytest.approx(k * finished_compute.flops_per_step)
    validations = k // VAL_EVERY
    per_sample = finished_compute.eval_flops / ((STEPS // VAL_EVERY + 1) * N_VAL + N_VAL)  # + last validation + test
    assert compute.eval_flops == pytest.approx(validations * N_VAL * per_sample)
    assert 0 < compute.wall_s


def test_a_run_that_raises_after_k_steps_reports_exactly_k_steps(finished, tmp_path):
    cfg, result = finished
    error = RuntimeError("a callback broke")
    failed = _stopped(cfg, tmp_path, 7, error, RunFailed)
    assert failed.__cause__ is error
    _spent_exactly(failed.compute, 7, result.compute)


def test_out_of_memory_in_the_training_step_reports_the_steps_before_it(finished, tmp_path, monkeypatch):
    cfg, result = finished
    real_step = harness.training.module.Classifier.training_step
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def step(self, batch, batch_idx):
        if self.global_step == 6:
            raise oom
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(harness.training.module.Classifier, "training_step", step)
    with pytest.raises(RunFailed) as raised:
        run_training(cfg, tmp_path)
    assert raised.value.__cause__ is oom
    _spent_exactly(raised.value.compute, 6, result.compute)


def test_a_trial_pruned_by_a_raising_callback_reports_its_steps(finished, tmp_path):
    cfg, result = finished
    failed = _stopped(cfg, tmp_path, 9, optuna.TrialPruned("pruned at step 9"), RunFailed)
    assert isinstance(failed.__cause__, optuna.TrialPruned)
    _spent_exactly(failed.compute, 9, result.compute)


def test_ctrl_c_during_training_reports_its_steps_and_keeps_lightnings_exit(finished, tmp_path):
    """Lightning answers a KeyboardInterrupt in fit with sys.exit(1): the exit and its code go up."""
    cfg, result = finished
    exited = _stopped(cfg, tmp_path, 4, KeyboardInterrupt(), RunExited)
    assert exited.code == 1 and isinstance(exited.__cause__, SystemExit)
    assert isinstance(exited.__cause__.__context__, KeyboardInterrupt)
    _spent_exactly(exited.compute, 4, result.compute)


def test_a_launchers_exit_keeps_its_code_and_reports_its_steps(finished, tmp_path):
    cfg, result = finished
    exited = _stopped(cfg, tmp_path, 8, SystemExit(144), RunExited)
    assert exited.code == 144 and exited.__cause__.code == 144
    _spent_exactly(exited.compute, 8, result.compute)


def test_an_interrupt_after_training_reports_every_step(finished, tmp_path, monkeypatch):
    """Ctrl-C while the test split is scored (outside Lightning): still a KeyboardInterrupt, with the whole run's compute."""
    cfg, result = finished
    stop = KeyboardInterrupt()

    def interrupted(*args, **kwargs):
        raise stop

    monkeypatch.setattr(harness.training.run, "correct_per_example", interrupted)
    with pytest.raises(RunInterrupted) as raised:
        run_training(cfg, tmp_path)
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.__cause__ is stop
    compute = raised.value.compute
    assert compute.steps == STEPS and compute.train_flops == pytest.approx(result.compute.train_flops)


def test_the_finished_runs_compute_is_the_meters_count(finished):
    _, result = finished
    c = result.compute
    assert c.steps == STEPS and c.train_flops == pytest.approx(STEPS * c.flops_per_step)
    meter = ComputeMeter([PhaseCost("full", 0, c.flops_per_step)], c.eval_flops / ((STEPS // VAL_EVERY + 2) * N_VAL),
                         n_val=N_VAL, samples_per_step=16, device=torch.device("cpu"), started=0.0)
    trainer = SimpleNamespace(global_step=0, sanity_checking=False)
    meter.on_fit_start(trainer, None)
    for step in range(1, STEPS + 1):
        trainer.global_step = step  # the meter reads it when asked
        if step % VAL_EVERY == 0:
            meter.on_validation_end(trainer, None)
    meter.count_evaluated(2 * N_VAL)  # the last validation and the test split
    counted = meter.spent()
    assert counted.train_flops == pytest.approx(c.train_flops) and counted.eval_flops == pytest.approx(c.eval_flops)
    assert counted.steps == c.steps and counted.samples_seen == c.samples_seen and counted.phases == c.phases


def test_phase_flops_counts_each_step_at_its_phases_cost():
    phases = [PhaseCost("head", 0, 1.0), PhaseCost("full", 3, 10.0)]
    assert phase_flops(phases, 2) == (2.0, [{"name": "head", "start": 0, "steps": 2, "flops_per_step": 1.0},
                                            {"name": "full", "start": 3, "steps": 0, "flops_per_step": 10.0}])
    assert phase_flops(phases, 7)[0] == 3 * 1.0 + 4 * 10.0


def test_a_failed_trial_counts_what_its_run_spent(tmp_path, monkeypatch):
    """The tuning loop reads RunFailed: a trial that breaks at step 3 stores 3 steps' FLOPs and its reason."""
    real_step = harness.training.module.Classifier.training_step

    def step(self, batch, batch_idx):
        if float(self.cfg.lr) == 0.001 and self.global_step == 3:
            raise RuntimeError("something broke")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(harness.training.module.Classifier, "training_step", step)
    tune_cell(_tune_cfg(tmp_path, "tune.n_trials=2", f"train.val_every={VAL_EVERY}"), tmp_path / "runs")
    broke, sound = load(tmp_path).trials
    assert [broke.state, sound.state] == [TrialState.FAIL, TrialState.COMPLETE]
    assert broke.user_attrs["fail_reason"] == "RuntimeError: something broke"
    assert broke.user_attrs["flops"] == pytest.approx(3 * broke.user_attrs["flops_per_step"])
    assert broke.user_attrs["flops_per_step"] == pytest.approx(sound.user_attrs["flops_per_step"]) and sound.user_attrs["flops_per_step"] > 0

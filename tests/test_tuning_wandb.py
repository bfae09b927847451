"""W&B with tuning: one run per trial (never merged), grouped by study, job_type "trial" (a re-run:
"rerun", with its test accuracy in the summary), tags with n_train and the strategy, the trial's
parameters in its config and its final state in its summary."""

from __future__ import annotations

import glob
import json
from pathlib import Path

from optuna.trial import TrialState
from test_run import _wandb_records
from tuning_helpers import compose_tune, load, set_space

from harness.tuning.tune import tune_cell


def _runs(folder: Path) -> list[dict]:
    runs = []
    for file in glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb")):
        records = _wandb_records(Path(file))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {i.key: json.loads(i.value_json) for i in run.config.update}  # wandb.init(config=...)
        config.update({i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config"
                       for i in r.config.update})
        summary = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
                   for i in r.summary.update}
        runs.append({"run": run, "config": config, "summary": summary})
    return runs


def test_one_wandb_run_per_trial_with_params_and_final_state(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_tune(tmp_path, "tune.n_trials=3", "train.steps=10", "study.seeds=1", "logger=wandb",
                       f"logger.dir={tmp_path / 'wb'}", "study.name=wbstudy")
    space = {"lr": {"key": "train.lr", "type": "categorical", "choices": [0.003, 1e6]}}
    cfg = set_space(cfg, space, recipe={"lr": 1e6})  # the first trial diverges
    tune_cell(cfg, tmp_path / "runs")

    trials = load(tmp_path, "wbstudy/n000010/scratch/t0").trials
    runs = _runs(tmp_path / "wb")
    per_trial = [r for r in runs if "trial" in r["config"]]
    assert sorted(r["config"]["trial"]["number"] for r in per_trial) == [t.number for t in trials]
    assert len(runs) == len(trials) + 1  # + the re-run of the best (study.seeds=1)
    state_name = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    for r in per_trial:
        trial = trials[r["config"]["trial"]["number"]]
        assert r["run"].run_group == "wbstudy" and r["run"].job_type == "trial"
        assert "n_train=10" in r["run"].tags
        assert r["config"]["trial"]["params"] == trial.params
        assert r["summary"]["final_state"] == state_name[trial.state]
    assert {r["summary"]["final_state"] for r in per_trial} >= {"failed", "complete"}
    (rerun,) = [r for r in runs if r["run"].job_type == "rerun"]
    stored = load(tmp_path, "wbstudy/n000010/scratch/t0").user_attrs["final"]
    assert rerun["summary"]["test_acc"] == stored[0]["test_acc"] and rerun["config"]["data"]["n_train"] == 10

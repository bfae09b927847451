"""The study in W&B as it runs (issue 24): harness-study logger=wandb keeps one run (job_type "study")
whose re-runs table grows during the study and ends equal to the storage, with the per-size gap as a
W&B plot and the headline in its summary; every trial is a run of job_type "trial" and every re-run
one of job_type "rerun" with its test accuracy in the summary and n_train / strategy in its config.
Read back from the offline run files, as W&B would sync them."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import _wandb_records

STUDY = str(Path(sys.executable).with_name("harness-study"))


def _nested(items) -> dict:
    """A history record's items ({"reruns": {"path": ...}} for a logged table's nested keys)."""
    out: dict = {}
    for i in items:
        keys = list(i.nested_key) or [i.key]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(i.value_json)
    return out


def _runs(folder: Path) -> list[dict]:
    runs = []
    for file in glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb")):
        records = _wandb_records(Path(file))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {i.key: json.loads(i.value_json) for i in run.config.update}
        summary = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
                   for i in r.summary.update}
        history = [_nested(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        runs.append({"run": run, "config": config, "summary": summary, "history": history,
                     "dir": Path(file).parent})
    return runs


@pytest.mark.slow
def test_the_study_run_grows_with_the_study_and_ends_equal_to_the_storage(tmp_path):
    import optuna

    from harness.store.records import TuningRunRecord

    db = tmp_path / "study.db"
    args = [STUDY, "study.n_train=[10,40]", "tune.n_trials=2", "study.seeds=2", "study.workers=2", "study.tunings=2",
            "study.adaptive=false", f"storage.url=sqlite:///{db}", f"pretrain.cache_dir={tmp_path}/pre",
            "pretrain.train.steps=30", f"report.dir={tmp_path}/report", "report.n_boot=100", "logger=wandb",
            f"logger.dir={tmp_path}/wb", "data.n_val=50", "train.val_every=10", f"hydra.run.dir={tmp_path}/run",
            "search_spaces.scratch.params.steps.low=10", "search_spaces.scratch.params.steps.high=20",
            "search_spaces.scratch.params.steps.step=10", "search_spaces.finetune.params.steps.low=10",
            "search_spaces.finetune.params.steps.high=20", "search_spaces.finetune.params.steps.step=10"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = _runs(tmp_path / "wb")
    by_type: dict[str, list[dict]] = {}
    for r in runs:
        by_type.setdefault(r["run"].job_type, []).append(r)
    (study,) = by_type["study"]
    assert study["run"].run_group == "digits"

    # the re-runs table, logged at each 10 s tick that found it grown (how many ticks that is depends
    # on the machine's speed: test_a_status_tick_logs_the_table_each_time_it_grew pins the growth)
    tables = [h["reruns"] for h in study["history"] if "reruns" in h]
    sizes = [h["reruns_done"] for h in study["history"] if "reruns_done" in h]
    assert tables and sizes == sorted(set(sizes)) and sizes[-1] == 2 * 2 * 2 * 2
    last = json.loads((study["dir"] / "files" / tables[-1]["path"]).read_text())
    assert last["columns"][:5] == ["n_train", "strategy", "tuning_run", "replicate", "status"]

    storage = f"sqlite:///{db}"
    stored = []
    for name in optuna.get_all_study_names(storage):
        record = TuningRunRecord.of(optuna.load_study(study_name=name, storage=storage))
        for r in record.final:
            stored.append([record.attrs["n_train"], record.attrs["strategy"], record.attrs.get("tuning", 0),
                           r.replicate, r.status, r.test_acc])
    logged = [[row[0], row[1], row[2], row[3], row[4], row[6]] for row in last["data"]]
    assert sorted(map(str, logged)) == sorted(map(str, stored)) and len(stored) == 2 * 2 * 2 * 2

    # the per-size gap as a W&B plot, and the headline in the summary
    assert any("gap_table" in h for h in study["history"])  # the line plot (W&B stores its data as <key>_table)
    assert any("gap_by_size" in h for h in study["history"])
    crossover = json.loads((tmp_path / "report" / "crossover.json").read_text())
    assert study["summary"]["status"] == crossover["status"] and study["summary"]["headline"]

    # trials and re-runs are runs of their own
    reruns = by_type["rerun"]
    assert len(reruns) == len(stored)
    assert all(r["summary"].get("test_acc") is not None for r in reruns)
    assert {r["config"]["data"]["n_train"] for r in reruns} == {10, 40}
    assert {r["config"]["strategy"]["name"] for r in reruns} == {"finetune", "scratch"}
    assert len(by_type["trial"]) == 2 * 2 * 2 * 2  # 2 strategies x 2 sizes x 2 tuning runs x 2 trials


def test_a_status_tick_before_the_workers_made_any_cell_logs_nothing_and_goes_on(make_cfg, tmp_path):
    """Spawned workers import for seconds before their first cell: a tick then finds an empty
    storage, which the W&B table must wait for, not fail the study on (it did, exit 2)."""
    from types import SimpleNamespace

    from harness.study import orchestrator
    from harness.study.clock import StudyClock

    cfg = make_cfg("study.n_train=[10,20]", f"storage.url=sqlite:///{tmp_path}/s.db", config_name="study")
    clock = StudyClock(cfg.study.name)
    clock.wandb = SimpleNamespace(rows_logged=-1, update=lambda rows: pytest.fail("nothing has landed to log"))
    orchestrator._status(cfg, orchestrator._open(cfg), clock, "tuning", 4)
    clock.close()


def test_a_status_tick_logs_the_table_each_time_it_grew_and_only_then(make_cfg, tmp_path, monkeypatch):
    """The study's W&B run follows the storage as re-runs land, tick by tick, without relogging an
    unchanged table."""
    from harness.study import orchestrator
    from harness.study.clock import StudyClock

    cfg = make_cfg("study.n_train=[10,20]", f"storage.url=sqlite:///{tmp_path}/s.db", config_name="study")
    landed = iter([0, 2, 2, 5, 8, 8])
    now = {"reruns": 0}

    def trainings(cfg, storage):
        now["reruns"] = next(landed)
        return 0, 4, now["reruns"]

    class Recorder:
        rows_logged = -1
        logged: list[int] = []

        def update(self, stored):
            self.rows_logged = len(stored)
            self.logged.append(len(stored))

    monkeypatch.setattr(orchestrator, "_trainings", trainings)
    monkeypatch.setattr(orchestrator, "_stored", lambda cfg: ["row"] * now["reruns"])
    clock = StudyClock(cfg.study.name)
    clock.wandb = Recorder()
    for _ in range(6):
        orchestrator._status(cfg, None, clock, "tuning", 4)
    clock.close()
    assert clock.wandb.logged == [2, 5, 8]

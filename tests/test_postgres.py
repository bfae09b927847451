"""PostgreSQL storage: `storage=postgres` reads the URL from HARNESS_STORAGE_URL, and the URL (with
its password) never shows: not on the console, in logs, run folders, the storage's attributes or
the report (W&B's config: the PostgreSQL chaos test in tests/test_faults.py, in a subprocess).

Needs a server: HARNESS_TEST_POSTGRES_URL=postgresql://user:password@127.0.0.1:5432/db (`.ci/run`
starts one and sets it). Without it these tests are skipped, except under CI, where they fail.
Every test works in studies of its own (a random study.name) and deletes them afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

import harness.cli
from harness.errors import ConfigError
from harness.store.locks import rerun_lock, study_lock
from harness.store.storage import open_storage
from harness.tuning.tune import tune_cell
from postgres_helpers import files_holding, postgres_url, secrets_of, text_holding
from tuning_helpers import tiny_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def pg(monkeypatch):
    """(URL, a study name of this test's own); HARNESS_STORAGE_URL set; the test's studies deleted after."""
    url = postgres_url()
    monkeypatch.setenv("HARNESS_STORAGE_URL", url)
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    yield url, name
    storage = open_storage(url, heartbeat_interval=None)
    for study in optuna.get_all_study_names(storage):
        if study.startswith(f"{name}/") or study == name:
            optuna.delete_study(study_name=study, storage=storage)


def compose_pg(tmp: Path, *overrides: str):
    """conf/tune.yaml with storage=postgres (storage.url = env:HARNESS_STORAGE_URL) and a tiny cell."""
    base = [o for o in tiny_overrides(tmp) if not o.startswith("storage.url=")]
    from harness.settings.config import load
    from harness.settings.schema import CellConfig

    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return load(CellConfig, compose(config_name="tune", overrides=[*base, "storage=postgres", *overrides]))


def test_tune_on_postgres_from_env_never_shows_the_url(pg, tmp_path, capsys):
    url, name = pg
    assert compose_pg(tmp_path).storage.url == "env:HARNESS_STORAGE_URL"
    cfg = compose_pg(tmp_path, f"study.name={name}", "tune.n_trials=2", "study.seeds=1", "~search_space.params.steps",
                     "train.steps=10", "logger=csv", "tune.progress=true")
    tune_cell(cfg, tmp_path / "runs")

    storage = open_storage(url, heartbeat_interval=None)
    assert [n for n in optuna.get_all_study_names(storage) if n.startswith(f"{name}/")] == [f"{name}/n000010/scratch/t0"]
    study = optuna.load_study(study_name=f"{name}/n000010/scratch/t0", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert len(study.user_attrs["final"]) == 1

    from harness.report import build_report

    build_report("env:HARNESS_STORAGE_URL", name, tmp_path / "report", n_boot=50)
    assert (tmp_path / "report" / "report.md").is_file()

    secrets = secrets_of(url)
    printed = capsys.readouterr()
    assert "trials 2/2" in printed.err  # the progress line was printed...
    assert not text_holding(printed.out + printed.err, secrets), "the storage URL was printed"  # ...without the URL
    assert len(list((tmp_path / "runs").rglob("metrics.csv"))) == 3  # two trials and one re-run logged
    assert not files_holding(tmp_path, secrets)  # run folders, logs, the report
    stored = json.dumps([study.user_attrs, [(t.user_attrs, t.system_attrs) for t in study.trials]], default=str)
    assert not text_holding(stored, secrets), "the storage URL went into the storage"
    # W&B config: see the PostgreSQL chaos test (tests/test_faults.py), where a worker logs to W&B


def test_wrong_password_is_one_line_without_it(pg, tmp_path, monkeypatch):
    url, name = pg
    wrong = make_url(url).set(password="Wr0ng-pa55word")
    monkeypatch.setenv("HARNESS_STORAGE_URL", wrong.render_as_string(hide_password=False))
    with pytest.raises(ConfigError) as raised:
        tune_cell(compose_pg(tmp_path, f"study.name={name}"), tmp_path / "runs")
    message = str(raised.value)
    assert "cannot open storage" in message and "***" in message and "password" in message, message
    assert "Wr0ng-pa55word" not in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_missing_database_names_the_fix(pg, tmp_path, monkeypatch):
    url, name = pg
    monkeypatch.setenv("HARNESS_STORAGE_URL", make_url(url).set(database="no_such_db_here").render_as_string(hide_password=False))
    with pytest.raises(ConfigError, match="no_such_db_here") as raised:
        tune_cell(compose_pg(tmp_path, f"study.name={name}"), tmp_path / "runs")
    assert "check that the server is running" in str(raised.value)


def test_study_lock_is_exclusive_on_postgres(pg):
    """The budget check and the taking of a trial are serialised by an advisory lock."""
    url, name = pg
    storage = open_storage(url, heartbeat_interval=None)
    events: list[tuple[str, float]] = []

    def hold(who: str) -> None:
        with study_lock(storage, name):
            events.append((f"{who} in", time.monotonic()))
            time.sleep(0.5)
            events.append((f"{who} out", time.monotonic()))

    threads = [threading.Thread(target=hold, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    order = [e for e, _ in sorted(events, key=lambda e: e[1])]
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"]), order

    # another study's lock is independent of this one
    with study_lock(storage, name):
        took_other = threading.Event()

        def other() -> None:
            with study_lock(storage, f"{name}-other"):
                took_other.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert took_other.wait(10), "a lock on another study waited"
        thread.join(10)


def test_rerun_lock_is_exclusive_apart_from_the_study_lock_and_can_be_tried(pg):
    """One worker re-runs a cell's best while the others take trials (study_lock stays free); a
    worker that need not wait is told the re-run is taken instead of blocking."""
    url, name = pg
    storage = open_storage(url, heartbeat_interval=None)
    with rerun_lock(storage, name, blocking=True) as held:
        assert held
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(_try_rerun_lock(storage, name)))
        thread.start()
        thread.join(10)
        assert outcome == [False], "a second worker took the re-run lock, or blocked on it"
        took_study_lock = threading.Event()

        def take_study_lock() -> None:
            with study_lock(storage, name):
                took_study_lock.set()

        thread = threading.Thread(target=take_study_lock)
        thread.start()
        assert took_study_lock.wait(10), "the re-run lock held up the study lock"
        thread.join(10)
    assert _try_rerun_lock(storage, name) is True  # released


def _try_rerun_lock(storage, name: str) -> bool:
    with rerun_lock(storage, name, blocking=False) as held:
        return held


_HOLD_LOCK = """
import sys, time
from harness.store.locks import study_lock
from harness.store.storage import open_storage
storage = open_storage(sys.argv[1], heartbeat_interval=None)
with study_lock(storage, sys.argv[2]):
    print("LOCKED", flush=True)
    time.sleep(300)
"""


def test_a_killed_worker_leaves_no_lock_behind(pg):
    """A worker killed while holding a study's lock: the server releases it with the connection."""
    url, name = pg
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, url, name], stdout=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if k != "HARNESS_STORAGE_URL"})
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        storage = open_storage(url, heartbeat_interval=None)
        took = threading.Event()

        def take() -> None:
            with study_lock(storage, name):
                took.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert not took.wait(1.0), "the lock was not exclusive"
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert took.wait(15), "the lock of a killed worker was never released"
        thread.join(5)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()

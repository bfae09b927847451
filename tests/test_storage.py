"""Storage: URLs, redaction, errors a person can act on, concurrent workers and stale trials.

All offline: SQLite files under tmp_path, and a PostgreSQL URL on a closed loopback port.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from harness.errors import ConfigError
from tuning_helpers import age_heartbeats
from harness.store.storage import (
    DEFAULT_URL,
    fail_stale_trials,
    open_storage,
    redact_url,
    resolve_url,
)

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cretPW"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


# ---------------------------------------------------------------- redaction and URL resolution


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            f"postgresql://user:{SECRET}@db.example:5432/optuna",
            "postgresql://user:***@db.example:5432/optuna",
        ),
        (
            f"mysql+pymysql://root:{SECRET}@localhost/optuna",
            "mysql+pymysql://root:***@localhost/optuna",
        ),
        (f"postgresql://user:p@{SECRET}@host/db", "postgresql://user:***@host/db"),  # unescaped '@'
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///outputs/harness.db", "sqlite:///outputs/harness.db"),
        ("sqlite:////abs/path/with@sign.db", "sqlite:////abs/path/with@sign.db"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


def test_resolve_default_and_sqlite_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None) == DEFAULT_URL
    assert resolve_url("") == DEFAULT_URL
    assert (tmp_path / "outputs").is_dir()
    url = _sqlite(tmp_path / "deep" / "er" / "x.db")
    assert resolve_url(url) == url
    assert (tmp_path / "deep" / "er").is_dir()


def test_resolve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _sqlite(tmp_path / "from_env.db")
    monkeypatch.setenv("HARNESS_TEST_STORAGE", url)
    assert resolve_url("env:HARNESS_TEST_STORAGE") == url

    monkeypatch.delenv("HARNESS_TEST_STORAGE")
    with pytest.raises(ConfigError, match="HARNESS_TEST_STORAGE"):
        resolve_url("env:HARNESS_TEST_STORAGE")

    monkeypatch.setenv("HARNESS_TEST_STORAGE", f"postgres://u:{SECRET}@host/db")
    with pytest.raises(ConfigError) as info:
        resolve_url("env:HARNESS_TEST_STORAGE")
    assert "HARNESS_TEST_STORAGE" in str(info.value) and "postgresql://" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://u:{SECRET}@host/db",
        f"foo://u:{SECRET}@host/db",
        "outputs/harness.db",
        "redis://localhost",
    ],
)
def test_bad_scheme(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_url(url)
    message = str(info.value)
    assert SECRET not in message
    assert "sqlite:///" in message  # shows a valid example
    assert "\n" not in message


@pytest.mark.parametrize("url", [f"mysql://root:{SECRET}@localhost/optuna", f"mysql+pymysql://root:{SECRET}@db/optuna"])
def test_mysql_is_refused_at_open(url: str) -> None:
    """Only SQLite and PostgreSQL are tested, so only they are accepted: one line, no password."""
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert "MySQL is not supported" in message and "sqlite:///" in message and "postgresql://" in message
    assert SECRET not in message and "\n" not in message


# ---------------------------------------------------------------- open_storage errors


def test_unreachable_postgres_hides_password() -> None:
    # Closed loopback port: "connection refused" with a driver, "pip install ..." without one.
    url = f"postgresql://harness:{SECRET}@127.0.0.1:1/optuna"
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        open_storage(url, timeout_s=2)
    assert time.monotonic() - start < 60  # refused at once; a generous bound that catches only a hang
    err = info.value
    rendered = "".join(traceback.format_exception(err))
    assert SECRET not in str(err) and SECRET not in rendered
    assert "postgresql://harness:***@127.0.0.1:1/optuna" in str(err)
    assert "pip install" in str(err) or "127.0.0.1" in str(err)


def test_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are notes, not a database\n" * 50)
    with pytest.raises(ConfigError, match="not a database"):
        open_storage(_sqlite(path))


def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create folder"):
        open_storage(_sqlite(blocker / "sub" / "x.db"))


def test_open_sqlite_round_trip(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "s.db")
    storage = open_storage(url)
    study = optuna.create_study(study_name="cell-b", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    optuna.create_study(study_name="cell-a", storage=storage)
    assert sorted(optuna.get_all_study_names(open_storage(url, heartbeat_interval=None))) == ["cell-a", "cell-b"]
    # a study without heartbeat-enabled storage has nothing stale
    plain = optuna.load_study(
        study_name="cell-b", storage=open_storage(url, heartbeat_interval=None)
    )
    assert fail_stale_trials(plain) == 0


# ---------------------------------------------------------------- two workers, one fresh file


def _race_worker(url: str, barrier: object, results: object) -> None:
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        barrier.wait(timeout=30)  # type: ignore[attr-defined]
        storage = open_storage(url)
        study = optuna.create_study(
            study_name="race", storage=storage, load_if_exists=True, direction="maximize"
        )
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=15)
        results.put("ok")  # type: ignore[attr-defined]
    except BaseException:
        results.put(traceback.format_exc())  # type: ignore[attr-defined]
        raise


def test_two_processes_share_fresh_sqlite(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "fresh" / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_race_worker, args=(url, barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["ok", "ok"], outcomes
    assert [w.exitcode for w in workers] == [0, 0]
    study = optuna.load_study(study_name="race", storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 30
    assert all(t.state == TrialState.COMPLETE for t in trials)


# ---------------------------------------------------------------- heartbeat: a killed worker

_DOOMED_WORKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    import optuna
    from harness.store.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(sys.argv[1], heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="hb", storage=storage, direction="maximize")

    def objective(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("strategy", ["scratch", "finetune"])
        db = sqlite3.connect(sys.argv[1].removeprefix("sqlite:///"))
        while not db.execute("SELECT COUNT(*) FROM trial_heartbeats").fetchone()[0]:
            time.sleep(0.1)  # until the heartbeat thread has written once, however busy the machine
        print("READY", flush=True)
        time.sleep(120)
        return 0.0

    study.optimize(objective, n_trials=1)
    """
)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_trial_failed_and_retried(tmp_path: Path) -> None:
    url = _sqlite(tmp_path / "hb.db")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_WORKER, url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    # A generous grace period, and the heartbeat aged by hand: no wait on the storage's clock.
    storage = open_storage(url, heartbeat_interval=1, grace_period=600, max_retry=3)
    study = optuna.load_study(study_name="hb", storage=storage)
    (orphan,) = study.get_trials(deepcopy=False)
    assert orphan.state == TrialState.RUNNING
    assert fail_stale_trials(study) == 0  # still within the grace period
    assert age_heartbeats(tmp_path / "hb.db") == 1
    assert fail_stale_trials(study) == 1

    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    retry = trials[1]
    assert retry.params == orphan.params
    assert retry.system_attrs["failed_trial"] == orphan.number
    assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [orphan.number]
    assert fail_stale_trials(study) == 0  # nothing left to fail

    # The next worker picks up the queued copy with the same parameters.
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == 1 and done[0].params == orphan.params


_HOLD_RERUN_LOCK = """
import sys, time
from harness.store.locks import rerun_lock
from harness.store.storage import open_storage
with rerun_lock(open_storage(sys.argv[1], heartbeat_interval=None), sys.argv[2], blocking=True):
    print("LOCKED", flush=True)
    time.sleep(300)
"""


def test_sqlite_lock_of_another_process_is_refused_and_freed_when_it_dies(tmp_path: Path) -> None:
    """The file lock beside a SQLite database: another process holding it makes a non-blocking try
    fail, and killing that process releases it (no stale lock left behind)."""
    from harness.store.locks import rerun_lock

    url = _sqlite(tmp_path / "locks.db")
    storage = open_storage(url, heartbeat_interval=None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_RERUN_LOCK, url, "cell"], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with rerun_lock(storage, "cell", blocking=False) as held:
            assert held is False
        with rerun_lock(storage, "other cell", blocking=False) as held:
            assert held is True  # one lock per cell
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with rerun_lock(storage, "cell", blocking=False) as held:
            assert held is True
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()

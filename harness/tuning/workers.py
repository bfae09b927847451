"""Worker coordination, apart from the trial loop: processes sharing one cell tell a dead peer from a slow one."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from harness.store.records import storage_of
from harness.store.storage import rdb_of


def _beat_once(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    storage = rdb_of(storage)
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial_id)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Keep a trial visibly alive so other workers fail it only if this process dies."""
    storage = rdb_of(storage)
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval())

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) ends a trial like Ctrl-C does: recorded, then exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _peers_may_die(study: optuna.Study) -> bool:
    """Other workers still run trials of this spent cell, and a dead one's trial can be told from a
    slow one's (heartbeats on): worth waiting, since a trial whose worker dies now is otherwise
    left RUNNING, holding a slot of the budget that never yields a result, until the cell is tuned again."""
    storage = rdb_of(storage_of(study))
    return (isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
            and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))))


def pause(seconds: float) -> None:
    """The wait between polls of a spent cell's peers: the one place tests put a clock of their own."""
    time.sleep(seconds)


def _poll_s(storage: optuna.storages.BaseStorage) -> float:
    storage = rdb_of(storage)
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    return float(min(5, max(1, interval or 1)))

"""Inter-process locks of a study's workers, released by the OS or the database server when their
holder dies, so a killed worker never leaves a study locked: a file lock beside a SQLite database,
a session advisory lock on PostgreSQL."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy
from filelock import FileLock, Timeout
from optuna.storages import BaseStorage
from sqlalchemy.engine import make_url

from harness.store.storage import rdb_of, sqlite_path


@contextmanager
def study_lock(storage: BaseStorage, study_name: str) -> Iterator[None]:
    """Serialise "is the budget spent? then take a trial" across every worker of a study.

    Optuna numbers trials atomically but has no way to refuse a trial once the budget is spent, so
    workers racing at the end would overshoot. SQLite: an exclusive lock on a file beside the
    database (one for the whole file: its writes are serial anyway); PostgreSQL: a session advisory
    lock. Released by the OS or the server when a worker dies, so a killed worker
    never leaves a study locked. Held for milliseconds: never around training.
    """
    with _exclusive(storage, study_name, blocking=True, sqlite_file=lambda db, key: Path(f"{db}.lock")):
        yield


@contextmanager
def rerun_lock(storage: BaseStorage, study_name: str, blocking: bool) -> Iterator[bool]:
    """Held by the one worker re-running a cell's best (minutes of training), apart from study_lock
    so that the other workers keep taking trials meanwhile. Yields whether it was taken: with
    `blocking=False` a worker finding it held goes on with other work instead of waiting."""

    def beside(db: str, key: int) -> Path:
        folder = Path(f"{db}.locks")
        folder.mkdir(exist_ok=True)
        return folder / f"rerun-{key & 0xFFFFFFFFFFFFFFFF:016x}.lock"

    with _exclusive(storage, f"{study_name}\0rerun", blocking=blocking, sqlite_file=beside) as held:
        yield held


@contextmanager
def _exclusive(storage: BaseStorage, name: str, blocking: bool,
               sqlite_file: Callable[[str, int], Path]) -> Iterator[bool]:
    """An inter-process lock called `name` that the OS or the database server releases when its
    holder dies; yields whether it was taken (when blocking, always)."""
    storage = rdb_of(storage)
    parsed = make_url(storage.url)
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(parsed)
        lock_path = sqlite_file(path, key) if path else Path(tempfile.gettempdir()) / f"harness-{key}.lock"
        # flock underneath: released when the holder dies; no soft-lock fallback, which a death would leave held.
        lock = FileLock(lock_path, preserve_lock_file=True, fallback_to_soft=False)
        try:
            lock.acquire(blocking=blocking)
            held = True
        except Timeout:
            held = False
        try:
            yield held
        finally:
            if held:
                lock.release()
        return
    if backend != "postgresql":
        yield True
        return
    take = "SELECT pg_advisory_lock(:k)" if blocking else "SELECT pg_try_advisory_lock(:k)"
    with storage.engine.connect() as conn:
        held = bool(conn.execute(sqlalchemy.text(take), {"k": key}).scalar()) or blocking
        try:
            yield held
        finally:
            if held:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

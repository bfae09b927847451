"""The Optuna storage every entry point shares: one URL in, a checked RDBStorage out.

The storage is the single source of truth (docs/design.md): tuning workers write to it, the report reads
only it. So opening it must either work or fail with one line a person can act on, and that line
must never show a database password.
"""

from __future__ import annotations

import importlib
import math
import os
import random
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.engine import URL, make_url

from harness.errors import ConfigError

DEFAULT_URL = "sqlite:///outputs/harness.db"

_ENV_PREFIX = "env:"
_BACKENDS = ("sqlite", "postgresql")  # the tested ones; MySQL is not supported
_EXAMPLE = (
    f"e.g. {DEFAULT_URL} (no server) or env:OPTUNA_STORAGE holding "
    "postgresql://user:password@host:5432/dbname"
)
_SQLITE_BUSY_TIMEOUT_S = 60
_SCHEMA_RACE_ATTEMPTS = 6
# Messages of errors that mean "another process is creating the same schema right now".
_SCHEMA_RACE = re.compile(r"already exists|locked|unique|duplicate|busy", re.IGNORECASE)
# What to install for each DB-API module SQLAlchemy may ask for.
_PIP_NAMES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "pg8000": "pg8000",
}


def redact_url(url: str) -> str:
    """Return `url` with its password replaced by ***, so it can go into messages and logs.

    SQLAlchemy parses well-formed URLs; a password with an unescaped '@' (or text SQLAlchemy cannot
    parse) falls back to treating everything up to the last '@' as user:password, which can hide
    too much but never too little.
    """
    text = url if isinstance(url, str) else str(url)
    try:
        parsed: URL | None = make_url(text)
    except Exception:  # garbage in: handled by the fallback below
        parsed = None
    if parsed is not None and "@" not in (parsed.host or ""):
        if parsed.password is None:
            return text
        return parsed.render_as_string(hide_password=True)
    match = re.match(
        r"^(?P<user>(?:[A-Za-z][\w+.-]*://)?[^:@/]*):(?P<pw>.*)@(?P<rest>[^@]*)$", text
    )
    if match is None:
        return text
    return f"{match['user']}:***@{match['rest']}"


def resolve_url(url: str | None) -> str:
    """Turn the configured `storage.url` into a checked URL; the default needs no server.

    "env:VARNAME" reads the URL from the environment, so a password never has to be written into
    a config file or a Hydra override (which Hydra saves in the run directory).
    """
    if url is None or str(url).strip() == "":
        url = DEFAULT_URL
    url = str(url).strip()
    origin = ""
    if url.startswith(_ENV_PREFIX):
        var = url[len(_ENV_PREFIX) :].strip()
        if not var:
            raise ConfigError(
                f"storage.url={url!r} names no variable: write env:VARNAME, {_EXAMPLE}"
            )
        value = os.environ.get(var, "").strip()
        if not value:
            raise ConfigError(
                f"storage.url=env:{var} but environment variable {var} is unset or empty: "
                f"export {var}=<storage URL> ({_EXAMPLE})"
            )
        url, origin = value, f" (from environment variable {var})"

    parsed = _parse(url, origin)
    if parsed.get_backend_name() == "sqlite":
        _make_sqlite_parent(parsed, url)
    return url


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = 30,
    grace_period: int | None = None,
    max_retry: int = 3,
    timeout_s: float = 10.0,
    sqlite_wal: bool = True,
) -> RDBStorage:
    """Open (creating if needed) the RDB storage at `url`, with heartbeats and stale-trial retry.

    A worker killed mid-trial (SIGKILL, preemption, OOM) leaves its trial RUNNING forever unless
    heartbeats let another worker fail it; the retry callback then re-queues the same parameters,
    at most `max_retry` times. `sqlite_wal=False` keeps SQLite's default journal, for a file on a
    network filesystem where WAL does not work.
    """
    url = resolve_url(url)
    shown = redact_url(url)
    if heartbeat_interval is not None and (
        not isinstance(heartbeat_interval, int) or heartbeat_interval <= 0
    ):
        raise ConfigError(
            f"heartbeat_interval={heartbeat_interval!r}: use a positive integer (seconds) or null"
        )
    if grace_period is not None and (not isinstance(grace_period, int) or grace_period <= 0):
        raise ConfigError(
            f"grace_period={grace_period!r}: use a positive integer (seconds) or null"
        )
    if not isinstance(max_retry, int) or max_retry < 0:
        raise ConfigError(f"max_retry={max_retry!r}: use an integer >= 0")

    parsed = _with_installed_driver(_parse(url, ""), shown)
    engine_kwargs = _engine_kwargs(parsed, timeout_s, sqlite_wal)
    # Optuna formats the URL as a template ({SCHEMA_VERSION}); braces in a password must survive.
    template = parsed.render_as_string(hide_password=False).replace("{", "{{").replace("}", "}}")
    password = parsed.password if isinstance(parsed.password, str) else None

    for attempt in range(_SCHEMA_RACE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # Heartbeats and the retry callback are marked experimental; we use them on purpose.
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    template,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry
                    ),
                )
        except ImportError as err:
            raise ConfigError(f"storage {shown}: {_missing_driver_hint(parsed, err)}") from None
        except (sqlalchemy.exc.SQLAlchemyError, StorageInternalError) as err:
            cause = _root_cause(err)
            if _is_schema_race(cause) and attempt + 1 < _SCHEMA_RACE_ATTEMPTS:
                time.sleep(0.05 * 2**attempt + random.uniform(0, 0.05))
                continue
            raise ConfigError(
                f"cannot open storage {shown}: {_summary(cause, password)}; {_fix_hint(parsed)}"
            ) from None
        except RuntimeError as err:  # optuna's schema-version check
            raise ConfigError(f"storage {shown}: {_summary(err, password)}") from None
    raise AssertionError("unreachable")  # the loop either returns or raises


def fail_stale_trials(study: optuna.Study) -> int:
    """Fail the trials of dead workers now (optuna does it too, but only before each new trial).

    Called by a worker on start-up so that the report and the trial budget do not count trials
    stuck in RUNNING; the storage's retry callback re-queues them. Returns how many this call
    failed (trials that were RUNNING before and are FAIL after).
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sum(1 for t in failed if t.number in running)


# ---------------------------------------------------------------------------------------------


def _parse(url: str, origin: str) -> URL:
    """Parse and check the scheme; only the RDB backends Optuna supports are accepted."""
    shown = redact_url(url)
    hint = ""
    if url.startswith("mysql"):
        raise ConfigError(f"storage.url {shown!r}{origin}: MySQL is not supported; only sqlite:/// and "
                          f"postgresql:// storage URLs are, {_EXAMPLE}")
    if url.startswith("postgres://") or url.startswith("postgres+"):
        hint = " (SQLAlchemy spells it postgresql://)"
    elif "://" not in url and "@" not in url:
        hint = f" (a file path? write sqlite:///{url})"
    elif "://" not in url:
        hint = " (no scheme: start it with postgresql://)"
    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in _BACKENDS:
        raise ConfigError(
            f"storage.url {shown!r}{origin} is not a supported storage URL{hint}: "
            f"use sqlite:///PATH or postgresql[+driver]://..., {_EXAMPLE}"
        )
    return parsed


def sqlite_path(parsed: URL) -> Path | None:
    """The file behind a sqlite URL, or None for an in-memory or URI-style database."""
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _make_sqlite_parent(parsed: URL, url: str) -> None:
    path = sqlite_path(parsed)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"storage.url {redact_url(url)!r}: cannot create folder {str(path.parent)!r} "
            f"({err.strerror or err}): point storage.url at a writable location"
        ) from None


class _WalConnection(sqlite3.Connection):
    """sqlite3 connection that switches the file to WAL journal mode when it opens.

    Optuna creates the engine itself and connects at once (schema creation), so an event listener
    added afterwards would miss the first connections and be lost when the storage is pickled;
    passing this class as sqlite3's `factory` works from the first connection and pickles by name.
    WAL lets readers (the report, the dashboard) run while workers write.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            mode = self.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() not in ("wal", "memory"):
                self.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError:
            pass  # e.g. locked past the timeout: keep the current journal mode, still correct


def _engine_kwargs(parsed: URL, timeout_s: float, sqlite_wal: bool) -> dict[str, Any]:
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        connect_args: dict[str, Any] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
        if sqlite_wal and driver == "pysqlite" and sqlite_path(parsed) is not None:
            connect_args["factory"] = _WalConnection
        return {"connect_args": connect_args}
    seconds = max(2, math.ceil(timeout_s))  # libpq ignores connect_timeout below 2 s
    timeout_arg = "timeout" if driver == "pg8000" else "connect_timeout"
    return {"pool_pre_ping": True, "connect_args": {timeout_arg: seconds}}


def _with_installed_driver(parsed: URL, shown: str) -> URL:
    """For a bare postgresql:// URL, use whichever psycopg is installed.

    SQLAlchemy 2.1 maps postgresql:// to psycopg (3), 2.0 to psycopg2; the project's `postgres`
    extra installs psycopg2-binary. Either one should just work.
    """
    if parsed.drivername != "postgresql":
        return parsed
    for module, drivername in (
        ("psycopg", "postgresql+psycopg"),
        ("psycopg2", "postgresql+psycopg2"),
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return parsed.set(drivername=drivername)
    raise ConfigError(
        f"storage {shown}: no PostgreSQL driver is installed: pip install psycopg2-binary "
        "(or pip install 'harness[postgres]')"
    )


def _missing_driver_hint(parsed: URL, err: ImportError) -> str:
    cause: BaseException = err
    while cause.__cause__ is not None and not getattr(cause, "name", None):
        cause = cause.__cause__
    module = (getattr(cause, "name", None) or "").split(".")[0]
    if module in _PIP_NAMES:
        return f"its database driver {module!r} is not installed: pip install {_PIP_NAMES[module]}"
    if parsed.get_backend_name() == "postgresql":
        return "the PostgreSQL driver is not installed: pip install psycopg2-binary"
    missing = module or err
    return f"no database driver for {parsed.drivername!r} ({missing}): pip install it"


def _root_cause(err: BaseException) -> BaseException:
    """Optuna wraps SQLAlchemy errors in StorageInternalError; judge and report the inner one."""
    while isinstance(err, StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    return err


def _is_schema_race(err: BaseException) -> bool:
    return isinstance(
        err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError)
    ) and bool(_SCHEMA_RACE.search(str(getattr(err, "orig", None) or err)))


def _summary(err: BaseException, password: str | None) -> str:
    """First line of the underlying error, with the password scrubbed in case a driver echoes it."""
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    line = text[0].strip() if text else type(err).__name__
    if password:
        for secret in {password, _percent_encoded(password)}:
            line = line.replace(secret, "***")
    return line[:300]


def _percent_encoded(text: str) -> str:
    return quote(text, safe="")


def _fix_hint(parsed: URL) -> str:
    if parsed.get_backend_name() == "sqlite":
        return "point storage.url at a writable SQLite file (a new path is created) or a server"
    return (
        "check that the server is running and reachable, and the user, password and database name"
    )


def rdb_of(storage: BaseStorage) -> RDBStorage:
    """The RDBStorage behind a study's storage (optuna wraps it in a cache layer)."""
    return getattr(storage, "_backend", storage)

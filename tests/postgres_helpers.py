"""Helpers of the tests that need a PostgreSQL server (tests/test_postgres.py, tests/test_faults.py):
its URL, and searches for the URL's secrets in what the harness wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from harness.store.storage import redact_url


def postgres_url() -> str:
    """HARNESS_TEST_POSTGRES_URL; a skip only outside CI (in CI a missing server is a failure)."""
    url = os.environ.get("HARNESS_TEST_POSTGRES_URL", "").strip()
    if not url:
        if os.environ.get("CI"):
            pytest.fail("HARNESS_TEST_POSTGRES_URL is unset under CI: .ci/run must start PostgreSQL and export it")
        pytest.skip("HARNESS_TEST_POSTGRES_URL is unset (postgresql://user:password@127.0.0.1:5432/db)")
    return url


def secrets_of(url: str) -> list[str]:
    """What must never be written: the URL, its user:password@ part, and the password itself when
    it is distinctive enough to search for."""
    parsed = make_url(url)
    out = [url, parsed.render_as_string(hide_password=False)]
    if parsed.password:
        out.append(f"{parsed.username}:{parsed.password}@")
        if len(parsed.password) >= 6:
            out.append(parsed.password)
    return sorted(set(out))


def files_holding(folder: Path, secrets: list[str]) -> list[str]:
    """Files under `folder` (binary ones too) that contain one of `secrets`."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {redact_url(s)}" for s in secrets if s.encode() in data]
    return found


def text_holding(text: str, secrets: list[str]) -> list[str]:
    return [redact_url(s) for s in secrets if s in text]

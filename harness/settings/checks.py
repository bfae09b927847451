"""The range checks the settings dataclasses call next to their fields: each fails with one line that
names the key and what to set it to."""

from __future__ import annotations

from typing import Any, Iterable

from harness.errors import ConfigError


def integer(value: Any, key: str, least: int) -> None:
    """An integer with a floor (YAML's true/false are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key}={value} must be an integer >= {least}: fix {key}")


def positive(value: Any, key: str, kind: type = float) -> None:
    try:
        ok = not isinstance(value, bool) and kind(value) > 0 and kind(value) == float(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{key}={value} must be a positive {'integer' if kind is int else 'number'}: set {key} to a value above 0")


def one_of(value: Any, options: Iterable[Any], key: str, why: str = "") -> None:
    options = tuple(options)
    if value not in options:
        raise ConfigError(f"{key}={value} is not one of {', '.join(map(str, options))}: "
                          f"{why or f'set {key} to one of them'}")


def fraction(value: Any, key: str, low_open: bool, high_open: bool) -> None:
    v = float(value)
    if (v < 0 or (low_open and v == 0)) or (v > 1 or (high_open and v == 1)):
        raise ConfigError(f"{key}={value} must lie in {'(' if low_open else '['}0, 1{')' if high_open else ']'}: set it inside that range")


def flag(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be true or false: fix {key}")


def path_part(name: Any, key: str) -> None:
    """A name that is one part of a path (a tuning run's stored name, a folder): no '/', backslash,
    control character or dots only."""
    text = str(name)
    bad = [c for c in text if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not text.strip() or text != text.strip() or bad or text in (".", ".."):
        why = f"contains {bad[0]!r}" if bad else "is empty, '.' or '..', or starts or ends with a space"
        raise ConfigError(f"{key}={text!r} {why}, but it is one part of a tuning run's name <study>/n<n_train>/<strategy>/t<run> "
                          f"and of folder names: use letters, digits, '-', '_' or '.', e.g. {key}=my-study")

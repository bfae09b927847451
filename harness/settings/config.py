"""The one door of every entry point: the composed config built into its settings dataclass and
checked once (types, then each group's own `check`), each mistake one line a person can act on."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.settings.glyphs import GlyphSettings

T = TypeVar("T")


def _plain(cfg: DictConfig) -> dict:
    """The composed config as plain values, every interpolation resolved (or one line naming the key)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except Exception as err:  # omegaconf's MissingMandatoryValue / InterpolationResolutionError
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(f"config value {key or ''} is missing or unresolvable ({str(err).splitlines()[0]}): set it "
                          f"on the command line, e.g. {key or 'data.root'}=...") from None


def _fits(value: Any, kind: Any) -> bool:
    """Whether a plain value fits a field's annotation (int is not bool; an int fits float)."""
    if kind is Any:
        return True
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(kind) or kind
    return isinstance(value, origin) if isinstance(origin, type) else True


def _build(cls: type[T], raw: Any, key: str) -> T:
    """A dataclass from a plain mapping: unknown keys refused, nested groups (and name -> group
    tables) built, lists as tuples where the field is a tuple. Values are taken as they are: `validate`
    names bad ones. A class may shape its raw mapping first (`from_config`)."""
    if cls is GlyphSettings:
        return GlyphSettings.from_config(raw)  # type: ignore[return-value]  # it parses and checks its values itself
    shape = getattr(cls, "from_config", None)
    if shape is not None:
        raw = shape(raw, key)
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}={raw!r} must be a group of settings: set its keys, e.g. {key}.<key>=...")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{_join(key, unknown[0])} is not a setting: remove it or fix its spelling "
                          f"(settings of {key or 'the entry point'}: {', '.join(names)})")
    values = {}
    for name in set(names) & set(raw):
        value, kind, where = raw[name], hints[name], _join(key, name)
        table = _table_of(kind)
        if dataclasses.is_dataclass(kind):
            value = _build(kind, value, where)
        elif table is not None and isinstance(value, dict):
            value = {k: _build(table, v, f"{where}.{k}") for k, v in value.items()}
        elif _is_tuple(kind) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _table_of(kind: Any) -> type | None:
    """The group type of a name -> group table (dict[str, StrategyConfig]), else None."""
    args = typing.get_args(kind)
    return args[1] if typing.get_origin(kind) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]) else None


def _is_tuple(kind: Any) -> bool:
    return kind is tuple or typing.get_origin(kind) is tuple or tuple in typing.get_args(kind)


def _check_types(cfg: Any, key: str) -> None:
    """Every plain field of one group has the type its annotation says (one line per mistake)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(kind) or _table_of(kind) is not None:
            continue
        if not _fits(value, kind):
            shown = str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise ConfigError(f"{_join(key, f.name)}={value!r} must be of type {shown}: fix {_join(key, f.name)}")


def _groups_of(cfg: Any, key: str):
    """(key, group) for `cfg` and every group below it, parents first."""
    yield key, cfg
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, GlyphSettings):
            continue  # checked as it was built (GlyphSettings.from_config)
        if dataclasses.is_dataclass(value):
            yield from _groups_of(value, _join(key, f.name))
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            for name, group in value.items():
                yield from _groups_of(group, f"{_join(key, f.name)}.{name}")


def validate(cfg: Any) -> None:
    """Every group's own checks (`check`, next to its fields), the entry point's last; a value of the
    wrong type is named as such. Called once per entry point, by `load`; library callers that build
    settings in Python call it themselves."""
    groups = list(_groups_of(cfg, ""))
    for key, group in groups[1:] + groups[:1]:
        try:
            if hasattr(group, "check"):
                group.check(key)
        except ConfigError:
            raise
        except (TypeError, ValueError):
            _check_types(group, key)  # names the value whose type broke the check
            raise
        _check_types(group, key)


def load(app: type[T], composed: DictConfig) -> T:
    """An entry point's settings (RunConfig, CellConfig, StudyAppConfig, ReportAppConfig) from its
    composed config, built and checked once."""
    settings = _build(app, _plain(composed), "")
    validate(settings)
    return settings

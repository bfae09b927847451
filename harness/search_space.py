"""Search spaces are config (conf/search_space/<strategy>.yaml): a name -> distribution table whose
entries say which config key they set. Parsed once, validated, then used to sample and apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from harness.errors import ConfigError

TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    name: str
    key: str  # the config key it sets, e.g. train.lr
    distribution: BaseDistribution


def _distribution(name: str, spec: dict) -> BaseDistribution:
    where = f"search_space.params.{name}"
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}.type={kind} is not one of {', '.join(TYPES)}: set it")
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices:
            raise ConfigError(f"{where}.choices is empty: list at least one choice")
        return CategoricalDistribution(list(choices))
    try:
        low, high = spec["low"], spec["high"]
    except KeyError as missing:
        raise ConfigError(f"{where} needs {missing.args[0]}: give low and high bounds") from None
    log, step = bool(spec.get("log", False)), spec.get("step")
    if not low < high:
        raise ConfigError(f"{where}: low={low} must be below high={high}: swap or widen the bounds")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0 (got {low}): raise low or set log=false")
    if log and step is not None:
        raise ConfigError(f"{where}: log=true and step cannot be combined: drop one")
    if kind == "int":
        if int(low) != low or int(high) != high:
            raise ConfigError(f"{where}: int bounds must be integers (got {low}, {high})")
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


class SearchSpace:
    def __init__(self, params: list[Param], recipe: dict[str, Any] | None = None):
        self.params = params
        self.recipe = recipe or {}

    @classmethod
    def from_config(cls, node: DictConfig, base: DictConfig | None = None) -> "SearchSpace":
        """Parse and check the table; with `base`, every key must exist in the run config."""
        raw = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        specs = raw.get("params") or {}
        if not specs:
            raise ConfigError("search_space.params is empty: choose a search_space or list parameters to tune")
        params = []
        for name, spec in specs.items():
            if not isinstance(spec, dict) or "key" not in spec:
                raise ConfigError(f"search_space.params.{name} needs a key (the config value it sets, e.g. train.lr)")
            if base is not None and OmegaConf.select(base, spec["key"], default="__absent__") == "__absent__":
                raise ConfigError(f"search_space.params.{name}.key={spec['key']} is not a config key of this run: fix the key")
            params.append(Param(name, str(spec["key"]), _distribution(name, spec)))
        # A parameter dropped from the shell (~search_space.params.warmup) drops out of the recipe too:
        # the run config's own value applies, as it does for every key outside the space.
        names = {p.name for p in params}
        recipe = {k: v for k, v in (raw.get("recipe") or {}).items() if k in names}
        return cls(params, recipe)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution for p in self.params}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        values = {}
        for p in self.params:
            d = p.distribution
            if isinstance(d, CategoricalDistribution):
                values[p.name] = trial.suggest_categorical(p.name, d.choices)
            elif isinstance(d, IntDistribution):
                values[p.name] = trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
            else:
                values[p.name] = trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)
        return values

    def recipe_within_space(self) -> dict[str, Any]:
        """The standard recipe moved inside the ranges (a user may have narrowed them)."""
        fitted = {}
        for p in self.params:
            if p.name not in self.recipe:
                continue
            value, d = self.recipe[p.name], p.distribution
            if isinstance(d, CategoricalDistribution):
                if value in d.choices:
                    fitted[p.name] = value
            else:
                fitted[p.name] = type(d.low)(min(max(value, d.low), d.high))
        return fitted

    def apply(self, cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
        """A copy of `cfg` with the sampled values written to their keys."""
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        for p in self.params:
            if p.name in values:
                OmegaConf.update(out, p.key, values[p.name], merge=False)
        return out

    def to_json(self) -> dict:
        """The space as stored with the study, so the report can flag bests at an edge."""
        return {p.name: {"key": p.key, "distribution": optuna.distributions.distribution_to_json(p.distribution)} for p in self.params}

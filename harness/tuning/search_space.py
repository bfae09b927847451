"""Search spaces are config (conf/search_space/<strategy>.yaml): a name -> distribution table whose
entries say which config key they set, optionally with a `when` condition on other parameters of
the space, plus named standard recipes. Parsed once, validated, then used to sample and apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from harness.errors import ConfigError
from harness.settings.schema import RunConfig, SearchSpaceConfig, T, has_path, replace_path

TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    name: str
    key: str  # the config key it sets, e.g. train.lr
    distribution: BaseDistribution
    # parameter name -> the values it must have for this one to be sampled (all must hold)
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def applies(self, values: Mapping[str, Any]) -> bool:
        """True when every condition holds on `values`; a parent that was not sampled fails it."""
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when.items())


@dataclass(frozen=True)
class Recipe:
    """A standard configuration enqueued as one of a cell's first trials."""

    name: str
    values: dict[str, Any]


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


def _when(name: str, raw: Any, dists: Mapping[str, BaseDistribution]) -> dict[str, tuple[Any, ...]]:
    """A `when` table checked against the space: known categorical parents, values among their choices."""
    where = f"search_space.params.{name}.when"
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}={raw} must map parameter names to a value or a list of values, e.g. {{mode: freeze}}")
    out = {}
    for parent, wanted in raw.items():
        if parent not in dists:
            raise ConfigError(f"{where} names {parent}, not a parameter of this space: use one of {', '.join(dists)}")
        d = dists[parent]
        if not isinstance(d, CategoricalDistribution):
            raise ConfigError(f"{where}.{parent}: {parent} is not categorical; a condition needs a categorical parameter")
        values = tuple(wanted) if isinstance(wanted, (list, tuple)) else (wanted,)
        if not values:
            raise ConfigError(f"{where}.{parent} is empty: give at least one of {parent}'s choices")
        for v in values:
            if v not in d.choices:
                raise ConfigError(f"{where}.{parent}={v} is not among {parent}'s choices {list(d.choices)}: fix the value, "
                                  f"or, having narrowed {parent}'s choices, narrow this condition too or drop {name} "
                                  f"(~search_space.params.{name})")
        out[str(parent)] = values
    return out


def _dependency_order(params: list[Param]) -> list[Param]:
    """Parents before the parameters conditioned on them (declared order otherwise); refuses cycles."""
    by_name = {p.name: p for p in params}
    done: dict[str, bool] = {}  # False while visiting, True once placed
    order: list[Param] = []

    def visit(p: Param, path: list[str]) -> None:
        if done.get(p.name) is True:
            return
        if done.get(p.name) is False:
            cycle = " -> ".join([*path[path.index(p.name):], p.name])
            raise ConfigError(f"search_space.params.{p.name}.when forms a cycle ({cycle}): remove one of these conditions")
        done[p.name] = False
        for parent in p.when:
            visit(by_name[parent], [*path, p.name])
        done[p.name] = True
        order.append(p)

    for p in params:
        visit(p, [])
    return order


def _recipe_table(raw: Any) -> list[tuple[str, dict]]:
    """`recipes` as (name, values) in order: a name -> values mapping (Hydra merges it key by key)
    or a list of value tables, each with its `name`."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or "name" not in entry:
                raise ConfigError(f"search_space.recipes[{i}] needs a name: give each listed recipe `name: ...`")
            items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
    else:
        raise ConfigError(f"search_space.recipes={raw} must map recipe names to parameter values")
    out = []
    for name, values in items:
        if not isinstance(values, dict):
            raise ConfigError(f"search_space.recipes.{name}={values} must map parameter names to values")
        out.append((str(name), values))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"search_space.recipes: names repeat ({', '.join(names)}): give each recipe its own name")
    return out


class SearchSpace:
    def __init__(self, params: list[Param], recipes: list[Recipe] | None = None):
        self.params = params
        self.order = _dependency_order(params)  # the order parameters are sampled in
        self.recipes = recipes or []

    @classmethod
    def from_config(cls, node: SearchSpaceConfig | None, base: RunConfig | None = None) -> "SearchSpace":
        """Parse and check the table; with `base`, every key must exist in the run config."""
        raw = {"params": node.params, "recipes": node.recipes} if node is not None else {}
        specs = raw.get("params") or {}
        if not specs:
            raise ConfigError("search_space.params is empty: choose a search_space or list parameters to tune")
        dists: dict[str, BaseDistribution] = {}
        for name, spec in specs.items():
            if not isinstance(spec, dict) or "key" not in spec:
                raise ConfigError(f"search_space.params.{name} needs a key (the config value it sets, e.g. train.lr)")
            if base is not None and not has_path(base, str(spec["key"])):
                raise ConfigError(f"search_space.params.{name}.key={spec['key']} is not a config key of this run: fix the key")
            dists[name] = _distribution(name, spec)
        params = [Param(name, str(spec["key"]), dists[name], _when(name, spec.get("when"), dists))
                  for name, spec in specs.items()]
        # A parameter dropped from the shell (~search_space.params.warmup) drops out of the recipes too:
        # the run config's own value applies, as it does for every key outside the space.
        recipes = [Recipe(name, {k: v for k, v in values.items() if k in dists})
                   for name, values in _recipe_table(raw.get("recipes"))]
        return cls(params, recipes)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample in dependency order; a parameter whose condition fails is not suggested at all,
        so it is absent from trial.params (the sampler and the report see only what was used)."""
        values: dict[str, Any] = {}
        for p in self.order:
            if not p.applies(values):
                continue
            d = p.distribution
            if isinstance(d, CategoricalDistribution):
                values[p.name] = trial.suggest_categorical(p.name, d.choices)
            elif isinstance(d, IntDistribution):
                values[p.name] = trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
            else:
                values[p.name] = trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)
        return values

    def fit(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` moved inside the ranges (a user may have narrowed them), without parameters
        whose condition fails on them. A categorical value outside the choices is dropped (sampled
        instead); a parameter conditioned on a dropped one is kept: it applies if the draw matches."""
        fitted: dict[str, Any] = {}
        unused: set[str] = set()  # parameters this configuration does not use
        for p in self.order:
            if any(parent in unused or (parent in fitted and fitted[parent] not in allowed)
                   for parent, allowed in p.when.items()):
                unused.add(p.name)
                continue
            if p.name not in values:
                continue
            value, d = values[p.name], p.distribution
            if isinstance(d, CategoricalDistribution):
                if value in d.choices:
                    fitted[p.name] = value
            else:
                fitted[p.name] = type(d.low)(min(max(value, d.low), d.high))
        return fitted

    def recipes_within_space(self) -> list[Recipe]:
        """The standard recipes, each fitted to the space (see `fit`); empty ones left out."""
        fitted = [Recipe(r.name, self.fit(r.values)) for r in self.recipes]
        return [r for r in fitted if r.values]

    def apply(self, cfg: T, values: dict[str, Any]) -> T:
        """A copy of `cfg` with the sampled values written to their keys (others keep the config's own)."""
        for p in self.params:
            if p.name in values:
                cfg = replace_path(cfg, p.key, values[p.name])
        return cfg

    def to_json(self) -> dict:
        """The space as stored with the study, so the report can flag bests at an edge."""
        out = {}
        for p in self.params:
            out[p.name] = {"key": p.key, "distribution": optuna.distributions.distribution_to_json(p.distribution)}
            if p.when:
                out[p.name]["when"] = {parent: list(values) for parent, values in p.when.items()}
        return out

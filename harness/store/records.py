"""What tuning stores beside Optuna's own data, named once: a cell's identity, the study and trial
records read back with their coercions, the writers, and the one opening of the storage from config.

docs/design.md's storage contract ("What the storage holds") lives here: the keys are written and read by these functions only, so
a reader never guesses a key or a type, and this module (with harness/store/storage.py under it) is the
only one that touches Optuna's private attributes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from harness.errors import ConfigError
from harness.settings.schema import CellConfig, StorageConfig
from harness.store.storage import open_storage as open_storage_url
from harness.store.storage import redact_url, resolve_url

CELL_ATTRS = ("study", "strategy", "n_train", "tuning")  # the study user attrs that make an Optuna study a cell
# Trials whose work is spent (and counted against the budget), unless interrupted or retried.
SPENT_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
COMPUTE_KEYS = ("flops", "train_flops", "eval_flops", "wall_s", "flops_per_step", "steps", "samples_seen")
# <study>/n<n_train, 6 digits>/<strategy>/t<run>: names sort by study, size, strategy and run (in
# optuna-dashboard too).
_NAME = re.compile(r"^(?P<study>.+)/n(?P<n_train>\d+)/(?P<strategy>[^/]+)/t(?P<tuning>\d+)$")


# ============================================================================ cell identity


@dataclass(frozen=True)
class CellId:
    """One tuning run of one cell of a study (strategy x n_train; tuning run k, 0-based): one Optuna
    study. Stored as study attrs; the name is for display."""

    study: str
    strategy: str
    n_train: int
    tuning: int = 0

    @property
    def name(self) -> str:
        """The Optuna study name, <study>/n<n_train>/<strategy>/t<k> with n_train in six digits, so a
        sorted list (optuna-dashboard's) reads by study, size, strategy and tuning run."""
        return f"{self.study}/n{self.n_train:06d}/{self.strategy}/t{self.tuning}"

    @property
    def cell(self) -> tuple[str, int]:
        return self.strategy, self.n_train

    @classmethod
    def parse(cls, name: str) -> CellId | None:
        """The cell a study name spells, or None: for messages about stores without the attrs."""
        match = _NAME.match(name)
        return None if match is None else cls(match["study"], match["strategy"], int(match["n_train"]),
                                              int(match["tuning"]))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> CellId | None:
        """The cell a study's user attrs name; None unless all four are there (non-empty strings, a
        whole number of examples, a tuning run >= 0)."""
        study, strategy, n_train, tuning = (attrs.get(k) for k in CELL_ATTRS)
        if not (isinstance(study, str) and study and isinstance(strategy, str) and strategy):
            return None
        if isinstance(n_train, bool) or not isinstance(n_train, (int, float)) or not float(n_train).is_integer():
            return None
        if isinstance(tuning, bool) or not isinstance(tuning, int) or tuning < 0:
            return None
        return cls(study, strategy, int(n_train), tuning)

    def attrs(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "n_train": self.n_train, "study": self.study, "tuning": self.tuning}


def study_part(name: str) -> str:
    """The study a stored study's name belongs to (its first part), for messages about stores without the attrs."""
    cell = CellId.parse(name)
    return cell.study if cell is not None else name.split("/", 1)[0]


# ============================================================================ value coercions


def num(v: Any, default: float = math.nan) -> float:
    """A stored number as a float, `default` for a missing, boolean, NaN or non-numeric value."""
    if isinstance(v, bool) or v is None:
        return default
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if not math.isnan(f) else default


def as_number(v: Any) -> int | float | None:
    """A number as JSON decoded it (an int stays an int, so it prints as written); None unless a
    finite number. For stored attrs and for the report's own files (crossover.json) alike."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _mapping(v: Any) -> dict[str, Any] | None:
    return dict(v) if isinstance(v, Mapping) else None


def known_flops(v: Any) -> float | None:
    """A stored FLOPs count, or None when it is missing or not a non-negative number (never 0 for it)."""
    f = num(v)
    return f if math.isfinite(f) and f >= 0 else None


def _text_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


# ============================================================================ re-run records
OK, FAILED, DIVERGED, COLLAPSED = "ok", "failed", "diverged", "collapsed"
NOT_COUNTED = (FAILED, DIVERGED)  # re-runs that did not finish as measured (a diverged one counts at chance)


def encode_correct(correct: np.ndarray) -> str:
    """A bool vector as base64 text of its packed bits: JSON-safe and 8 examples to a byte."""
    bits = np.asarray(correct, dtype=bool).reshape(-1)
    return base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def decode_correct(record: Mapping) -> np.ndarray | None:
    """The bool vector of a stored record (length record["n_test"]), or None when it is absent,
    malformed or of the wrong length: stored data is read, never trusted, and never raises here."""
    if not isinstance(record, Mapping):
        return None
    text, n = record.get("test_correct"), record.get("n_test")
    if not isinstance(text, str) or isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    n = int(n)
    if len(raw) != (n + 7) // 8:
        return None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
    if bits[n:].any():  # packbits pads with zeros: anything else was not written by encode_correct
        return None
    return bits[:n].astype(bool)


def _float_or_none(v: Any) -> float | None:
    x = num(v)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class RerunRecord:
    """One re-run of a tuning run's best configuration: an entry of the study's `final` attr
    (docs/design.md, "What the storage holds"). A value the entry lacks or holds malformed reads as
    None (0 for costs; a missing status as ok): a hand-edited storage is read, not refused."""

    status: str = OK  # ok | failed | diverged | collapsed
    reason: str | None = None
    probe_acc: float | None = None
    replicate: int | None = None
    seed: int | None = None
    subset: int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    chance: float | None = None  # failed and diverged re-runs: the accuracy of a guess
    flops: float = 0.0
    wall_s: float = 0.0
    n_test: int | None = None
    test_split: str | None = None
    test_correct: str | None = None  # per-example test correctness, packed bits in base64 (encode_correct)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> RerunRecord:
        """A stored entry, read with coercions: a missing or malformed value is None (0 for costs)."""
        status = raw.get("status")
        reason, split, bits = raw.get("reason"), raw.get("test_split"), raw.get("test_correct")
        return cls(status=str(status) if status is not None else OK, reason=None if reason is None else str(reason),
                   probe_acc=_float_or_none(raw.get("probe_acc")), replicate=_int_or_none(raw.get("replicate")),
                   seed=_int_or_none(raw.get("seed")), subset=_int_or_none(raw.get("subset")),
                   val_acc=_float_or_none(raw.get("val_acc")), test_acc=_float_or_none(raw.get("test_acc")),
                   chance=_float_or_none(raw.get("chance")), flops=_float_or_none(raw.get("flops")) or 0.0,
                   wall_s=_float_or_none(raw.get("wall_s")) or 0.0,
                   n_test=_int_or_none(raw.get("n_test")), test_split=None if split is None else str(split),
                   test_correct=bits if isinstance(bits, str) else None)

    def to_json(self) -> dict[str, Any]:
        """The stored form (JSON-safe); `chance` only where a failure set it, as written before."""
        out = dataclasses.asdict(self)
        if self.chance is None:
            del out["chance"]
        return out

    def value(self, metric: str) -> float:
        """The re-run's `metric` (test_acc, val_acc, probe_acc); NaN when it has none."""
        v = getattr(self, metric)
        return math.nan if v is None else float(v)

    @property
    def counted(self) -> bool:
        """Whether it finished as measured: not failed, not diverged."""
        return self.status not in NOT_COUNTED

    def correct(self) -> np.ndarray | None:
        """Its per-example test correctness, or None when absent or malformed."""
        return decode_correct({"test_correct": self.test_correct, "n_test": self.n_test})


# ============================================================================ a cell's weights

OWN = "own pretraining"  # the weights origin of harness-pretrain's checkpoints (the others: file, hub)
NOT_RECORDED = "not recorded"  # the origin of a fine-tune run without a (well-formed) `weights` attr
UNKNOWN_FROM = "unknown"  # pretrain_flops_from where nobody measured or declared them


@dataclass(frozen=True)
class PretrainRecord:
    """A fine-tune run's own pretraining (harness-pretrain's meta): its `pretrain` attr. `key` tells
    pretrainings apart: the config hash, or for a record without one, the stored record as JSON."""

    key: str
    flops: float | None = None  # None: missing or not a non-negative number
    wall_s: float = 0.0
    source_val_acc: float = math.nan
    steps: int | None = None
    config_hash: str | None = None
    source_classes: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, raw: Any) -> PretrainRecord | None:
        """The stored attr (or harness-pretrain's meta), read with coercions; None when it is not a record."""
        if not isinstance(raw, Mapping):
            return None
        config_hash, classes = raw.get("config_hash"), raw.get("source_classes")
        return cls(key=str(config_hash or json.dumps(dict(raw), sort_keys=True, default=str)),
                   flops=known_flops(raw.get("flops")), wall_s=num(raw.get("wall_s"), 0.0),
                   source_val_acc=num(raw.get("source_val_acc")), steps=_int_or_none(raw.get("steps")),
                   config_hash=_text_or_none(config_hash),
                   source_classes=tuple(classes) if isinstance(classes, (list, tuple)) else None)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"flops": self.flops, "wall_s": self.wall_s, "source_val_acc": self.source_val_acc, "steps": self.steps,
                "config_hash": self.config_hash,
                "source_classes": None if self.source_classes is None else list(self.source_classes)}


@dataclass(frozen=True)
class WeightsRecord:
    """Where a fine-tune run's weights came from (`origin`: own pretraining, file, hub; `ref`: the
    config hash, path or tag) and their pretraining FLOPs: measured for own pretraining, declared
    (strategy.pretrain_flops) for a file or a hub tag, else None (unknown, never 0). Its `weights` attr."""

    origin: str
    ref: str | None = None
    pretrain_flops: float | None = None
    pretrain_flops_from: str | None = UNKNOWN_FROM  # measured | declared | unknown

    @classmethod
    def of(cls, raw: Any) -> WeightsRecord:
        """The stored attr, read with coercions; origin "not recorded" when the attr is missing or malformed."""
        if isinstance(raw, Mapping):
            return cls(origin=str(raw.get("origin", NOT_RECORDED)), ref=_text_or_none(raw.get("ref")),
                       pretrain_flops=known_flops(raw.get("pretrain_flops")),
                       pretrain_flops_from=_text_or_none(raw.get("pretrain_flops_from", UNKNOWN_FROM)))
        return cls(NOT_RECORDED)

    @classmethod
    def of_settings(cls, cfg: CellConfig, pretrain: PretrainRecord | None) -> WeightsRecord | None:
        """What a cell's settings start it from (None for scratch); `pretrain` for strategy.weights=source."""
        if cfg.strategy.name != "finetune":
            return None
        weights = cfg.strategy.weights
        if weights == "source":  # the pretrain attr, from harness-pretrain's meta
            assert pretrain is not None
            return cls(OWN, pretrain.config_hash, pretrain.flops, "measured")
        declared = cfg.strategy.pretrain_flops
        origin, ref = ("hub", cfg.model.name) if weights == "hub" else ("file", str(Path(weights).expanduser()))
        return cls(origin, ref, None if declared is None else float(declared),
                   UNKNOWN_FROM if declared is None else "declared")

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return dataclasses.asdict(self)


# ============================================================================ a tuning run's limits


@dataclass(frozen=True)
class ReferenceTrial:
    """The trial a FLOPs budget was sized with (harness/tuning/budget.py's reference_trial)."""

    trial_flops: float
    step_flops: float
    steps: int
    steps_from: str
    validations: int
    val_flops: float
    batch_size: int
    model: str

    @classmethod
    def of(cls, stored: Any) -> ReferenceTrial | None:
        if not isinstance(stored, Mapping) or any(f.name not in stored for f in dataclasses.fields(cls)):
            return None
        return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BudgetRecord:
    """A tuning run's budget as stored: its limits (None: no such limit), and with kind "flops" the
    reference trial that sized max_flops. harness/tuning/budget.py's Budget adds the behaviour."""

    n_trials: int | None
    max_flops: float | None
    max_wall_s: float | None
    kind: str = "trials"
    reference: ReferenceTrial | None = None

    @classmethod
    def of(cls, stored: Any) -> BudgetRecord | None:
        if not isinstance(stored, Mapping):
            return None
        kind = stored.get("kind", "trials")
        return cls(as_number(stored.get("n_trials")), as_number(stored.get("max_flops")), as_number(stored.get("max_wall_s")),
                   kind if isinstance(kind, str) else "trials", ReferenceTrial.of(stored.get("reference")))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_trials": self.n_trials, "max_flops": self.max_flops, "max_wall_s": self.max_wall_s}
        if self.kind != "trials":  # a trials budget is stored as it always was
            out.update(kind=self.kind, reference=None if self.reference is None else self.reference.to_json())
        return out

    def limits(self) -> str:
        """The limits as one JSON text, without the reference trial (the report names that once per size)."""
        return json.dumps({k: v for k, v in self.to_json().items() if k != "reference"}, sort_keys=True)


@dataclass(frozen=True)
class PrunerRecord:
    """The pruner a tuning run was built with (harness/tuning/pruning.py's pruner_attrs): the report
    checks that both strategies' pruners plan for the same max_resource."""

    name: str | None
    max_resource: int | None
    max_resource_from: str | None = None  # hyperband: "pruner.max_resource" or "steps.high"
    settings: Mapping[str, Any] = field(default_factory=dict)  # the pruner's own settings (PrunerConfig.settings)

    @classmethod
    def of(cls, stored: Any) -> PrunerRecord | None:
        if not isinstance(stored, Mapping):
            return None
        own = {k: v for k, v in stored.items() if k not in ("name", "max_resource", "max_resource_from")}
        return cls(_text_or_none(stored.get("name")), _int_or_none(stored.get("max_resource")),
                   _text_or_none(stored.get("max_resource_from")), own)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings, "max_resource": self.max_resource,
                "max_resource_from": self.max_resource_from}


@dataclass(frozen=True)
class Caps:
    """What harness-study may still add to a cell: tuning runs, re-runs per tuning run, and what a
    tuning run costs in trials; the verdict's statements of what would decide a size name them.
    The defaults are what the verdict assumes where no caps are given or stored: harness-study's
    max_tunings and max_seeds, and 10 trials a tuning run."""

    max_tunings: int = 6
    max_seeds: int = 10
    trials_per_run: int = 10

    @classmethod
    def of(cls, stored: Any) -> Caps | None:
        if not isinstance(stored, Mapping):
            return None
        given = {f.name: _int_or_none(stored.get(f.name)) for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in given.items() if v is not None})

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CellAttrs:
    """The attrs a new tuning run is stored with (docs/design.md, "What the storage holds"): harness-tune
    gathers the values, `to_json` is what is written (write_cell_attrs), in this order."""

    cell: CellId
    budget: BudgetRecord
    search_space: Mapping[str, Any]
    n_val: int | None
    n_test: int | None
    model: str
    data: str
    selection: str
    pruner: PrunerRecord
    draw: int
    seed: int
    caps: Caps
    cv_folds: int | None = None  # tune.selection=cv only
    pretrain: PretrainRecord | None = None  # strategy.weights=source only
    weights: WeightsRecord | None = None  # fine-tune only

    def to_json(self) -> dict[str, Any]:
        out = {**self.cell.attrs(), "budget": self.budget.to_json(), "search_space": dict(self.search_space),
               "n_val": self.n_val, "n_test": self.n_test, "model": self.model, "data": self.data,
               "selection": self.selection, "pruner": self.pruner.to_json(), "draw": self.draw, "seed": self.seed,
               "caps": self.caps.to_json()}
        if self.cv_folds is not None:
            out["cv_folds"] = self.cv_folds
        if self.pretrain is not None:
            out["pretrain"] = self.pretrain.to_json()
        if self.weights is not None:
            out["weights"] = self.weights.to_json()
        return out


# ============================================================================ tuning-run records


@dataclass(frozen=True)
class TuningRunRecord:
    """One tuning run of a cell (one Optuna study): its attrs, typed, as harness-tune and the re-runs wrote them (docs/design.md)."""

    name: str
    attrs: Mapping[str, Any]

    @classmethod
    def of(cls, study: optuna.Study | optuna.study.FrozenStudy) -> TuningRunRecord:
        return cls(study.study_name, dict(study.user_attrs))

    @property
    def cell(self) -> CellId | None:
        return CellId.from_attrs(self.attrs)

    @property
    def n_val(self) -> int | None:
        return _int_or_none(self.attrs.get("n_val"))

    @property
    def selection(self) -> str:
        """How the configuration was chosen: "holdout" (the validation split) or "cv"."""
        return "cv" if self.attrs.get("selection") == "cv" else "holdout"

    @property
    def has_final(self) -> bool:
        return "final" in self.attrs

    @property
    def final(self) -> list[RerunRecord]:
        """Re-runs of the best configuration (empty until tuning re-ran it)."""
        final = self.attrs.get("final")
        return [RerunRecord.of(r) for r in final if isinstance(r, Mapping)] if isinstance(final, list) else []

    @property
    def best_trial(self) -> Any:
        """The number of the trial the re-runs are of, as stored (None before any re-run)."""
        return self.attrs.get("best_trial")

    @property
    def best_params(self) -> dict[str, Any] | None:
        return _mapping(self.attrs.get("best_params"))

    @property
    def budget(self) -> BudgetRecord | None:
        return BudgetRecord.of(self.attrs.get("budget"))

    @property
    def pruner(self) -> PrunerRecord | None:
        return PrunerRecord.of(self.attrs.get("pruner"))

    @property
    def caps(self) -> Caps | None:
        """What harness-study may still add to the cell, None before cells stored it."""
        return Caps.of(self.attrs.get("caps"))

    @property
    def n_test(self) -> int | None:
        return _int_or_none(self.attrs.get("n_test"))

    @property
    def model(self) -> str | None:
        return _text_or_none(self.attrs.get("model"))

    @property
    def data(self) -> str | None:
        return _text_or_none(self.attrs.get("data"))

    @property
    def pretrain(self) -> PretrainRecord | None:
        return PretrainRecord.of(self.attrs.get("pretrain"))

    @property
    def weights(self) -> WeightsRecord:
        """A fine-tune run's weights; read it for fine-tune runs only."""
        return WeightsRecord.of(self.attrs.get("weights"))

    @property
    def search_space(self) -> dict[str, Any] | None:
        return _mapping(self.attrs.get("search_space"))


def cell_studies(storage: optuna.storages.BaseStorage, study: str | None = None) -> list[tuple[TuningRunRecord, CellId]]:
    """The cells the storage holds (of `study` when given), sorted by name, found by their attrs
    alone: ``get_all_studies()`` reads every study's attrs and no trial (one query on an RDB)."""
    found = []
    for s in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        record = TuningRunRecord.of(s)
        cell = record.cell
        if cell is not None and (study is None or cell.study == study):
            found.append((record, cell))
    return found


def n_trials_of(storage: optuna.storages.BaseStorage, name: str) -> int:
    """How many trials a stored study has, without reading them."""
    return storage.get_n_trials(storage.get_study_id_from_name(name))


# ============================================================================ trial records


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: Optuna's own fields plus the attrs harness-tune wrote, typed. Numbers
    nobody recorded are NaN; `spent_flops` and `spent_wall_s` count them as 0. `user_attrs` keeps
    the attrs as stored, for exports and comparisons, not for reading a value (use the fields)."""

    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    intermediate_values: dict[int, float]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration: timedelta | None
    compute: dict[str, float]
    interrupted: bool
    recipe: bool
    recipe_name: Any
    fail_reason: Any
    retry_history: tuple[int, ...] = field(default=())
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    members: int = 1  # trials trained together as one model with this one (harness/tuning/together.py), itself included

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord:
        ua = t.user_attrs
        return cls(number=t.number, state=t.state, value=t.value, params=t.params, distributions=t.distributions,
                   intermediate_values=t.intermediate_values, datetime_start=t.datetime_start,
                   datetime_complete=t.datetime_complete, duration=t.duration,
                   compute={key: num(ua.get(key)) for key in COMPUTE_KEYS},
                   interrupted=bool(ua.get("interrupted")), recipe=bool(ua.get("recipe", False)),
                   recipe_name=ua.get("recipe_name"), fail_reason=ua.get("fail_reason"),
                   # read from the system attrs directly to skip the callback's experimental warning
                   retry_history=tuple(t.system_attrs.get("retry_history", ())), user_attrs=dict(ua),
                   members=max(1, _int_or_none(ua.get("members")) or 1))

    @property
    def flops(self) -> float:
        return self.compute["flops"]

    @property
    def wall_s(self) -> float:
        return self.compute["wall_s"]

    @property
    def steps(self) -> float:
        return self.compute["steps"]

    @property
    def spent_flops(self) -> float:
        return num(self.flops, 0.0)

    @property
    def spent_wall_s(self) -> float:
        return num(self.wall_s, 0.0)


def trial_records(trials: Iterable[FrozenTrial]) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in trials]


# ============================================================================ budget accounting


def counted_trials(trials: Iterable[FrozenTrial]) -> list[TrialRecord]:
    """The trials a cell's budget counts. Interrupted trials and killed workers' trials that were
    re-queued (the storage's RetryHeartbeatStaleTrialCallback) are not verdicts on their parameters:
    their re-run counts instead (a trial killed max_retry times counts)."""
    records = trial_records(trials)
    retried = {n for r in records for n in r.retry_history}
    return [r for r in records if r.state in SPENT_STATES and not r.interrupted and r.number not in retried]


def spent(trials: Iterable[FrozenTrial]) -> dict[str, float]:
    """What a cell's trials have spent of its budget: trials, FLOPs and wall time."""
    counted = counted_trials(trials)
    return {"n_trials": len(counted), "flops": sum(r.spent_flops for r in counted),
            "wall_s": sum(r.spent_wall_s for r in counted)}


# ============================================================================ writers


def write_study_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        study.set_user_attr(key, value)


def write_cell_attrs(study: optuna.Study, attrs: CellAttrs) -> None:
    """A new tuning run's attrs: what makes its Optuna study a cell, and what the report reads of it."""
    write_study_attrs(study, attrs.to_json())


def write_final(study: optuna.Study, final: list[RerunRecord], best_params: dict[str, Any] | None = None,
                best_trial: int | None = None) -> None:
    """The re-runs of the best; `best_trial` last: a worker dying before it leaves the re-run undone."""
    study.set_user_attr("final", [r.to_json() for r in final])
    if best_params is not None:
        study.set_user_attr("best_params", best_params)
    if best_trial is not None:
        study.set_user_attr("best_trial", best_trial)


def write_compute(trial: optuna.Trial, compute: Mapping[str, float]) -> None:
    """A trial's compute, under the keys of COMPUTE_KEYS that `compute` has."""
    for key in COMPUTE_KEYS:
        if key in compute:
            trial.set_user_attr(key, compute[key])


def write_members(trial: optuna.Trial, members: int) -> None:
    """How many trials (of the cell's tuning runs) trained together as one model with this one."""
    trial.set_user_attr("members", members)


def write_failure(trial: optuna.Trial, reason: str, flops: float, wall_s: float, flops_per_step: float) -> None:
    trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr("flops", flops)
    trial.set_user_attr("wall_s", wall_s)
    trial.set_user_attr("flops_per_step", flops_per_step)


def write_interrupted(trial: optuna.Trial) -> None:
    """Not a verdict on the parameters: the budget does not count it (counted_trials)."""
    trial.set_user_attr("fail_reason", "interrupted")
    trial.set_user_attr("interrupted", True)


def recipe_attrs(name: str) -> dict[str, Any]:
    """The user attrs of an enqueued recipe's trial."""
    return {"recipe": True, "recipe_name": name}


def warm_attrs(name: str) -> dict[str, Any]:
    """The user attrs of an enqueued neighbour's winner (tune.warm_start): which size it came from."""
    return {"warm_from": name}


def retry_attrs(number: int) -> dict[str, Any]:
    """The user attrs of the re-queued copy of interrupted trial `number`."""
    return {"retry_of": number}


# ============================================================================ Optuna internals


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study object reads and writes (Optuna keeps it private)."""
    return study._storage


def trial_id_of(trial: optuna.Trial) -> int:
    """The storage's id of a live trial (what heartbeats are recorded against)."""
    return trial._trial_id


# ============================================================================ opening from config


def open_storage(settings: StorageConfig, *, heartbeats: bool = True) -> optuna.storages.RDBStorage:
    """The storage the config names. A tuning worker opens it with heartbeats (dead peers' trials are
    failed and retried); everything else, `heartbeats=False`."""
    if not heartbeats:
        return open_storage_url(settings.url, heartbeat_interval=None, sqlite_wal=settings.wal)
    beat, grace = settings.heartbeat_interval, settings.grace_period
    return open_storage_url(settings.url, heartbeat_interval=int(beat) if beat else None,
                            grace_period=int(grace) if grace else None, max_retry=settings.max_retry,
                            sqlite_wal=settings.wal)


def open_existing(url: str, sqlite_wal: bool) -> tuple[optuna.storages.RDBStorage, str]:
    """Open an existing storage for reading, with its URL as messages show it; a SQLite path that
    does not exist is an error, not a new file."""
    url = resolve_url(url)
    shown = redact_url(url)
    parsed = make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        raise ConfigError(
            f"storage {shown}: no such database file {database!r}: point storage.url at the "
            "database the tuning wrote (e.g. sqlite:///outputs/harness.db)"
        )
    return open_storage_url(url, heartbeat_interval=None, sqlite_wal=sqlite_wal), shown

"""A study's cells as the report sees them (one Optuna study per tuning run, found by its user attrs through
harness/store/records.py, which decodes every stored record), their re-run results and the pretrainings
their weights came from (`Pretraining`), plus the constants and small value helpers the other report
modules share."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.trial import TrialState

from harness.errors import ConfigError
from harness.store.records import (CELL_ATTRS, DIVERGED, OWN, PretrainRecord, RerunRecord, TrialRecord, TuningRunRecord,
                                   WeightsRecord, cell_studies, study_part)
from harness.report.noise import Replicates

optuna.logging.set_verbosity(optuna.logging.WARNING)

STRATEGIES = ("finetune", "scratch")
LABELS = {"finetune": "fine-tune", "scratch": "from scratch"}
UNKNOWN = "unknown"  # what the report says for FLOPs nobody measured or declared (never 0)


@dataclass(frozen=True)
class Cell:
    """One cell (strategy x n_train) of a study, as stored: the study's attrs and its trials (given
    as Optuna's FrozenTrial or as records, kept as harness.store.records.TrialRecord)."""

    name: str
    strategy: str
    n_train: int
    attrs: dict[str, Any]
    trials: list[TrialRecord]
    tuning: int = 0  # which tuning run of the cell (one Optuna study each)

    def __post_init__(self) -> None:
        trials = [t if isinstance(t, TrialRecord) else TrialRecord.of(t) for t in self.trials]
        object.__setattr__(self, "trials", trials)

    @property
    def record(self) -> TuningRunRecord:
        return TuningRunRecord(self.name, self.attrs)

    @property
    def n_val(self) -> int | None:
        return self.record.n_val

    @property
    def selection(self) -> str:
        """How the configuration was chosen: "holdout" (the validation split) or "cv"."""
        return self.record.selection

    @property
    def n_labelled(self) -> int:
        """Labels the cell used: n_train, plus the validation split that selected its configuration
        (Perez et al. 2021); cross-validation inside n_train adds none."""
        return self.n_train + (self.n_val or 0 if self.selection == "holdout" else 0)

    @property
    def n_scored(self) -> int | None:
        """Examples each trial's value is measured on: the validation split, or n_train under cv."""
        return self.n_train if self.selection == "cv" else self.n_val

    @property
    def final(self) -> list[RerunRecord]:
        """Re-runs of the best configuration (empty until tuning re-ran it)."""
        return self.record.final

    @property
    def pretrain(self) -> PretrainRecord | None:
        return self.record.pretrain

    @property
    def weights(self) -> WeightsRecord | None:
        """Where a fine-tune cell's weights came from and their pretraining FLOPs (records.WeightsRecord);
        None for a scratch cell."""
        return self.record.weights if self.strategy == "finetune" else None

    @property
    def pretrain_flops(self) -> float | None:
        """FLOPs of the pretraining this cell's start cost: 0 for scratch, None when unknown."""
        w = self.weights
        return 0.0 if w is None else w.pretrain_flops

    @property
    def spent_flops(self) -> float:
        """Training FLOPs the cell has cost: every trial (pruned and failed too) and every re-run."""
        return float(sum(t.spent_flops for t in self.trials)
                     + sum(r.flops for r in self.final))

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    def complete(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]

    def best_trial(self) -> TrialRecord | None:
        """The trial tuning re-ran (``best_trial`` attr), else the best complete trial."""
        complete = self.complete()
        wanted = self.record.best_trial
        for t in complete:
            if t.number == wanted:
                return t
        return max(complete, key=lambda t: t.value, default=None)

    def best_params(self) -> dict[str, Any]:
        params = self.record.best_params
        if params is not None:
            return params
        best = self.best_trial()
        return dict(best.params) if best else {}

    def search_space(self) -> dict[str, BaseDistribution]:
        """The space stored with the cell; failing that, the distributions the trials used."""
        space: dict[str, BaseDistribution] = {}
        stored = self.record.search_space
        if stored is not None:
            for name, spec in stored.items():
                try:
                    raw = spec["distribution"] if isinstance(spec, Mapping) else spec
                    space[name] = json_to_distribution(raw if isinstance(raw, str) else json.dumps(raw))
                except (KeyError, TypeError, ValueError):
                    continue
        if not space:
            for t in self.trials:
                for name, dist in t.distributions.items():
                    space.setdefault(name, dist)
        return space


def load_cells(storage: optuna.storages.BaseStorage, study: str, shown_url: str) -> list[Cell]:
    """All cells of `study`, sorted by (strategy, n_train); ConfigError if there are none.

    A cell is identified by its Optuna study's user attrs ``study``, ``strategy`` and ``n_train``
    (harness/store/records.py, never by the study's name, which is for display only); a study without
    those attrs is not a cell. Only the matching studies' trials are read."""
    found = cell_studies(storage)
    cells: list[Cell] = []
    for record, cell in found:
        if cell.study != study:
            continue
        loaded = optuna.load_study(study_name=record.name, storage=storage, sampler=optuna.samplers.RandomSampler(0))
        trials = sorted(loaded.get_trials(deepcopy=False), key=lambda t: t.number)
        cells.append(Cell(record.name, cell.strategy, cell.n_train, dict(loaded.user_attrs), trials, cell.tuning))
    if not cells:
        present = sorted({cell.study for _, cell in found})
        if present:
            raise ConfigError(
                f"study {study!r} has no cells in storage {shown_url}; studies present: "
                f"{', '.join(present)}: set study.name to one of them"
            )
        studies = storage.get_all_studies()
        if studies:
            named = sorted({study_part(s.study_name) for s in studies})
            raise ConfigError(
                f"study {study!r} has no cells in storage {shown_url}; studies present: {', '.join(named)}, "
                f"but none carries the cell attrs ({', '.join(CELL_ATTRS)}) harness-tune writes: point "
                "storage.url at the database the tuning wrote"
            )
        raise ConfigError(
            f"study {study!r} has no cells: storage {shown_url} holds no studies at all; run "
            "harness-tune (or harness-study) first, or point storage.url at the right database"
        )
    return sorted(cells, key=lambda c: (strategy_rank(c.strategy), c.n_train, c.tuning))


def final_values(cells: Sequence[Cell], metric: str) -> dict[str, dict[int, list[float]]]:
    """{strategy: {n_train: [metric per re-run seed]}}; cells without `final` are left out."""
    out: dict[str, dict[int, list[float]]] = {}
    for c in cells:
        values = [r.value(metric) for r in c.final]
        values = [v for v in values if math.isfinite(v)]
        if values:
            out.setdefault(c.strategy, {})[c.n_train] = values
    return out


def replicates_of(cells: Sequence[Cell], metric: str) -> dict[str, dict[int, Replicates]]:
    """{strategy: {n_train: the cell's re-runs, over all its tuning runs}} for the verdict. A re-run
    that failed has no accuracy and is left out; one that diverged counts at chance, without a
    per-example row. Per-example test records are used only for the test metric, and only when every
    other re-run of the cell has one, all of one test split and each agreeing with its stored
    accuracy; otherwise the cell gets replicate-only noise."""
    grouped: dict[tuple[str, int], list[tuple[int, RerunRecord]]] = {}
    for c in cells:
        for r in c.final:
            if math.isfinite(r.value(metric)):
                grouped.setdefault((c.strategy, c.n_train), []).append((c.tuning, r))
    out: dict[str, dict[int, Replicates]] = {}
    for (strategy, n), pairs in sorted(grouped.items()):
        records = [r for _, r in pairs]
        acc = [r.value(metric) for r in records]
        rows = [r.correct() for r in records] if metric == "test_acc" else []
        measured = [(x, a, r) for x, a, r in zip(rows, acc, records) if r.status != DIVERGED]
        splits = {r.test_split for _, _, r in measured}
        usable = (bool(measured) and all(x is not None and x.size for x, _, _ in measured)
                  and len({x.size for x, _, _ in measured}) == 1 and len(splits) == 1
                  and all(abs(float(x.mean()) - a) < 1e-6 for x, a, _ in measured))
        matrix = None
        if usable:
            t = measured[0][0].size
            matrix = np.stack([x.astype(float) if x is not None and r.status != DIVERGED else np.full(t, np.nan)
                               for x, r in zip(rows, records)])
        out.setdefault(strategy, {})[n] = Replicates.of(acc, matrix, str(splits.pop()) if usable else None,
                                                        runs=[k for k, _ in pairs])
    return out


def failed_by_size(cells: Sequence[Cell]) -> dict[tuple[str, int], int]:
    """{(strategy, n_train): re-runs that failed or diverged}, over the cell's tuning runs."""
    out: dict[tuple[str, int], int] = {}
    for c in cells:
        bad = sum(not r.counted for r in c.final)
        out[(c.strategy, c.n_train)] = out.get((c.strategy, c.n_train), 0) + bad
    return out


def probe_by_size(cells: Sequence[Cell]) -> dict[int, float]:
    """{n_train: mean probe accuracy over the fine-tune cell's replicates} where re-runs stored one."""
    out = {}
    for c in cells:
        values = [r.value("probe_acc") for r in c.final] if c.strategy == "finetune" else []
        values = [v for v in values if math.isfinite(v)]
        if values:
            out[c.n_train] = float(np.mean(values))
    return out


def describe(origin: str, ref: str | None) -> str:
    """One weights origin in words: own pretraining, file <path>, hub tag <tag>."""
    if origin == OWN:
        return "own pretraining (harness-pretrain)"
    if origin == "file":
        return f"file {ref}"
    if origin == "hub":
        return f"hub tag {ref}"
    return "not recorded (weights from a file or the hub)"


@dataclass(frozen=True)
class Pretraining:
    """One pretraining the fine-tune cells started from, counted once (own pretraining by config hash,
    a file by path, a hub tag by name), with the cells that used it. FLOPs and wall time are None
    where unknown (a file or a hub tag whose FLOPs were not declared with strategy.pretrain_flops)."""

    key: str
    origin: str
    ref: str | None
    flops: float | None
    wall_s: float | None
    source_val_acc: float
    source_classes: tuple | None
    pretrain_flops_from: str | None
    cells: tuple[str, ...] = ()

    @classmethod
    def of(cls, w: WeightsRecord, p: PretrainRecord | None) -> Pretraining:
        """From a fine-tune cell's weights, and its own pretraining's record when it has one."""
        if p is not None:
            return cls(p.key, w.origin, p.key, p.flops, p.wall_s, p.source_val_acc, p.source_classes,
                       w.pretrain_flops_from)
        return cls(f"{w.origin}:{w.ref}", w.origin, w.ref, w.pretrain_flops, None, math.nan, None, w.pretrain_flops_from)


def pretraining(cells: Sequence[Cell]) -> list[Pretraining]:
    """The weights the fine-tune cells started from, each counted once, in the order cells first use them."""
    runs: dict[str, Pretraining] = {}
    for c in cells:
        w = c.weights
        if w is None:
            continue
        run = Pretraining.of(w, c.pretrain if w.origin == OWN else None)
        first = runs.get(run.key, run)
        runs[run.key] = dataclasses.replace(first, cells=first.cells + (c.name,))
    return list(runs.values())


def labelled_by_size(cells: Sequence[Cell]) -> dict[int, int]:
    """{n_train: labels used}, the larger of the two strategies' where they differ."""
    out: dict[int, int] = {}
    for c in cells:
        out[c.n_train] = max(out.get(c.n_train, 0), c.n_labelled)
    return out


def n_val_by_size(cells: Sequence[Cell]) -> dict[int, int | None]:
    """{n_train: validation labels that selected the configuration} (0 under cross-validation)."""
    out: dict[int, int | None] = {}
    for c in cells:
        if out.get(c.n_train) is None:
            out[c.n_train] = c.n_val if c.selection == "holdout" else 0
    return out


# ============================================================================ value helpers


def iso(d: datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


def fmt_n(v: Any) -> str:
    if v is None:
        return "inf"
    v = float(v)
    if not math.isfinite(v):
        return "inf"
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def strategy_rank(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES), strategy)

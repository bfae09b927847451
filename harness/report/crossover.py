"""crossover.json, typed: the verdict (harness/report/verdict.py's Comparison) with what the cells add
(failed re-runs, probe accuracies, the source model, validation and labelled sizes, the cells used),
built once by `Crossover.of`.

`Crossover.to_json` is the one writer of crossover.json (its schema: docs/crossover.schema.json) and
`Crossover.from_json` the one reader of a written one: a key a file lacks or holds malformed reads as
empty, there and only there, so the renderers (answer, figures, tables, document) read attributes only. Values are held as the file holds them (non-finite numbers as None, shares rounded),
so what a report says from a fresh Crossover it says from the file read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.report.cells import (
    STRATEGIES, UNKNOWN, Cell, describe, failed_by_size, final_values, labelled_by_size, n_val_by_size, pretraining,
    probe_by_size,
)
from harness.report.verdict import (
    HORIZON, LARGER_TEST, LEVEL, Comparison, Decide, SizeVerdict, finite_or_none,
)
from harness.store.records import as_number

Pair = tuple[float | None, float | None]  # an interval; a None end is open (or not finite)
BAND_METHOD = "max-|t| over the joint bootstrap draws"
FIT_FAMILY = "a - b * n**-c"
NO_FINETUNE = "none (no fine-tune cells)"


# ----------------------------------------------------------------------------- values as the file holds them


def _pair(p: tuple[float, float] | None) -> Pair | None:
    return None if p is None else (finite_or_none(p[0]), finite_or_none(p[1]))


def _whole(v: Any) -> int | None:
    return int(v) if as_number(v) is not None else None


def _pair_of(v: Any) -> Pair | None:
    return (as_number(v[0]), as_number(v[1])) if isinstance(v, (list, tuple)) and len(v) == 2 else None


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v if as_number(x) is not None) if isinstance(v, (list, tuple)) else ()


def _mapping(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, Mapping) else {}


def _numbers(v: Any) -> dict[str, float]:
    """{name: share}, the entries that are numbers."""
    return {str(k): x for k, x in _mapping(v).items() if as_number(x) is not None}


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _by_size(v: Any) -> dict[int, int | None]:
    """{n_train: count} from the file's {"<n>": count}."""
    return {int(k): _whole(x) for k, x in _mapping(v).items() if str(k).isdigit()}


def _list(p: Pair | None) -> list[float | None] | None:
    return None if p is None else list(p)


# ----------------------------------------------------------------------------- the parts


def decide_json(d: Decide) -> dict[str, Any]:
    """A size's `decide` as written since issue 21 (a larger test split's number after its text)."""
    out: dict[str, Any] = {"action": d.action}
    if d.number is not None and d.action != LARGER_TEST:
        out["number"] = d.number
    if d.target_se is not None:
        out["target_se"] = d.target_se
    out["text"] = d.text
    if d.number is not None and d.action == LARGER_TEST:
        out["number"] = d.number
    return out


def decide_of(raw: Any) -> Decide | None:
    """A written `decide` (its text may be missing: the renderers then say it from the action)."""
    if not isinstance(raw, Mapping):
        return None
    return Decide(_text(raw.get("action")), _text(raw.get("text")), number=as_number(raw.get("number")),
                  target_se=as_number(raw.get("target_se")))


@dataclass(frozen=True)
class Band:
    """The simultaneous band the per-size verdicts read: its method, level and critical value."""

    critical: float | None
    method: str = BAND_METHOD
    level: float = LEVEL

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "level": self.level, "critical": self.critical}

    @classmethod
    def from_json(cls, raw: Any) -> Band | None:
        if not isinstance(raw, Mapping):
            return None
        return cls(as_number(raw.get("critical")), str(raw.get("method") or BAND_METHOD),
                   as_number(raw.get("level")) or LEVEL)


@dataclass(frozen=True)
class Fit:
    """A strategy's fitted learning curve, a - b n^-c (NaN where the fit failed)."""

    a: float
    b: float
    c: float
    family: str = FIT_FAMILY

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c, "family": self.family}

    @classmethod
    def from_json(cls, raw: Any) -> Fit | None:
        if not isinstance(raw, Mapping):
            return None
        abc = [raw.get(k) for k in ("a", "b", "c")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in abc):
            return None
        return cls(*(float(v) for v in abc), family=str(raw.get("family") or FIT_FAMILY))


@dataclass(frozen=True)
class Source:
    """What the fine-tune cells started from: the origin in words, the weights' reference, the source
    task's accuracy and the pretraining FLOPs: a number (measured or declared), UNKNOWN (never 0), or
    None without fine-tune cells."""

    origin: str
    weights: str | None = None
    source_task_acc: float | None = None
    pretrain_flops: float | str | None = None
    pretrain_flops_from: str | None = None
    source_classes: tuple | None = None

    @classmethod
    def of(cls, cells: Sequence[Cell]) -> Source:
        """From the pretrainings the cells used (harness.report.cells.pretraining): the first one's, with
        FLOPs only when every one's are known."""
        runs = pretraining(cells)
        if not runs:
            return cls(NO_FINETUNE)
        first = runs[0]
        flops = first.flops if all(r.flops is not None for r in runs) else UNKNOWN
        others = "" if len(runs) == 1 else f" (and {len(runs) - 1} other weights)"
        return cls(describe(first.origin, first.ref) + others, first.ref, finite_or_none(first.source_val_acc), flops,
                   first.pretrain_flops_from if flops != UNKNOWN else "unknown", first.source_classes)

    @property
    def flops_known(self) -> bool:
        return isinstance(self.pretrain_flops, (int, float)) and not isinstance(self.pretrain_flops, bool)

    def to_json(self) -> dict[str, Any]:
        out = {"origin": self.origin, "weights": self.weights, "source_task_acc": self.source_task_acc,
               "pretrain_flops": self.pretrain_flops, "pretrain_flops_from": self.pretrain_flops_from}
        if self.source_classes is not None:
            out["source_classes"] = list(self.source_classes)
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Source | None:
        if not isinstance(raw, Mapping):
            return None
        flops, classes = raw.get("pretrain_flops"), raw.get("source_classes")
        return cls(str(raw.get("origin", "unknown")), _text(raw.get("weights")), as_number(raw.get("source_task_acc")),
                   flops if flops == UNKNOWN else as_number(flops), _text(raw.get("pretrain_flops_from")),
                   tuple(classes) if isinstance(classes, list) else None)


@dataclass(frozen=True)
class NeedsCell:
    """A cell of an undecided size that decides the headline, with the replicates it has."""

    strategy: str
    n_train: int
    replicates: int

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "n_train": self.n_train, "replicates": self.replicates}

    @classmethod
    def from_json(cls, raw: Any) -> NeedsCell | None:
        if not isinstance(raw, Mapping) or as_number(raw.get("n_train")) is None:
            return None
        return cls(str(raw.get("strategy")), int(raw["n_train"]), raw.get("replicates"))


@dataclass(frozen=True)
class SizeRow:
    """One measured size of crossover.json's `per_n`: the gap (fine-tune minus scratch), its pointwise
    interval and simultaneous band, the verdict and the per-size answers. A row a file holds without
    band, answers, tuning runs or failed counts reads them as None, or empty."""

    n: int
    gap: float | None
    ci95: Pair | None
    verdict: str
    replicates: dict[str, int]
    test_noise: bool
    finetune_acc: float | None = None
    scratch_acc: float | None = None
    probe_acc: float | None = None
    band95: Pair | None = None
    tuning_runs: dict[str, int] = field(default_factory=dict)
    se: float | None = None
    p_within_margin: float | None = None
    upper975: float | None = None
    resolution: float | None = None
    variance_shares: dict[str, float] = field(default_factory=dict)
    decide: Decide | None = None
    failed: dict[str, int] | None = None  # failed re-runs per strategy

    @classmethod
    def of(cls, p: SizeVerdict, failed: Mapping[tuple[str, int], int], probe: float | None) -> SizeRow:
        num = finite_or_none
        return cls(p.n, num(p.gap), _pair(p.ci95), p.verdict, dict(p.replicates), p.test_noise,
                   finetune_acc=num(p.means.get("finetune")), scratch_acc=num(p.means.get("scratch")), probe_acc=probe,
                   band95=_pair(p.band95), tuning_runs=dict(p.tuning_runs), se=num(p.se),
                   p_within_margin=num(p.p_within), upper975=num(p.upper975), resolution=num(p.resolution),
                   variance_shares={k: round(v, 4) for k, v in p.shares.items()}, decide=p.decide,
                   failed={s: failed.get((s, p.n), 0) for s in STRATEGIES})

    def to_json(self) -> dict[str, Any]:
        out = {"n": self.n, "gap": self.gap, "ci95": _list(self.ci95), "band95": _list(self.band95),
               "verdict": self.verdict, "replicates": self.replicates, "tuning_runs": self.tuning_runs,
               "test_noise": self.test_noise, "finetune_acc": self.finetune_acc, "scratch_acc": self.scratch_acc,
               "probe_acc": self.probe_acc, "se": self.se, "p_within_margin": self.p_within_margin,
               "upper975": self.upper975, "resolution": self.resolution, "variance_shares": self.variance_shares,
               "decide": None if self.decide is None else decide_json(self.decide)}
        if self.failed is not None:
            out["failed"] = self.failed
        return out

    @classmethod
    def from_json(cls, raw: Any) -> SizeRow | None:
        if not isinstance(raw, Mapping) or as_number(raw.get("n")) is None:
            return None
        failed = raw.get("failed")
        return cls(int(raw["n"]), as_number(raw.get("gap")), _pair_of(raw.get("ci95")), str(raw.get("verdict")),
                   _mapping(raw.get("replicates")), bool(raw.get("test_noise")),
                   finetune_acc=as_number(raw.get("finetune_acc")), scratch_acc=as_number(raw.get("scratch_acc")),
                   probe_acc=as_number(raw.get("probe_acc")), band95=_pair_of(raw.get("band95")),
                   tuning_runs=_mapping(raw.get("tuning_runs")), se=as_number(raw.get("se")),
                   p_within_margin=as_number(raw.get("p_within_margin")), upper975=as_number(raw.get("upper975")),
                   resolution=as_number(raw.get("resolution")), variance_shares=_numbers(raw.get("variance_shares")),
                   decide=decide_of(raw.get("decide")), failed=dict(failed) if isinstance(failed, Mapping) else None)


# ----------------------------------------------------------------------------- the whole


@dataclass(frozen=True)
class Crossover:
    """The report's machine-readable answer (docs/design.md, "crossover.json"): the headline, the
    per-size rows, n* and n_cross with their intervals, the band, the noise the intervals hold, and
    what the cells add. Field names are crossover.json's keys."""

    metric: str
    margin: float
    status: str
    reason: str
    per_n: tuple[SizeRow, ...] = ()
    n_star: float | None = None
    ci95: Pair | None = None
    n_cross: float | None = None
    n_cross_ci95: Pair | None = None
    extrapolated: bool = False
    agreement: float | None = None
    status_shares: dict[str, float] = field(default_factory=dict)
    measured_range: tuple[int, int] | None = None
    switches: tuple[int, ...] = ()
    needs_replicates: tuple[int, ...] = ()
    missing_sizes: tuple[int, ...] = ()
    intervals: str | None = None
    n_boot: int | None = None
    horizon: float = HORIZON
    fits: dict[str, Fit] = field(default_factory=dict)
    band: Band | None = None  # None only read from a file without it
    between_runs: str | None = None
    tau: float | None = None
    tau_ratio: float | None = None
    n_test: int | None = None
    settled_from: int | None = None
    n_star_text: str | None = None
    n_star_misfit: str | None = None
    needs_cells: tuple[NeedsCell, ...] = ()
    source: Source | None = None
    n_val: int | None = None  # the validation size when every cell had the same, else None
    n_val_by_n_train: dict[int, int | None] = field(default_factory=dict)
    n_labelled_by_n_train: dict[int, int | None] = field(default_factory=dict)
    selection: tuple[str, ...] = ()
    cells_used: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, c: Comparison, cells: Sequence[Cell] = ()) -> Crossover:
        """The comparison with what `cells` (the study's, as the comparison read them) add; without
        cells, the verdict alone (harness-study's running headline)."""
        failed, probes, n_val = failed_by_size(cells), probe_by_size(cells), n_val_by_size(cells)
        counts: dict[tuple[str, int], int] = {}
        for cell in cells:
            counts[(cell.strategy, cell.n_train)] = counts.get((cell.strategy, cell.n_train), 0) + len(cell.final)
        values = final_values(cells, c.metric)
        distinct_val = sorted({v for v in n_val.values() if v is not None})
        num = finite_or_none
        return cls(
            metric=c.metric, margin=c.margin, status=c.status, reason=c.reason,
            per_n=tuple(SizeRow.of(p, failed, probes.get(p.n)) for p in c.per_n),
            n_star=num(c.n_star), ci95=_pair(c.ci95), n_cross=num(c.n_cross), n_cross_ci95=_pair(c.n_cross_ci95),
            extrapolated=c.extrapolated, agreement=num(c.agreement),
            status_shares={k: round(v, 4) for k, v in c.status_shares.items()},
            measured_range=tuple(c.measured_range) if c.measured_range else None, switches=tuple(c.switches),
            needs_replicates=tuple(c.needs), missing_sizes=tuple(c.missing), intervals=c.intervals, n_boot=c.n_boot,
            horizon=c.horizon, fits={s: Fit(*p) for s, p in c.fits.items()}, band=Band(num(c.band_critical)),
            between_runs=c.between_runs, tau=num(c.tau), tau_ratio=num(c.tau_ratio), n_test=c.n_test,
            settled_from=c.settled_from, n_star_text=c.n_star_text, n_star_misfit=c.n_star_misfit,
            needs_cells=tuple(NeedsCell(s, n, counts[(s, n)]) for n in c.needs for s in STRATEGIES if (s, n) in counts),
            source=Source.of(cells), n_val=distinct_val[0] if len(distinct_val) == 1 else None,
            n_val_by_n_train=dict(sorted(n_val.items())),
            n_labelled_by_n_train=dict(sorted(labelled_by_size(cells).items())),
            selection=tuple(sorted({cell.selection for cell in cells})),
            cells_used={s: tuple(sorted(values.get(s, {}))) for s in STRATEGIES})

    def to_json(self) -> dict[str, Any]:
        """crossover.json's content (docs/crossover.schema.json)."""
        return {
            "metric": self.metric, "margin": self.margin, "status": self.status, "reason": self.reason,
            "n_star": self.n_star, "ci95": _list(self.ci95), "n_cross": self.n_cross,
            "n_cross_ci95": _list(self.n_cross_ci95), "extrapolated": self.extrapolated, "agreement": self.agreement,
            "status_shares": self.status_shares,
            "measured_range": list(self.measured_range) if self.measured_range else None,
            "per_n": [p.to_json() for p in self.per_n], "switches": list(self.switches),
            "needs_replicates": list(self.needs_replicates), "missing_sizes": list(self.missing_sizes),
            "intervals": self.intervals, "n_boot": self.n_boot, "horizon": self.horizon,
            "fits": {s: f.to_json() for s, f in self.fits.items()},
            "band": None if self.band is None else self.band.to_json(), "between_runs": self.between_runs,
            "tau": self.tau, "tau_ratio": self.tau_ratio, "n_test": self.n_test, "settled_from": self.settled_from,
            "n_star_text": self.n_star_text, "n_star_misfit": self.n_star_misfit,
            "needs_cells": [x.to_json() for x in self.needs_cells],
            "source": None if self.source is None else self.source.to_json(), "n_val": self.n_val,
            "n_val_by_n_train": {str(n): v for n, v in self.n_val_by_n_train.items()},
            "n_labelled_by_n_train": {str(n): v for n, v in self.n_labelled_by_n_train.items()},
            "selection": list(self.selection), "cells_used": {s: list(ns) for s, ns in self.cells_used.items()},
        }

    def write(self, path: Path) -> None:
        """crossover.json: written here and nowhere else."""
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Crossover:
        """A written crossover.json: a key it lacks reads as empty (None, no rows, no band)."""
        rows = tuple(r for r in (SizeRow.from_json(p) for p in raw.get("per_n") or []) if r is not None)
        measured = _ints(raw.get("measured_range"))
        fits = {str(s): f for s, f in ((s, Fit.from_json(f)) for s, f in _mapping(raw.get("fits")).items()) if f}
        return cls(
            metric=str(raw.get("metric", "test_acc")), margin=float(as_number(raw.get("margin")) or 0.0),
            status=str(raw.get("status", "insufficient_data")), reason=str(raw.get("reason", "")), per_n=rows,
            n_star=as_number(raw.get("n_star")), ci95=_pair_of(raw.get("ci95")), n_cross=as_number(raw.get("n_cross")),
            n_cross_ci95=_pair_of(raw.get("n_cross_ci95")), extrapolated=bool(raw.get("extrapolated", False)),
            agreement=as_number(raw.get("agreement")), status_shares=_numbers(raw.get("status_shares")),
            measured_range=(measured[0], measured[1]) if len(measured) == 2 else None,
            switches=_ints(raw.get("switches")), needs_replicates=_ints(raw.get("needs_replicates")),
            missing_sizes=_ints(raw.get("missing_sizes")), intervals=_text(raw.get("intervals")),
            n_boot=_whole(raw.get("n_boot")), horizon=float(as_number(raw.get("horizon")) or HORIZON), fits=fits,
            band=Band.from_json(raw.get("band")), between_runs=_text(raw.get("between_runs")),
            tau=as_number(raw.get("tau")), tau_ratio=as_number(raw.get("tau_ratio")), n_test=_whole(raw.get("n_test")),
            settled_from=_whole(raw.get("settled_from")), n_star_text=_text(raw.get("n_star_text")),
            n_star_misfit=_text(raw.get("n_star_misfit")),
            needs_cells=tuple(x for x in (NeedsCell.from_json(x) for x in raw.get("needs_cells") or []) if x),
            source=Source.from_json(raw.get("source")), n_val=_whole(raw.get("n_val")),
            n_val_by_n_train=_by_size(raw.get("n_val_by_n_train")),
            n_labelled_by_n_train=_by_size(raw.get("n_labelled_by_n_train")),
            selection=tuple(str(x) for x in raw.get("selection") or ()),
            cells_used={str(k): _ints(ns) for k, ns in _mapping(raw.get("cells_used")).items()})

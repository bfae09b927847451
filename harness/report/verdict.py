"""The verdict: fine-tune against scratch at every measured size and as one headline, calibrated.

A wrong verdict stated with confidence is worse than none, so every claim here is an interval
compared with a practical margin declared in advance (equivalence testing, Lakens 2017): a size is
`finetune_better` / `scratch_better` only when the whole 95% interval of the gap lies beyond the
margin, `equivalent` only when it lies inside it, and `inconclusive` otherwise.

The interval carries every source of noise a measured gap has (Bouthillier et al. 2021): which
configuration the tuning found (tuning runs), replicates of it and test examples, drawn as
harness/report/noise.py describes. The claims the report opens with are read from a simultaneous
95% band across the measured sizes (max-|t| over the joint bootstrap draws), so the chance of any
false per-size claim in a study is held at 5%, not 5% at each size.

Every bootstrap replicate re-decides the whole determination: the fitted learning curves, n* (the
smallest size from which fine-tune's fitted advantage stays at or below the margin), n_cross
(where scratch's fitted curve goes ahead) and effective data transferred, so their intervals come
from the same draws as the per-size verdicts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from harness.report.learning_curves import fit_power_law_batch
from harness.report.noise import MEASURED, Draws, Replicates, draw
from harness.store.records import Caps

MARGIN = 0.01
HORIZON = 10.0  # n* and n_cross are searched up to this multiple of the largest measured size
LEVEL = 0.95
GRID_POINTS = 400
UNSTABLE_FACTOR = 4.0  # a D_E interval wider than this factor is unstable
Z_POWER = 1.2816  # z of 90%: a zero gap shown equivalent with 80% power needs margin >= (c + Z_POWER) * se
SETTLED = 0.9  # P(gap <= margin) from which a size counts as settled for the answer line

FINETUNE_BETTER, SCRATCH_BETTER = "finetune_better", "scratch_better"
EQUIVALENT, INCONCLUSIVE = "equivalent", "inconclusive"
VERDICTS = (FINETUNE_BETTER, SCRATCH_BETTER, EQUIVALENT, INCONCLUSIVE)
STATUSES = ("crossover", "catch_up", "finetune_ahead", "equivalent", "scratch_ahead", "inconclusive",
            "insufficient_data")
WINNER_STATUSES = ("crossover", "finetune_ahead", "scratch_ahead")


def classify(lo: float, hi: float, margin: float) -> str:
    """One verdict from an interval of the gap (fine-tune minus scratch) and the margin."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if lo > margin:
        return FINETUNE_BETTER
    if hi < -margin:
        return SCRATCH_BETTER
    if lo >= -margin and hi <= margin:
        return EQUIVALENT
    return INCONCLUSIVE


def _point_verdicts(gaps: np.ndarray, margin: float) -> np.ndarray:
    """Verdicts of point gaps (a bootstrap replicate has no interval of its own)."""
    return np.where(gaps > margin, FINETUNE_BETTER, np.where(gaps < -margin, SCRATCH_BETTER, EQUIVALENT))


def headline(verdicts: Sequence[str]) -> tuple[str, str]:
    """(status, reason) from the per-size verdicts in increasing size.

    `finetune_ahead`, `scratch_ahead`, `equivalent` need that verdict at every size. `catch_up` and
    `crossover` need fine-tune better at the smallest size and a decided largest size (equivalent,
    resp. scratch better), with the decided verdicts in between moving one way only (fine-tune
    better, then equivalent, then scratch better); an undecided size inside that run does not
    change the story, only where n* lies. Everything else is `inconclusive`, with the reason.
    """
    v = list(verdicts)
    if len(v) < 2:
        return "insufficient_data", "fewer than two sizes measured by both strategies"
    for status, wanted in (("equivalent", EQUIVALENT), ("finetune_ahead", FINETUNE_BETTER),
                           ("scratch_ahead", SCRATCH_BETTER)):
        if all(x == wanted for x in v):
            return status, f"{wanted.replace('_', ' ')} at every measured size"
    if v[0] == INCONCLUSIVE or v[-1] == INCONCLUSIVE:
        ends = [name for name, x in (("smallest", v[0]), ("largest", v[-1])) if x == INCONCLUSIVE]
        return "inconclusive", f"the {' and '.join(ends)} size is undecided"
    decided = [x for x in v if x != INCONCLUSIVE]
    rank = {FINETUNE_BETTER: 0, EQUIVALENT: 1, SCRATCH_BETTER: 2}
    monotone = all(rank[a] <= rank[b] for a, b in zip(decided, decided[1:]))
    if decided[0] == FINETUNE_BETTER and monotone:
        if decided[-1] == SCRATCH_BETTER:
            return "crossover", "fine-tune better at the smallest size, scratch better at the largest"
        if decided[-1] == EQUIVALENT:
            return "catch_up", "fine-tune better at the smallest size, equivalent from a larger size on"
    if not monotone:
        return "inconclusive", "the verdicts change direction more than once across sizes"
    if all(x in (EQUIVALENT, INCONCLUSIVE) for x in v):
        return "inconclusive", "equivalent where decided, undecided in between"
    if all(x in (FINETUNE_BETTER, INCONCLUSIVE) for x in v):
        return "inconclusive", "fine-tune better where decided, undecided in between"
    if all(x in (SCRATCH_BETTER, INCONCLUSIVE) for x in v):
        return "inconclusive", "scratch better where decided, undecided in between"
    return "inconclusive", "equivalent at the smallest size, scratch better at larger ones (no fine-tune lead to lose)"


# ----------------------------------------------------------------------------- the fitted curves


def _curve_params(sizes: np.ndarray, means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Saturating power-law params (a, b, c) for each row of `means` (rows, N) -> (rows, 3)."""
    a, b, c, _ = fit_power_law_batch(np.log(sizes), means, counts)
    return np.stack([a, b, c], axis=1)


def _predict(params: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    return params[:, :1] - params[:, 1:2] * np.exp(-params[:, 2:3] * log_x[None, :])


def stays_below(gap: np.ndarray, level: float, log_grid: np.ndarray) -> np.ndarray:
    """Per row of `gap` (rows, G) on `log_grid`: the smallest size from which the gap stays at or
    below `level` up to the grid's end; the grid's start when it never exceeds it, inf when it
    still exceeds it at the end."""
    above = gap > level
    g = log_grid.size
    last = g - 1 - np.argmax(above[:, ::-1], axis=1)
    nxt = np.minimum(last + 1, g - 1)
    rows = np.arange(gap.shape[0])
    g0, g1 = gap[rows, last], gap[rows, nxt]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(g0 != g1, (g0 - level) / (g0 - g1), 0.0), 0.0, 1.0)
    crossing = np.exp(log_grid[last] + t * (log_grid[nxt] - log_grid[last]))
    out = np.where(last == g - 1, math.inf, crossing)
    return np.where(above.any(axis=1), out, math.exp(log_grid[0]))


def _interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval that treats +inf (never) as a value."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    big = np.where(np.isinf(v), np.finfo(float).max, v)
    lo, hi = (float(np.percentile(big, p)) for p in q)
    finite_max = float(v[np.isfinite(v)].max()) if np.isfinite(v).any() else -math.inf
    return (math.inf if lo > finite_max else lo), (math.inf if hi > finite_max else hi)


# --------------------------------------------------------------------------------- the comparison


REPLICATES, TUNING_RUNS, LARGER_TEST = "replicates", "tuning_runs", "larger_test"  # what_decides' actions


@dataclass(frozen=True)
class Decide:
    """What would decide an undecided size (what_decides): more replicates, more tuning runs or a larger
    test split (`action`, with its `number`), or None where nothing this design adds decides it; the
    se the band would need (`target_se`) and the statement in words."""

    action: str | None
    text: str | None = None
    number: int | None = None
    target_se: float | None = None


@dataclass(frozen=True)
class SizeVerdict:
    n: int
    gap: float
    ci95: tuple[float, float]  # pointwise 95% percentile interval
    verdict: str  # from the simultaneous band
    replicates: dict[str, int]
    test_noise: bool  # test examples were resampled for both cells
    means: dict[str, float] = field(default_factory=dict)
    band95: tuple[float, float] = (math.nan, math.nan)  # simultaneous 95% band across the measured sizes
    se: float = math.nan  # bootstrap sd of the gap
    p_within: float = math.nan  # P(gap <= margin) over the draws
    upper975: float = math.nan  # one-sided 97.5% upper bound of fine-tune's advantage
    resolution: float = math.nan  # the smallest margin a zero gap is shown equivalent within, 80% power
    shares: dict[str, float] = field(default_factory=dict)  # the gap's variance: tuning, replicates, test
    tuning_runs: dict[str, int] = field(default_factory=dict)
    decide: Decide | None = None  # for an undecided size: what would decide it, and whether the caps reach it
    parts: dict = field(default_factory=dict, repr=False)  # the variance parts (_variance_parts), for planning


@dataclass(frozen=True)
class TransferRow:
    """Effective data transferred at one fine-tune size (Hernandez et al. 2021)."""

    n: int
    finetune_acc: float
    d_e: float
    d_e_ci95: tuple[float, float]
    extrapolated: bool
    note: str

    @property
    def d_t(self) -> float:
        return self.d_e - self.n

    @property
    def d_t_ci95(self) -> tuple[float, float]:
        return self.d_e_ci95[0] - self.n, self.d_e_ci95[1] - self.n

    @property
    def multiplier(self) -> float:
        return self.d_e / self.n

    def to_row(self) -> dict:
        lo, hi = self.d_t_ci95
        return {"n_train": self.n, "finetune_acc": self.finetune_acc, "scratch_n_equivalent": self.d_e,
                "scratch_n_equivalent_ci95_low": finite_or_none(self.d_e_ci95[0]),
                "scratch_n_equivalent_ci95_high": finite_or_none(self.d_e_ci95[1]),
                "effective_data_transferred": self.d_t, "d_t_ci95_low": finite_or_none(lo), "d_t_ci95_high": finite_or_none(hi),
                "multiplier": self.multiplier, "extrapolated": self.extrapolated, "note": self.note}


@dataclass
class Comparison:
    """The whole determination on one study's replicates (compare). It writes no JSON: the report's
    crossover.json is harness/report/crossover.py's Crossover, built from it and the cells."""

    metric: str
    margin: float
    status: str
    reason: str
    per_n: list[SizeVerdict]
    measured_range: tuple[int, int] | None
    n_star: float | None = None
    ci95: tuple[float, float] | None = None
    n_cross: float | None = None
    n_cross_ci95: tuple[float, float] | None = None
    extrapolated: bool = False
    agreement: float | None = None
    status_shares: dict[str, float] = field(default_factory=dict)
    switches: list[int] = field(default_factory=list)
    needs: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    intervals: str = "replicates and test examples"
    transfer: list[TransferRow] = field(default_factory=list)
    fits: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # point fit per strategy
    n_boot: int = 0
    horizon: float = HORIZON
    band_critical: float | None = None
    between_runs: str = MEASURED
    tau: float | None = None        # estimated between-run sd, constant part (between_runs == "estimated")
    tau_ratio: float | None = None  # ... relative part: this x a cell mean's replicate variance, where larger
    n_test: int | None = None
    n_star_misfit: str | None = None  # why n* is not estimable from the curves (lack of fit)

    @property
    def settled_from(self) -> int | None:
        """The smallest measured size from which P(gap <= margin) >= SETTLED at every larger size."""
        out = None
        for p in reversed(self.per_n):
            if not (p.p_within >= SETTLED):
                break
            out = p.n
        return out

    @property
    def n_star_text(self) -> str | None:
        """n* in words: one-sided ("n* > 78") when its interval is open above."""
        if self.n_star_misfit:
            return "n* not estimable: the measured means do not follow the fitted curves"
        if self.n_star is None:
            return None
        lo, hi = self.ci95 or (math.nan, math.nan)
        label = " (extrapolated)" if self.extrapolated else ""
        if not math.isfinite(self.n_star) or not math.isfinite(hi):
            return f"n* > {lo:,.0f}" if math.isfinite(lo) else "n* not estimable (its interval is open)"
        return f"n* = {self.n_star:,.0f}{label} (95% CI {lo:,.0f}-{hi:,.0f})"



def finite_or_none(v: float | None) -> float | None:
    """A computed number as the report's files hold it: None unless finite."""
    return float(v) if v is not None and math.isfinite(v) else None


def compare(finetune: Mapping[int, Replicates], scratch: Mapping[int, Replicates], *, margin: float = MARGIN,
            n_boot: int = 2000, seed: int = 0, horizon: float = HORIZON, metric: str = "test_acc",
            caps: Caps | None = None) -> Comparison:
    """The whole determination from each strategy's replicates per size (each replicate tagged with
    its tuning run). `caps` are what harness-study may still add (by default Caps()), for the
    statements of what would decide an undecided size."""
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if n_boot < 1 or horizon < 1:
        raise ValueError("n_boot and horizon must be >= 1")
    caps = caps or Caps()
    ft = {int(n): r for n, r in sorted(finetune.items()) if r.n}
    sc = {int(n): r for n, r in sorted(scratch.items()) if r.n}
    shared = sorted(set(ft) & set(sc))
    missing = sorted(set(ft) ^ set(sc))
    cells = [("finetune", n, r) for n, r in ft.items()] + [("scratch", n, r) for n, r in sc.items()]
    if not shared:
        return Comparison(metric, margin, "insufficient_data", "no size was measured by both strategies", [],
                          None, missing=missing, n_boot=n_boot, horizon=horizon)
    rng = np.random.default_rng(seed)
    draws = draw(cells, n_boot, rng)
    index = {(s, n): i for i, (s, n, _) in enumerate(cells)}
    pairs = [(index[("finetune", n)], index[("scratch", n)]) for n in shared]
    gap_rows = np.stack([draws.boot[i] - draws.boot[j] for i, j in pairs], 1)  # (B, sizes)
    point = np.array([draws.point[i] - draws.point[j] for i, j in pairs])
    se = gap_rows.std(axis=0, ddof=1) if n_boot > 1 else np.zeros(len(shared))
    critical = simultaneous_critical(gap_rows, point, se)

    per_n: list[SizeVerdict] = []
    for k, n in enumerate(shared):
        i, j = pairs[k]
        gaps = gap_rows[:, k]
        band = (float(point[k] - critical * se[k]), float(point[k] + critical * se[k]))
        verdict = classify(*band, margin) if draws.known_sd[i] and draws.known_sd[j] else INCONCLUSIVE
        parts = _variance_parts(draws, i, j)
        size = SizeVerdict(
            n, float(point[k]), _interval(gaps), verdict, {"finetune": ft[n].n, "scratch": sc[n].n},
            bool(draws.tested[i] and draws.tested[j]), {"finetune": float(draws.point[i]), "scratch": float(draws.point[j])},
            band95=band, se=float(se[k]), p_within=float(np.mean(gaps <= margin)),
            upper975=float(np.quantile(gaps, 0.975)), resolution=float((critical + Z_POWER) * se[k]),
            shares=_shares(parts), tuning_runs={"finetune": ft[n].n_runs, "scratch": sc[n].n_runs}, parts=parts)
        if verdict == INCONCLUSIVE:
            size = dataclasses.replace(size, decide=what_decides(size, parts, margin, critical, caps, draws.n_test))
        per_n.append(size)
    status, reason = headline([p.verdict for p in per_n])
    out = Comparison(metric, margin, status, reason, per_n, (shared[0], shared[-1]), missing=missing,
                     n_boot=n_boot, horizon=horizon, switches=_switches(per_n), band_critical=float(critical),
                     between_runs=draws.between, n_test=draws.n_test)
    if draws.estimate is not None:
        out.tau, out.tau_ratio = math.sqrt(draws.estimate.tau2), draws.estimate.ratio
    runs = "tuning runs" if draws.between == MEASURED else "replicates"
    out.intervals = (f"{runs} and test examples" if draws.tested.all()
                     else f"{runs} only (no per-example test records)" if not draws.tested.any()
                     else f"{runs} and test examples where stored, {runs} only elsewhere")
    if draws.between != MEASURED:
        out.intervals += (f"; between-run variance estimated from the curves' lack of fit (an upper bound): sd "
                          f"{out.tau:.4f}, or {out.tau_ratio:.2f}x a cell mean's replicate variance where larger"
                          if out.tau is not None else "; no between-run variance (not estimable: < 4 sizes)")
    if status != "insufficient_data":
        shares = _status_shares(_point_verdicts(gap_rows, margin))
        out.status_shares = shares
        out.agreement = shares.get(status, 0.0) if status != "inconclusive" else None
    if len(ft) >= 3 and len(sc) >= 3:
        _fit_determination(out, ft, sc, draws, index, shared, horizon)
    reachable = {p.n for p in per_n if p.decide is not None and p.decide.action in (REPLICATES, TUNING_RUNS)}
    out.needs = [n for n in _deciding_sizes(out) if n in reachable]
    return out


def simultaneous_critical(gap_rows: np.ndarray, point: np.ndarray, se: np.ndarray, level: float = LEVEL) -> float:
    """The critical value of a simultaneous band across sizes: the `level` quantile of the largest
    |gap - point| / se over the sizes of one joint bootstrap draw (max-|t|)."""
    safe = np.where(se > 0, se, np.inf)
    t = np.abs(gap_rows - point[None, :]) / safe[None, :]
    return float(np.quantile(t.max(axis=1), level)) if t.size else math.nan


def _variance_parts(draws: Draws, i: int, j: int) -> dict[str, float]:
    """Each strategy's per-run tuning and per-replicate variance, its runs and replicates per run, and
    the variance the test examples add to the paired gap."""
    e = np.zeros(len(draws.point))
    e[i], e[j] = 1.0, -1.0
    parts = {"test": float(max(0.0, e @ draws.test_cov @ e))}
    for name, k in (("finetune", i), ("scratch", j)):
        parts[name] = (float(draws.var_tune[k]), float(np.nan_to_num(draws.var_rep[k])), float(draws.runs[k]),
                       float(draws.reps[k]))
    return parts


def predicted_variance(parts: Mapping, runs: float | None = None, reps: float | None = None, test_scale: float = 1.0) -> float:
    """The gap's variance with `runs` tuning runs of `reps` replicates each (as measured where None)."""
    total = parts["test"] * test_scale
    for name in ("finetune", "scratch"):
        tune, rep, k, r = parts[name]
        k, r = (runs or k), (reps or r)
        total += tune / k + rep / (k * r)
    return total


def _shares(parts: Mapping) -> dict[str, float]:
    tuning = sum(parts[s][0] / parts[s][2] for s in ("finetune", "scratch"))
    reps = sum(parts[s][1] / (parts[s][2] * parts[s][3]) for s in ("finetune", "scratch"))
    total = tuning + reps + parts["test"]
    if not total > 0:
        return {}
    return {"tuning": tuning / total, "replicates": reps / total, "test": parts["test"] / total}


def what_decides(p: SizeVerdict, parts: Mapping, margin: float, critical: float, caps: Caps,
                 n_test: int | None) -> Decide:
    """What would decide an undecided size, from its own measured variances: more replicates per
    tuning run, more tuning runs (the cheaper in re-runs, a tuning run costing caps.trials_per_run),
    or, where the caps cannot reach it, a larger test split; with the numbers. Reads the current gap
    as if it were the truth (a plug-in power statement), so it says what is plausible, not certain."""
    g = abs(p.gap)
    goal = "equivalent" if g < margin else "better"
    if not (critical > 0 and math.isfinite(critical)):
        return Decide(None, "no noise could be measured at this size (one re-run, no trend to borrow from)")
    reach = abs(margin - g) / critical  # the se at which the band would clear the margin
    runs = int(min(parts[s][2] for s in ("finetune", "scratch")))
    reps = int(max(1, math.floor(min(parts[s][3] for s in ("finetune", "scratch")))))
    max_runs, max_reps, trials = caps.max_tunings, caps.max_seeds, caps.trials_per_run
    if abs(margin - g) < 0.1 * max(margin, 1e-3):
        return Decide(None, f"the gap ({p.gap:+.3f}) sits at the margin ({margin:g}): no number of runs decides it",
                      target_se=reach)
    budget = reach ** 2
    tune = sum(parts[s][0] for s in ("finetune", "scratch"))
    rep = sum(parts[s][1] for s in ("finetune", "scratch"))
    room = budget - parts["test"] - tune / runs
    need_reps = math.ceil(rep / (runs * room)) if room > 0 and rep > 0 else (reps if room > 0 else math.inf)
    room_runs = budget - parts["test"]
    need_runs = math.ceil((tune + rep / reps) / room_runs) if room_runs > 0 else math.inf
    # The plug-in says the design is already near enough (the band's heavier tails disagree): the
    # smallest addition is the proposal.
    need_reps, need_runs = max(need_reps, reps + 1), max(need_runs, runs + 1)
    options = []
    if need_reps <= max_reps and need_reps > reps:
        options.append((runs * (need_reps - reps), REPLICATES, need_reps,
                        f"{need_reps} replicates per tuning run (now {reps}) would show it {goal}"))
    if need_runs <= max_runs and need_runs > runs:
        options.append(((need_runs - runs) * (trials + reps), TUNING_RUNS, need_runs,
                        f"{need_runs} tuning runs (now {runs}) would show it {goal}"))
    if options:
        _, action, number, text = min(options)
        return Decide(action, text, number=number, target_se=reach)
    at_caps = predicted_variance(parts, max_runs, max_reps) - parts["test"]
    text = (f"below what this design resolves: even {max_runs} tuning runs x {max_reps} replicates leave "
            f"sd {math.sqrt(at_caps + parts['test']):.4f} against the {reach:.4f} needed")
    bigger = math.ceil(n_test * parts["test"] / (budget - at_caps)) if n_test and parts["test"] > 0 and budget > at_caps else 0
    if n_test and bigger > n_test:
        return Decide(LARGER_TEST, text + f"; with those, a test split of about {bigger:,} examples (now {n_test:,}) "
                      "would decide it", number=bigger, target_se=reach)
    if math.isfinite(need_runs):
        text += f"; {need_runs} tuning runs would decide it (cap {max_runs})"
    return Decide(None, text, target_se=reach)


def _switches(per_n: Sequence[SizeVerdict]) -> list[int]:
    out, previous = [], None
    for p in per_n:
        if p.verdict == INCONCLUSIVE:
            continue
        if previous is not None and p.verdict != previous:
            out.append(p.n)
        previous = p.verdict
    return out


def _status_shares(verdict_rows: np.ndarray) -> dict[str, float]:
    """Share of bootstrap replicates reaching each status (a replicate's point gaps decide it)."""
    counts: dict[str, int] = {}
    cache: dict[tuple[str, ...], str] = {}
    for row in verdict_rows:
        key = tuple(row)
        if key not in cache:
            cache[key] = headline(key)[0]
        counts[cache[key]] = counts.get(cache[key], 0) + 1
    total = max(1, verdict_rows.shape[0])
    return {k: counts[k] / total for k in STATUSES if k in counts}


def _fit_determination(out: Comparison, ft: Mapping[int, Replicates], sc: Mapping[int, Replicates], draws: Draws,
                       index: Mapping[tuple[str, int], int], shared: Sequence[int], horizon: float) -> None:
    """n*, n_cross and D_T on fitted curves, for the point estimate (row 0) and every replicate."""
    params = {}
    for strategy, curve in (("finetune", ft), ("scratch", sc)):
        rows = [index[(strategy, n)] for n in curve]
        means = np.concatenate([draws.point[rows][None, :], draws.boot[rows].T], axis=0)
        counts = np.array([r.n for r in curve.values()], dtype=float)
        params[strategy] = _curve_params(np.array(list(curve), dtype=float), means, counts)
    out.fits = {s: tuple(float(v) for v in p[0]) for s, p in params.items()}
    lo_n, hi_n = shared[0], shared[-1]
    log_grid = np.linspace(math.log(lo_n), math.log(hi_n * horizon), GRID_POINTS)
    gap = _predict(params["finetune"], log_grid) - _predict(params["scratch"], log_grid)
    n_star = stays_below(gap, out.margin, log_grid)
    n_star[np.isclose(n_star, lo_n, rtol=1e-12)] = lo_n  # exp(log(n)) need not give n back exactly
    misfit = _lack_of_fit(params, ft, sc, draws, index) if draws.between == MEASURED else None
    if misfit is not None:  # the curve family does not describe the measured means: no n* to read off it
        out.n_star_misfit = misfit
        out.transfer = []
        return
    out.n_star, out.ci95 = float(n_star[0]), _interval(n_star[1:])
    out.extrapolated = bool(out.n_star > hi_n)
    behind = (gap > 0).any(axis=1)
    n_cross = np.where(behind, stays_below(gap, 0.0, log_grid), math.nan)
    if behind[0] and math.isfinite(n_cross[0]) and bool((gap[0] < -out.margin).any()):
        out.n_cross, out.n_cross_ci95 = float(n_cross[0]), _interval(np.where(np.isnan(n_cross[1:]), lo_n, n_cross[1:]))
    out.transfer = _transfer(ft, sc, draws, index, params["scratch"])


LACK_OF_FIT_P = 0.01


def _lack_of_fit(params: Mapping[str, np.ndarray], ft: Mapping[int, Replicates], sc: Mapping[int, Replicates],
                 draws: Draws, index: Mapping[tuple[str, int], int]) -> str | None:
    """Why n* cannot be read off the fitted curves, or None: a strategy's cell means scatter around
    its saturating power law more than their measured variances allow (chi-square, p < 1%), so
    the curves (and any point read off them) describe the family, not the data. Only where the
    between-run variance is measured: with one run a cell it is estimated from this very scatter."""
    from scipy import stats

    for strategy, curve in (("finetune", ft), ("scratch", sc)):
        sizes = np.array(list(curve), dtype=float)
        if sizes.size < 4:
            continue
        rows = [index[(strategy, int(n))] for n in sizes]
        fitted = _predict(params[strategy][:1], np.log(sizes))[0]
        var = draws.boot[rows].var(axis=1, ddof=1)
        q = float((((draws.point[rows] - fitted) ** 2) / np.maximum(var, 1e-12)).sum())
        p = float(stats.chi2.sf(q, sizes.size - 3))
        if p < LACK_OF_FIT_P:
            return (f"{strategy}'s cell means do not follow a saturating power law (lack of fit p = {p:.2g}): "
                    "n* is not estimable from these curves")
    return None


def _transfer(ft: Mapping[int, Replicates], sc: Mapping[int, Replicates], draws: Draws,
              index: Mapping[tuple[str, int], int], scratch_params: np.ndarray) -> list[TransferRow]:
    """D_E: the size at which scratch's fitted curve reaches fine-tune's mean at D_F = n."""
    s_lo, s_hi = min(sc), max(sc)
    a, b, c = scratch_params[:, 0], scratch_params[:, 1], scratch_params[:, 2]
    rows = []
    for n in ft:
        i = index[("finetune", n)]
        target = np.concatenate([[draws.point[i]], draws.boot[i]])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d_e = np.where(a > target, np.power(b / np.maximum(a - target, 1e-300), 1.0 / c), math.inf)
        d_e = np.maximum(d_e, 1e-9)
        lo, hi = _interval(d_e[1:])
        rows.append(TransferRow(n, float(target[0]), float(d_e[0]), (lo, hi),
                                bool(not (s_lo <= d_e[0] <= s_hi)), _transfer_note(n, lo, hi)))
    return rows


def _transfer_note(n: int, lo: float, hi: float) -> str:
    if not math.isfinite(hi):
        return "unstable: the interval is open (scratch's curve may never reach fine-tune's accuracy)"
    if lo - n < 0 < hi - n:
        return "unstable: the interval of D_T spans zero (transfer may help or hurt)"
    if lo > 0 and hi / lo > UNSTABLE_FACTOR:
        return f"unstable: the interval of D_E spans a factor of {hi / lo:.0f}"
    return ""


def _deciding_sizes(out: Comparison) -> list[int]:
    """Undecided sizes whose verdict could change the headline: all of them while the headline is
    inconclusive, else those bracketing n*."""
    undecided = [p.n for p in out.per_n if p.verdict == INCONCLUSIVE]
    if out.status == "inconclusive":
        return undecided
    if out.status in ("catch_up", "crossover") and out.n_star is not None and math.isfinite(out.n_star):
        sizes = [p.n for p in out.per_n]
        below = [n for n in sizes if n <= out.n_star]
        above = [n for n in sizes if n >= out.n_star]
        bracket = {below[-1] if below else sizes[0], above[0] if above else sizes[-1]}
        return [n for n in undecided if n in bracket]
    return []

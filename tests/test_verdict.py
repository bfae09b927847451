"""harness.report.verdict: per-size verdicts against the margin, the headline, n*, D_T, on hand-made
replicates whose answer is known."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from harness.report.crossover import Crossover
from harness.store.records import Caps
from harness.report.verdict import (
    EQUIVALENT,
    FINETUNE_BETTER,
    INCONCLUSIVE,
    SCRATCH_BETTER,
    Replicates,
    classify,
    compare,
    headline,
)

SIZES = (10, 20, 40, 80, 160, 320)
FB, SB, EQ, INC = FINETUNE_BETTER, SCRATCH_BETTER, EQUIVALENT, INCONCLUSIVE


def curve(a: float, b: float, c: float):
    return lambda n: a - b * n ** -c


def replicates(f, sd: float, reps: int, rng: np.random.Generator, sizes=SIZES) -> dict[int, Replicates]:
    return {n: Replicates.of(np.clip(f(n) + sd * rng.standard_normal(reps), 0, 1)) for n in sizes}


def test_classify_needs_the_whole_interval_beyond_or_inside_the_margin() -> None:
    assert classify(0.011, 0.2, 0.01) == FB
    assert classify(0.005, 0.2, 0.01) == INC  # ahead, but maybe by less than the margin
    assert classify(-0.2, -0.011, 0.01) == SB
    assert classify(-0.009, 0.009, 0.01) == EQ
    assert classify(-0.009, 0.011, 0.01) == INC
    assert classify(0.002, 0.008, 0.01) == EQ  # significantly ahead, yet by less than the margin
    assert classify(-math.inf, 0.0, 0.01) == INC and classify(math.nan, 0.0, 0.01) == INC


@pytest.mark.parametrize("verdicts, status", [
    ([EQ] * 4, "equivalent"),
    ([FB] * 4, "finetune_ahead"),
    ([SB] * 4, "scratch_ahead"),
    ([FB, FB, EQ, EQ], "catch_up"),
    ([FB, INC, EQ, EQ], "catch_up"),          # an undecided size inside the run moves n*, not the story
    ([FB, EQ, SB, SB], "crossover"),
    ([FB, SB], "crossover"),
    ([FB, EQ, FB, EQ], "inconclusive"),       # changes direction twice
    ([FB, SB, EQ], "inconclusive"),           # ahead, then back within the margin
    ([INC, EQ, EQ, EQ], "inconclusive"),      # the smallest size decides whether fine-tune ever led
    ([FB, FB, FB, INC], "inconclusive"),      # the largest size decides catch-up or not
    ([EQ, INC, EQ], "inconclusive"),          # "equivalent" means at every size
    ([EQ, EQ, SB], "inconclusive"),
    ([FB], "insufficient_data"),
])
def test_headline_patterns(verdicts, status) -> None:
    assert headline(verdicts)[0] == status


def test_a_clear_lead_everywhere_is_finetune_ahead_with_n_star_beyond_the_range() -> None:
    rng = np.random.default_rng(0)
    ft = replicates(curve(0.99, 0.3, 1.0), 0.002, 5, rng)
    sc = replicates(curve(0.90, 2.0, 1.0), 0.002, 5, rng)
    c = compare(ft, sc, n_boot=500)
    assert [p.verdict for p in c.per_n] == [FB] * len(SIZES)
    assert c.status == "finetune_ahead" and c.agreement == pytest.approx(1.0)
    # Curves that never meet: n* is "never" (inf, searched to the horizon), not an extrapolated crossover.
    assert c.n_star == math.inf and c.ci95 == (math.inf, math.inf) and c.n_cross is None
    assert c.intervals.startswith("replicates only")


def test_identical_strategies_with_precise_replicates_are_equivalent() -> None:
    rng = np.random.default_rng(1)
    f = curve(0.97, 0.5, 0.8)
    c = compare(replicates(f, 0.001, 8, rng), replicates(f, 0.001, 8, rng), n_boot=500)
    assert c.status == "equivalent", [p.verdict for p in c.per_n]
    assert all(abs(p.gap) < 0.01 for p in c.per_n)


def test_a_near_tie_within_the_margin_is_equivalent_everywhere_and_names_no_winner() -> None:
    """Fine-tune ahead by half the margin at every size, precisely measured: equivalent, not better."""
    rng = np.random.default_rng(2)
    sc = curve(0.97, 0.5, 0.8)
    c = compare(replicates(lambda n: sc(n) + 0.005, 0.001, 8, rng), replicates(sc, 0.001, 8, rng), n_boot=500)
    assert c.status == "equivalent", [p.verdict for p in c.per_n]
    for p in c.per_n:
        assert p.verdict == EQ and -0.01 < p.ci95[0] <= p.gap <= p.ci95[1] < 0.01
        assert 0 < p.gap < 0.01
    assert c.n_cross is None  # scratch never goes ahead beyond the margin


def test_noisy_identical_strategies_are_inconclusive_not_a_winner() -> None:
    rng = np.random.default_rng(2)
    f = curve(0.97, 0.5, 0.8)
    c = compare(replicates(f, 0.05, 3, rng), replicates(f, 0.05, 3, rng), n_boot=500)
    assert c.status == "inconclusive"
    undecided = [p for p in c.per_n if p.verdict == INC]
    assert undecided and all(p.decide and p.decide.text for p in undecided)
    # "More runs would decide n" only where the caps reach it; elsewhere the design cannot resolve it.
    assert c.needs == [p.n for p in undecided if p.decide.action in ("replicates", "tuning_runs")]
    assert all(p.decide.number <= {"replicates": 10, "tuning_runs": 6}[p.decide.action]
               for p in undecided if p.n in c.needs)


def test_what_decides_names_the_cheaper_reachable_addition() -> None:
    """Replicate noise dominates: more replicates decide; tuning noise dominates: more tuning runs;
    neither within the caps: a larger test split or nothing, with the numbers."""
    from harness.report.verdict import SizeVerdict, what_decides

    size = SizeVerdict(80, 0.002, (-0.02, 0.024), INC, {}, True, se=0.008)
    caps = Caps(max_tunings=6, max_seeds=10, trials_per_run=10)
    reps_heavy = {"test": 0.0, "finetune": (0.0, 1e-4, 3.0, 3.0), "scratch": (0.0, 1e-4, 3.0, 3.0)}
    d = what_decides(size, reps_heavy, 0.01, 2.5, caps, 1000)
    assert d.action == "replicates" and 3 < d.number <= 10, d
    tune_heavy = {"test": 0.0, "finetune": (2e-5, 1e-6, 3.0, 3.0), "scratch": (2e-5, 1e-6, 3.0, 3.0)}
    d = what_decides(size, tune_heavy, 0.01, 2.5, caps, 1000)
    assert d.action == "tuning_runs" and 3 < d.number <= 6, d
    test_heavy = {"test": 2e-5, "finetune": (1e-6, 1e-6, 3.0, 3.0), "scratch": (1e-6, 1e-6, 3.0, 3.0)}
    d = what_decides(size, test_heavy, 0.01, 2.5, caps, 1000)
    assert d.action == "larger_test" and d.number > 1000 and "test split" in d.text, d
    at_margin = dataclasses.replace(size, gap=0.0101)
    assert what_decides(at_margin, reps_heavy, 0.01, 2.5, caps, 1000).action is None


def test_a_catch_up_recovers_n_star_inside_its_interval() -> None:
    rng = np.random.default_rng(3)
    f, s = curve(0.975, 0.2, 1.2), curve(0.975, 2.0, 1.2)
    c = compare(replicates(f, 0.002, 6, rng), replicates(s, 0.002, 6, rng), n_boot=800)
    grid = np.geomspace(10, 3200, 20000)
    true_n_star = grid[np.flatnonzero(f(grid) - s(grid) > 0.01)[-1] + 1]
    assert c.status == "catch_up", [p.verdict for p in c.per_n]
    assert c.ci95[0] <= true_n_star <= c.ci95[1]
    assert c.n_star == pytest.approx(true_n_star, rel=0.25)
    assert not c.extrapolated and c.n_cross is None  # scratch never goes ahead beyond the margin
    assert c.switches == [next(p.n for p in c.per_n if p.verdict == EQ)]


def test_a_crossover_gives_n_cross_after_n_star() -> None:
    rng = np.random.default_rng(4)
    f, s = curve(0.95, 0.2, 1.2), curve(0.995, 2.0, 1.2)
    c = compare(replicates(f, 0.002, 6, rng), replicates(s, 0.002, 6, rng), n_boot=800)
    assert c.status == "crossover"
    assert c.n_star is not None and c.n_cross is not None and c.n_star < c.n_cross < 320
    assert c.n_cross_ci95[0] <= c.n_cross <= c.n_cross_ci95[1]


def test_test_examples_widen_the_interval_and_pairing_narrows_it() -> None:
    """Replicates that agree exactly leave only test noise; a shared split cancels what both got
    right or wrong on the same examples."""
    rng = np.random.default_rng(5)
    t = 400
    base = rng.random(t) < 0.85
    flip = rng.random(t) < 0.06  # scratch differs from fine-tune on 6% of the examples
    other = base ^ flip
    def cell(correct, split):
        rows = np.repeat(correct[None, :], 3, axis=0)
        return Replicates.of(rows.mean(1), rows, split)
    sizes = (10, 20, 40)
    paired = compare({n: cell(base, "a") for n in sizes}, {n: cell(other, "a") for n in sizes}, n_boot=2000)
    unpaired = compare({n: cell(base, "a") for n in sizes}, {n: cell(other, "b") for n in sizes}, n_boot=2000)
    bare = compare({n: Replicates.of(cell(base, "a").acc) for n in sizes},
                   {n: Replicates.of(cell(other, "a").acc) for n in sizes}, n_boot=2000)
    width = lambda c: c.per_n[0].ci95[1] - c.per_n[0].ci95[0]
    assert width(bare) < 1e-3  # replicate-only: identical re-runs look (nearly) certain
    assert bare.intervals.startswith("replicates only") and paired.intervals.startswith("replicates and test examples")
    # paired: sd of the mean of the per-example differences; unpaired: both splits' noise adds up
    d = base.astype(float) - other.astype(float)
    assert width(paired) == pytest.approx(2 * 1.96 * d.std(ddof=1) / math.sqrt(t), rel=0.15)
    independent = math.sqrt(base.var(ddof=1) / t + other.var(ddof=1) / t)
    assert width(unpaired) == pytest.approx(2 * 1.96 * independent, rel=0.15)
    assert width(unpaired) > 1.5 * width(paired)
    assert paired.per_n[0].test_noise and not bare.per_n[0].test_noise


def test_a_single_replicate_borrows_the_sd_of_the_nearest_size() -> None:
    rng = np.random.default_rng(6)
    f = curve(0.97, 0.5, 0.8)
    ft = replicates(f, 0.02, 4, rng)
    ft[10] = Replicates.of([f(10)])
    c = compare(ft, replicates(f, 0.02, 4, rng), n_boot=500)
    p10 = c.per_n[0]
    assert p10.replicates == {"finetune": 1, "scratch": 4}
    assert p10.ci95[1] - p10.ci95[0] > 0.02
    lonely = compare({n: Replicates.of([f(n)]) for n in SIZES}, {n: Replicates.of([f(n)]) for n in SIZES}, n_boot=100)
    assert all(p.verdict == INC for p in lonely.per_n)  # no replicate sd anywhere: nothing is decided


def test_effective_data_transferred_has_an_interval_and_says_when_it_is_unstable() -> None:
    rng = np.random.default_rng(7)
    f, s = curve(0.975, 0.2, 1.2), curve(0.975, 2.0, 1.2)
    c = compare(replicates(f, 0.003, 6, rng), replicates(s, 0.003, 6, rng), n_boot=800)
    rows = {r.n: r for r in c.transfer}
    small = rows[10]  # fine-tune at 10 is worth about 38 scratch examples: (2.0 / (0.2 * 10**-1.2)) ** (1 / 1.2)
    assert small.d_t > 0 and small.d_t_ci95[0] > 0 and small.note == ""
    assert small.d_e_ci95[0] <= (2.0 / (0.2 * 10 ** -1.2)) ** (1 / 1.2) <= small.d_e_ci95[1]
    assert rows[320].note.startswith("unstable")  # the curves meet: D_T could be anything
    assert small.multiplier == pytest.approx(small.d_e / 10)


def test_json_is_strict_and_carries_the_contract_fields() -> None:
    rng = np.random.default_rng(8)
    f = curve(0.97, 0.5, 0.8)
    for c in (compare(replicates(f, 0.05, 3, rng), replicates(f, 0.05, 3, rng), n_boot=200),
              compare({10: Replicates.of([0.5, 0.6])}, {20: Replicates.of([0.5, 0.6])}, n_boot=50)):
        doc = json.loads(json.dumps(Crossover.of(c).to_json(), allow_nan=False))
        for key in ("metric", "margin", "status", "n_star", "ci95", "n_cross", "n_cross_ci95", "extrapolated",
                    "agreement", "per_n", "switches", "measured_range"):
            assert key in doc
    assert doc["status"] == "insufficient_data" and doc["missing_sizes"] == [10, 20]


def test_bad_margin_is_refused() -> None:
    with pytest.raises(ValueError):
        compare({10: Replicates.of([0.5])}, {10: Replicates.of([0.5])}, margin=-0.1)

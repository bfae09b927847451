"""Calibration of the verdict on simulated studies with known truth: one row per scenario.

    python benchmarks/bench_calibration.py                          # 500 studies per scenario
    python benchmarks/bench_calibration.py --studies 200 --only null_tune_abs_k3 null_tune_abs_k1

Columns: the true status; K tuning runs x R re-runs a cell; the lowest per-size coverage of the
pointwise 95% interval (and the size where it is lowest); the joint coverage of the simultaneous
95% band (every size at once); family-wise false claims (share of studies with at least one
per-size claim the true gap contradicts); the false share among decided per-size verdicts; n*
coverage among studies reporting an interval, and the share whose interval holds the true n* or
that say n* is not estimable (scenarios whose true n* lies above the smallest size, in range or
beyond it); power (share of studies whose headline is the true status); seconds.

Targets (issue 21): per-size coverage >= 92% at every size with tuning noise; family-wise false
claims <= 5% under the null and at the margin; n* covered or "not estimable" >= 90% off-family.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

from harness.calibration.simulate import SCENARIOS, calibrate


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--n-boot", type=int, default=300)
    parser.add_argument("--replicates", type=int, default=None, help="override every scenario's re-runs per tuning run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    args = parser.parse_args()
    header = ["scenario", "K x R", "true status", "true n*", "min per-size coverage (n)", "band joint coverage",
              "family-wise false claims", "false / decided", "n* coverage", "n* covered or not estimable",
              "power", "between runs", "studies", "s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for i, (name, scenario) in enumerate(SCENARIOS.items()):
        if args.only and name not in args.only:
            continue
        if args.replicates and name != "null_low_noise":
            scenario = dataclasses.replace(scenario, replicates=args.replicates)
        started = time.perf_counter()
        c = calibrate(scenario, studies=args.studies, n_boot=args.n_boot, seed=args.seed + i)
        t = c.truth
        n_min, cov_min = c.min_size_coverage
        scored = t.n_star_scored(scenario.sizes)
        row = [name, f"{scenario.tunings} x {scenario.replicates}", t.status,
               f"{t.n_star:,.0f}" if scored else "-", f"{_pct(cov_min)} ({n_min})", _pct(c.band_coverage),
               _pct(c.familywise_false), _pct(c.false_among_decided),
               _pct(c.coverage) if scored else "-", _pct(c.n_star_ok) if scored else "-", _pct(c.power),
               ", ".join(f"{k} {v}" for k, v in sorted(c.between.items())), str(c.studies),
               f"{time.perf_counter() - started:.0f}"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

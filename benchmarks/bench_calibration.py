"""Calibration of the verdict on simulated studies with known truth: one row per scenario.

    python benchmarks/bench_calibration.py                       # 1,000 studies per scenario
    python benchmarks/bench_calibration.py --studies 200 --replicates 10

Columns: the true status; the share of studies declaring each status; "false winner" (crossover,
finetune_ahead or scratch_ahead where the truth is another status); "wrong decided" (any decided
status that is not the true one); per-size claims the true gap contradicts; n* coverage (share of
studies whose 95% interval holds the true n*, among scenarios whose truth crosses in range).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

from harness.report.simulate import SCENARIOS, calibrate

STATUS_COLUMNS = ("crossover", "catch_up", "finetune_ahead", "equivalent", "scratch_ahead", "inconclusive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--n-boot", type=int, default=300)
    parser.add_argument("--replicates", type=int, default=None, help="override every scenario's replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    args = parser.parse_args()
    header = (["scenario", "replicates", "true status", "true n*"] + list(STATUS_COLUMNS)
              + ["false winner", "wrong decided", "per-size false", "n* coverage", "s"])
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for i, (name, scenario) in enumerate(SCENARIOS.items()):
        if args.only and name not in args.only:
            continue
        if args.replicates and name != "null_low_noise":
            scenario = dataclasses.replace(scenario, replicates=args.replicates)
        started = time.perf_counter()
        c = calibrate(scenario, studies=args.studies, n_boot=args.n_boot, seed=args.seed + i)
        n_star = c.truth.n_star
        row = [name, str(scenario.replicates), c.truth.status,
               f"{n_star:.0f}" if math.isfinite(n_star) and c.truth.status in ("catch_up", "crossover") else "-"]
        row += [f"{c.rate(s):.1%}" for s in STATUS_COLUMNS]
        row += [f"{c.false_winner_rate:.1%}", f"{c.wrong_decided / c.studies:.1%}",
                f"{c.size_false / max(1, c.size_verdicts):.1%}",
                "-" if math.isnan(c.coverage) else f"{c.coverage:.1%}", f"{time.perf_counter() - started:.0f}"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Compute to a stated precision: the adaptive study against fixed grids, on simulated studies.

    python benchmarks/bench_adaptive.py                      # 200 studies per scenario and procedure
    python benchmarks/bench_adaptive.py --studies 50 --only crossover

Adaptive: the scenario's grid (a factor of 2 apart) at 3 replicates, the top-up where undecided sizes
decide the headline (to 10), then sizes at the geometric midpoint of n*'s bracket (at most 4 cells),
exactly as harness-study does (harness/calibration/adaptive.py). Fixed: a grid fine enough to
bracket any n* within 1.5x, the same replicates at every cell. Compute in training runs (10 per
tuned cell, 1 per replicate). Precision: "bracketed" = the measured sizes either side of the
estimated n* are within 1.5x and hold the true n*; "decided" = the share of per-size verdicts that
are not inconclusive. The last column is the fixed grid's compute over the adaptive study's, for the
cheapest fixed grid at least as precise on both counts ("-": none of those tried is).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness.calibration.simulate import SCENARIOS, truth
from harness.calibration.adaptive import Policy, adaptive, fine_grid, fixed


def summarise(outcomes) -> tuple[float, float, float, str]:
    statuses = {}
    for o in outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    top = max(statuses, key=statuses.get)
    return (float(np.mean([o.runs for o in outcomes])), float(np.mean([o.bracketed for o in outcomes])),
            float(np.mean([o.decided for o in outcomes])), f"{top} {statuses[top] / len(outcomes):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=["catch_up", "crossover", "null"])
    parser.add_argument("--replicates", nargs="*", type=int, default=[3, 10, 20, 30], help="fixed grids tried")
    args = parser.parse_args()
    policy = Policy()
    print("| scenario | true n* | procedure | cells | runs (mean) | bracketed | decided | most common status | "
          "fixed / adaptive compute at equal precision |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.only:
        s = SCENARIOS[name]
        started = time.perf_counter()
        runs = {}
        ada = [adaptive(s, policy, np.random.default_rng(k), k) for k in range(args.studies)]
        a_runs, a_br, a_dec, a_top = summarise(ada)
        rows = [("adaptive", np.mean([o.cells for o in ada]), a_runs, a_br, a_dec, a_top)]
        for r in args.replicates:
            fx = [fixed(s, policy, r, np.random.default_rng(10_000 + k), k) for k in range(args.studies)]
            f_runs, f_br, f_dec, f_top = summarise(fx)
            rows.append((f"fixed 1.5x grid, {r} replicates", fx[0].cells, f_runs, f_br, f_dec, f_top))
            runs[r] = (f_runs, f_br >= a_br and f_dec >= a_dec)
        equal = [runs[r][0] for r in sorted(runs) if runs[r][1]]
        ratio = f"{equal[0] / a_runs:.1f}x" if equal else "-"
        n_star = truth(s).n_star
        for i, (proc, cells, r_mean, br, dec, top) in enumerate(rows):
            print(f"| {name if i == 0 else ''} | {n_star:.0f} | {proc} | {cells:.1f} | {r_mean:.0f} | {br:.1%} | "
                  f"{dec:.1%} | {top} | {ratio if i == 0 else ''} |", flush=True)
        print(f"<!-- {name}: {args.studies} studies per procedure, grid {s.sizes}, fine grid "
              f"{fine_grid(s.sizes, policy.bracket)}, {time.perf_counter() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()

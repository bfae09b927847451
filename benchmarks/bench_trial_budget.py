"""How many trials a tuning run needs: what the first m of a cell's 10 trials already find.

Issue 21 tunes every cell K times (tuning runs), so the per-run trial budget `tune.n_trials` (m)
trades against K at a fixed cost. This script measures, from the committed 10-trial searches
(studies/*/trials.csv: one row per trial, `value` = validation accuracy on 150 images, `state`,
`flops`), what a run of only m trials would have found, m = 3..10. No training: seconds.

Why the first m trials are what an m-trial run would have done: TPE is sequential and does not
look at the total budget, the first 3 trials of every cell are the search space's fixed recipes
(enqueued), and Hyperband prunes a trial on the trials before it. So the first m trials of the
stored run *are* an m-trial run (up to the interleaving of 2 workers). That is one order per
cell; as a sensitivity, the same quantities are averaged exactly over all 7! orders of the 7
sampled trials behind the 3 recipes (states and FLOPs kept as stored: pruning would differ a
little in another order).

Per m, per strategy and over all cells:
- shortfall: best validation accuracy of the first m trials (COMPLETE ones: what the harness
  re-runs, harness/tuning/rerun.py) below the best of all 10, in points (1 validation image = 0.67);
- gain: the share of the 10-trial gain over the recipes (best of 10 - best of 3) reached by m;
- same winner: how often the first m trials' winner is the 10-trial winner (ties: the earlier);
- noise only: the shortfall the same cells would show if their completed trials were equally good
  and only the validation draw (binomial, 150 images) told them apart: the winner's curse alone;
- FLOPs: the share of the 10 trials' FLOPs the first m spent (pooled over cells);
- cost of K runs of m trials with R re-runs of each run's winner (`study.seeds`), relative to
  today's one run of 10 trials with 3 re-runs (re-run FLOPs per replicate from studies/*/cells.csv).

The shortfall is a bias of each run's winner on *validation* accuracy, and partly an optimistic
one (a best of more trials is also a best of more noise): read it beside the selection noise of a
150-image split, sqrt(p(1-p)/150), printed below the table. A shortfall that differs between the
strategies biases the gap; the column `ft - sc` shows that.

    python benchmarks/bench_trial_budget.py                      # both committed studies
    python benchmarks/bench_trial_budget.py --studies studies/digits --seeds 3 2 --k 2 3
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
N_RECIPES = 3  # the enqueued recipes: trials 0-2 of every cell
POINTS = 100.0


def load(study_dirs: list[Path]) -> tuple[list[dict], pd.DataFrame]:
    """One dict per cell: values (NaN unless COMPLETE), FLOPs, in trial order; and the cells table."""
    cells, tables = [], []
    for d in study_dirs:
        trials = pd.read_csv(d / "trials.csv").sort_values(["study_name", "number"])
        for name, g in trials.groupby("study_name", sort=False):
            value = np.where(g["state"].to_numpy() == "COMPLETE", g["value"].to_numpy(float), np.nan)
            cells.append({"study": d.name, "cell": name, "strategy": g["strategy"].iloc[0],
                          "n_train": int(g["n_train"].iloc[0]), "value": value,
                          "flops": g["flops"].to_numpy(float), "n_val": int(g["n_val"].iloc[0])})
        table = pd.read_csv(d / "cells.csv")
        table["study"] = d.name
        tables.append(table)
    return cells, pd.concat(tables, ignore_index=True)


def first_m(value: np.ndarray, flops: np.ndarray, orders: np.ndarray, m: int) -> dict[str, np.ndarray]:
    """Per order (rows of `orders`: trial indices): best of the first m, best of all, same winner, FLOPs share."""
    v = np.where(np.isnan(value), -np.inf, value)[orders]          # (orders, trials)
    best_m, best_all = v[:, :m].max(axis=1), v.max(axis=1)
    win_m, win_all = v[:, :m].argmax(axis=1), v.argmax(axis=1)     # positions; ties: the earlier
    f = flops[orders]
    return {"short": best_all - best_m, "same": (win_m == win_all).astype(float),
            "flops": f[:, :m].sum(axis=1), "flops_all": f.sum(axis=1), "best3": v[:, :N_RECIPES].max(axis=1),
            "best_all": best_all}


def orders_for(n: int, mode: str) -> np.ndarray:
    if mode == "actual":
        return np.arange(n)[None, :]
    rest = list(range(N_RECIPES, n))   # every order of the sampled trials behind the fixed recipes
    return np.array([list(range(N_RECIPES)) + list(p) for p in itertools.permutations(rest)])


def noise_only(value: np.ndarray, n_val: int, m: int, draws: int = 4000, seed: int = 0) -> float:
    """Expected shortfall, actual order, if every COMPLETE trial of the cell were equally good (true
    accuracy = the cell's best) and only the validation draw told them apart: binomial(n_val, p)."""
    done = ~np.isnan(value)
    p = float(np.nanmax(value))
    rng = np.random.default_rng(seed)
    v = np.full((draws, len(value)), -np.inf)
    v[:, done] = rng.binomial(n_val, p, size=(draws, int(done.sum()))) / n_val
    return float((v.max(axis=1) - v[:, :m].max(axis=1)).mean())


def measure(cells: list[dict], ms: range, mode: str) -> pd.DataFrame:
    rows = []
    for c in cells:
        orders = orders_for(len(c["value"]), mode)
        for m in ms:
            r = first_m(c["value"], c["flops"], orders, m)
            null = POINTS * noise_only(c["value"], c["n_val"], m) if mode == "actual" else math.nan
            gain_all = r["best_all"] - r["best3"]
            rows.append({"study": c["study"], "cell": c["cell"], "strategy": c["strategy"], "m": m, "mode": mode,
                         "short": POINTS * r["short"].mean(), "short_gt1img": float((r["short"] > 1.5 / c["n_val"]).mean()),
                         "gain": POINTS * (gain_all - r["short"]).mean(), "gain_all": POINTS * gain_all.mean(),
                         "same": r["same"].mean(), "flops": r["flops"].mean(), "flops_all": r["flops_all"].mean(),
                         "null": null})
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, m, group): mean shortfall, gain share (ratio of sums), same winner, pooled FLOPs share."""
    out = []
    for (mode, m), g in df.groupby(["mode", "m"]):
        for group, h in [("finetune", g[g.strategy == "finetune"]), ("scratch", g[g.strategy == "scratch"]), ("all", g)]:
            gain = h["gain"].sum() / h["gain_all"].sum() if h["gain_all"].sum() > 0 else math.nan
            out.append({"mode": mode, "m": m, "group": group, "short": h["short"].mean(), "null": h["null"].mean(), "short_gt1img": h["short_gt1img"].mean(),
                        "gain": gain, "same": h["same"].mean(), "flops": h["flops"].sum() / h["flops_all"].sum()})
    return pd.DataFrame(out)


def bootstrap(df: pd.DataFrame, n_boot: int = 4000, seed: int = 0) -> dict[int, tuple]:
    """95% intervals over cells (resampled within strategy) of the actual order's shortfall:
    fine-tune minus scratch, and over all cells."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, g in df[df["mode"] == "actual"].groupby("m"):
        ft = g[g.strategy == "finetune"]["short"].to_numpy()
        sc = g[g.strategy == "scratch"]["short"].to_numpy()
        bf = ft[rng.integers(0, len(ft), (n_boot, len(ft)))]
        bs = sc[rng.integers(0, len(sc), (n_boot, len(sc)))]
        diff = bf.mean(axis=1) - bs.mean(axis=1)
        both = np.concatenate([bf, bs], axis=1).mean(axis=1)
        out[m] = (tuple(np.quantile(diff, [0.025, 0.975])), tuple(np.quantile(both, [0.025, 0.975])))
    return out


def rerun_share(table: pd.DataFrame) -> float:
    """FLOPs of one re-run of a winner per FLOPs of a 10-trial search, pooled over cells."""
    return float((table["rerun_flops"] / table["n_seeds"]).sum() / table["flops_total"].sum())


def markdown(s: pd.DataFrame, df: pd.DataFrame, rerun: float, seeds: int, ks: list[int]) -> str:
    def get(mode, m, group, col):
        return s[(s["mode"] == mode) & (s.m == m) & (s.group == group)][col].iloc[0]

    ci = bootstrap(df)

    lines = ["Shortfall = best validation accuracy of 10 trials - of the first m, points (mean over cells); "
             "in brackets: the mean over all orders of the 7 sampled trials behind the 3 recipes; in parentheses: "
             "95% bootstrap interval over cells (actual order). >= 2 images: share of cells whose first m trials "
             "miss the best by 2 validation images or more. noise only: the shortfall all cells would show (actual "
             "order) if their completed trials were equally good and only the 150-image validation draw told them apart.", "",
             "| m | shortfall fine-tune | shortfall scratch | ft - sc | shortfall all | noise only | >= 2 images | gain reached | same winner | FLOPs share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in sorted(s.m.unique()):
        cell = []
        for col, fmt in [("short", "{:.2f}")]:
            for group in ("finetune", "scratch"):
                cell.append(f"{fmt.format(get('actual', m, group, col))} [{fmt.format(get('random', m, group, col))}]")
        diff_a = get("actual", m, "finetune", "short") - get("actual", m, "scratch", "short")
        diff_r = get("random", m, "finetune", "short") - get("random", m, "scratch", "short")
        (dl, dh), (al, ah) = ci[m]
        cell.append(f"{diff_a:+.2f} ({dl:+.2f} to {dh:+.2f}) [{diff_r:+.2f}]")
        cell.append(f"{get('actual', m, 'all', 'short'):.2f} ({al:.2f}-{ah:.2f}) [{get('random', m, 'all', 'short'):.2f}]")
        cell.append(f"{get('actual', m, 'all', 'null'):.2f}")
        cell.append(f"{get('actual', m, 'all', 'short_gt1img'):.0%} [{get('random', m, 'all', 'short_gt1img'):.0%}]")
        cell.append(f"{get('actual', m, 'all', 'gain'):.0%} [{get('random', m, 'all', 'gain'):.0%}]")
        cell.append(f"{get('actual', m, 'all', 'same'):.0%} [{get('random', m, 'all', 'same'):.0%}]")
        cell.append(f"{get('actual', m, 'all', 'flops'):.2f} [{get('random', m, 'all', 'flops'):.2f}]")
        lines.append(f"| {m} | " + " | ".join(cell) + " |")

    # Selection noise of the validation split at each cell's best accuracy (10 trials).
    n_val = int(df.attrs["n_val"])
    noise = {g: POINTS * np.sqrt(p * (1 - p) / n_val) for g, p in df.attrs["p_best"].items()}
    lines += ["", f"Selection noise of one {n_val}-image validation accuracy, sqrt(p(1-p)/{n_val}) at each cell's "
              "best of 10, points, median (range) over cells: " + "; ".join(
                  f"{g} {np.median(v):.2f} ({v.min():.2f}-{v.max():.2f})" for g, v in noise.items())
              + f"; one image = {POINTS / n_val:.2f} points."]

    # Cost of K runs of m trials, each winner re-run R times, vs today's one run of 10 trials re-run 3 times.
    base = 1.0 + 3 * rerun
    lines += ["", f"Cost relative to today's one run of 10 trials: tuning FLOPs only, then with R re-runs per "
              f"run vs today's 3 (one re-run = {rerun:.2f} of a 10-trial search's FLOPs, pooled over "
              "studies/*/cells.csv; before any top-up); actual order:", "",
              "| m | " + " | ".join(f"K={k}: tuning, R=" + ", R=".join(map(str, seeds)) for k in ks) + " |",
              "|---|" + "---|" * len(ks)]
    for m in sorted(s.m.unique()):
        f = get("actual", m, "all", "flops")
        lines.append(f"| {m} | " + " | ".join(
            f"{k * f:.2f}, " + ", ".join(f"{k * (f + r * rerun) / base:.2f}" for r in seeds) for k in ks) + " |")

    # Per study: the shortfall over all its cells (actual order), to see whether the two agree.
    lines += ["", "Per study, shortfall all cells, actual order [random orders], points:", "",
              "| m | " + " | ".join(sorted(df.study.unique())) + " |", "|---|" + "---|" * df.study.nunique()]
    for m in sorted(s.m.unique()):
        vals = []
        for st in sorted(df.study.unique()):
            a = df[(df.study == st) & (df.m == m) & (df["mode"] == "actual")]["short"].mean()
            r = df[(df.study == st) & (df.m == m) & (df["mode"] == "random")]["short"].mean()
            vals.append(f"{a:.2f} [{r:.2f}]")
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", nargs="+", type=Path, default=[REPO / "studies" / "digits", REPO / "studies" / "digits_split"])
    p.add_argument("--seeds", type=int, nargs="+", default=[3, 2], help="re-runs of each tuning run's winner (study.seeds) for the cost table")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4], help="tuning runs per cell for the cost table")
    args = p.parse_args(argv)
    cells, table = load(args.studies)
    n = {len(c["value"]) for c in cells}
    if n != {10}:
        raise SystemExit(f"expected 10 trials in every cell, found {sorted(n)}")
    ms = range(N_RECIPES, 11)
    df = pd.concat([measure(cells, ms, "actual"), measure(cells, ms, "random")], ignore_index=True)
    df.attrs["n_val"] = cells[0]["n_val"]
    df.attrs["p_best"] = {g: np.array([np.nanmax(c["value"]) for c in cells if c["strategy"] == g])
                          for g in ("finetune", "scratch")}
    text = (f"{len(cells)} cells ({', '.join(f'{d.name}' for d in args.studies)}), 10 trials each, "
            f"first {N_RECIPES} = recipes.\n\n" + markdown(summarise(df), df, rerun_share(table), args.seeds, args.k))
    print(text)
    return text


if __name__ == "__main__":
    main()

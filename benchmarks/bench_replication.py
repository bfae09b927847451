"""Replication on real runs: does a study run again with every seed different land where its
intervals say it will? (issue 21, item 10)

What. The same study is run twice by `harness-study` (a subprocess each, one after the other),
each with its own Optuna storage file and report folder and with every seed different:

    run a: tune.sampler_seed=0  seed=0       data.draw=0
    run b: tune.sampler_seed=1  seed=100000  data.draw=100

- `tune.sampler_seed`: each cell's TPE seed (with its tuning run index, harness/tuning/tune.py);
- `seed`: the base training seed (replicate r of tuning run k trains from its own seed from it);
- `data.draw`: the base index of the validation draws and training orders: tuning run k of a
  cell uses draw + k, so no validation split or tuning subset is shared between a and b.

The test split stays fixed and shared (data.split_seed), and so does the pretrained source model
(pretrain.seed; both runs share the pretraining cache): the report's intervals hold those fixed
too. Then, at every size both reports measured (the adaptive study may add different sizes to a
and b; those are listed, not scored), with gap = fine-tune minus scratch accuracy:

    z  = |gap_a - gap_b| / sqrt(se_a'^2 + se_b'^2),    se' = se * sqrt(1 - share_test)

se is the report's bootstrap sd of the gap (crossover.json per_n[i]["se"]; where absent, half the
width of "ci95" / 1.96). share_test (per_n[i]["variance_shares"]["test"]) is the share of the
gap's variance that comes from which test examples were drawn: a and b are scored on the same
test examples, so that part is common to both gaps and cancels in their difference; counting it
would make z too small. Where a report has no test share, se is used as it is and the table says
so. The plain z with the full se is printed beside it.

Why. The report's intervals claim to hold when the whole study is run again (tuning included):
then the difference of two independent runs' gaps is about normal with sd sqrt(se_a'^2 + se_b'^2),
so z <= 1.96 at about 95% of sizes. Target: z <= 1.96 at >= 90% of the sizes (the slack is for
the few sizes a study has, and the bootstrap's own error). Intervals that describe one tuning
outcome only (before issue 21) fail it: the gap moves with which configuration wins the tuning.
One pair of runs is a small sample (7-9 sizes); read the z values, not only the share.

How.

    python benchmarks/bench_replication.py --dir outputs/replication                  # the default study, twice
    python benchmarks/bench_replication.py --dir /tmp/rep --overrides study.n_train=[10,40,160] tune.n_trials=4
    python benchmarks/bench_replication.py --compare a/crossover.json b/crossover.json  # no training
    python benchmarks/bench_replication.py --dir D --against studies/digits/crossover.json  # run b only

--against takes a committed study as run a: it must have been made with run a's seeds (the
defaults: tune.sampler_seed=0, seed=0, data.draw=0) and the same recipe and overrides; only run b
is trained, which halves the cost.

Both runs take the default study's time each (studies/digits/RUN.md); --overrides go to both
runs. Nothing here reads a test split itself: the figures are the reports'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

Z_CRIT = 1.96
TARGET = 0.90

# Every seed different between the two runs; the test split (data.split_seed) is shared.
RUNS = {
    "a": {"tune.sampler_seed": 0, "seed": 0, "data.draw": 0},
    "b": {"tune.sampler_seed": 1, "seed": 100_000, "data.draw": 100},
}
# Set by this script: an override of one of these would break the design (same seeds, same storage).
OWNED = ("study.name", "storage.url", "report.dir", "tune.sampler_seed", "seed", "data.draw", "data.split_seed")


# --------------------------------------------------------------------------------- the comparison

def size_se(row: dict) -> tuple[float, str]:
    """The gap's standard error at one size and where it came from ("se" or "ci95")."""
    se = row.get("se")
    if se is not None and math.isfinite(float(se)):
        return float(se), "se"
    ci = row.get("ci95")
    if ci and ci[0] is not None and ci[1] is not None:
        return (float(ci[1]) - float(ci[0])) / 2 / Z_CRIT, "ci95"
    return math.nan, "none"


def test_share(row: dict) -> float | None:
    """The test examples' share of the gap's variance, or None when the report does not give it."""
    shares = row.get("variance_shares") or {}
    share = shares.get("test")
    return None if share is None else min(max(float(share), 0.0), 1.0)


def compare(a: dict, b: dict) -> dict:
    """Per size both crossover dicts measured: the gaps, ses, z without the shared test noise
    (z) and with it (z_full); plus the shares of sizes with z <= 1.96 and the sizes only one has."""
    rows_a = {int(r["n"]): r for r in a.get("per_n", [])}
    rows_b = {int(r["n"]): r for r in b.get("per_n", [])}
    rows = []
    for n in sorted(set(rows_a) & set(rows_b)):
        ra, rb = rows_a[n], rows_b[n]
        if ra.get("gap") is None or rb.get("gap") is None:
            continue
        gap_a, gap_b = float(ra["gap"]), float(rb["gap"])
        (se_a, src_a), (se_b, src_b) = size_se(ra), size_se(rb)
        share_a, share_b = test_share(ra), test_share(rb)
        se_a2 = se_a * math.sqrt(1 - share_a) if share_a is not None else se_a
        se_b2 = se_b * math.sqrt(1 - share_b) if share_b is not None else se_b
        diff = abs(gap_a - gap_b)
        rows.append({"n": n, "gap_a": gap_a, "gap_b": gap_b, "se_a": se_a, "se_b": se_b,
                     "se_from": (src_a, src_b), "test_share_a": share_a, "test_share_b": share_b,
                     "test_corrected": share_a is not None and share_b is not None,
                     "z": _z(diff, se_a2, se_b2), "z_full": _z(diff, se_a, se_b)})
    return {"rows": rows, "share": _share([r["z"] for r in rows]), "share_full": _share([r["z_full"] for r in rows]),
            "only_a": sorted(set(rows_a) - set(rows_b)), "only_b": sorted(set(rows_b) - set(rows_a))}


def _z(diff: float, se_a: float, se_b: float) -> float:
    s = math.sqrt(se_a ** 2 + se_b ** 2)
    if s > 0:
        return diff / s
    return 0.0 if diff == 0 else math.inf


def _share(zs: list[float]) -> float:
    zs = [z for z in zs if not math.isnan(z)]
    return sum(z <= Z_CRIT for z in zs) / len(zs) if zs else math.nan


def markdown(result: dict) -> str:
    pts = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    sh = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    lines = ["Gaps and standard errors in points (fine-tune minus scratch). z: |gap_a - gap_b| / sqrt(se_a'^2 + se_b'^2), "
             "se' = se * sqrt(1 - test share) (the test split is shared by both runs); z full: with the full se.", "",
             "| n | gap a | gap b | se a | se b | test share a / b | z | z full |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        note = "" if r["test_corrected"] else " (no test share: full se)"
        src = "" if r["se_from"] == ("se", "se") else f" (se from {'/'.join(r['se_from'])})"
        lines.append(f"| {r['n']} | {pts(r['gap_a'])} | {pts(r['gap_b'])} | {100 * r['se_a']:.2f} | {100 * r['se_b']:.2f}{src} | "
                     f"{sh(r['test_share_a'])} / {sh(r['test_share_b'])} | {r['z']:.2f}{' *' if r['z'] > Z_CRIT else ''}{note} | "
                     f"{r['z_full']:.2f} |")
    k = len(result["rows"])
    within = sum(r["z"] <= Z_CRIT for r in result["rows"])
    verdict = "met" if result["share"] >= TARGET else "NOT met"
    lines += ["", f"z <= {Z_CRIT} at {within} of {k} sizes ({result['share']:.0%}; target >= {TARGET:.0%}: {verdict}); "
              f"with the full se: {result['share_full']:.0%}. * marks z > {Z_CRIT}."]
    if not all(r["test_corrected"] for r in result["rows"]):
        lines.append("Some sizes have no test share in a report: their z uses the full se (smaller z, lenient).")
    for side in ("a", "b"):
        if result[f"only_{side}"]:
            lines.append(f"Measured only in run {side} (not scored): n = {', '.join(map(str, result[f'only_{side}']))}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- the two runs

def study_command() -> list[str]:
    """The harness-study console script of this interpreter's environment (else on PATH, else -m)."""
    here = Path(sys.executable).with_name("harness-study")
    if here.exists():
        return [str(here)]
    found = shutil.which("harness-study")
    return [found] if found else [sys.executable, "-m", "harness.cli.study"]


def run_one(side: str, root: Path, recipe: str, overrides: list[str]) -> Path:
    seeds = [f"{k}={v}" for k, v in RUNS[side].items()]
    cmd = study_command() + [f"recipe={recipe}", f"study.name=rep_{side}", f"storage.url=sqlite:///{root / side}.db",
                             f"report.dir={root / side}", *seeds, *overrides]
    print(f"run {side}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    subprocess.run(cmd, cwd=root, check=True, env=os.environ.copy())
    print(f"run {side}: {time.monotonic() - start:.0f} s", flush=True)
    return root / side / "crossover.json"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                   help="only compare two existing crossover.json files (no training)")
    p.add_argument("--dir", type=Path, default=Path("outputs/replication"),
                   help="where both runs write: a.db, b.db, a/ and b/ (reports), outputs/ (Hydra, pretraining cache)")
    p.add_argument("--against", type=Path, metavar="A.json",
                   help="an existing crossover.json made with run a's seeds (e.g. studies/digits/): train run b only")
    p.add_argument("--recipe", default="digits")
    p.add_argument("--overrides", nargs="*", action="extend", default=[], help="Hydra overrides for both runs")
    args = p.parse_args(argv)
    if args.compare:
        a_path, b_path = args.compare
    else:
        owned = [o for o in args.overrides if o.lstrip("+~").split("=")[0] in OWNED]
        if owned:
            p.error(f"{', '.join(owned)}: set by this script for each run (seeds, storage and report differ by design)")
        root = args.dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        if any((root / f"{s}.db").exists() for s in RUNS):
            p.error(f"{root} already holds a.db or b.db: a run would resume them; give an empty --dir")
        if args.against is not None and not args.against.is_file():
            p.error(f"--against {args.against}: no such file; give a crossover.json made with run a's seeds")
        a_path = args.against if args.against is not None else run_one("a", root, args.recipe, args.overrides)
        b_path = run_one("b", root, args.recipe, args.overrides)
    result = compare(json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text()))
    print(f"a: {a_path}\nb: {b_path}\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

"""benchmarks/bench_replication.py's comparison of two crossover.json files (no training): the z of
each size with and without the shared test split's share of the variance, the fallbacks, and the
share of sizes within 1.96."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_replication", REPO / "benchmarks" / "bench_replication.py")
rep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rep)


def crossover(rows: list[dict]) -> dict:
    return {"metric": "test_acc", "per_n": rows}


A = crossover([
    {"n": 10, "gap": 0.10, "se": 0.03, "variance_shares": {"tuning": 0.5, "replicates": 0.14, "test": 0.36}},
    {"n": 20, "gap": 0.05, "se": 0.01, "variance_shares": {"tuning": 0.2, "replicates": 0.05, "test": 0.75}},
    {"n": 40, "gap": 0.02, "ci95": [-0.0192, 0.0592]},                 # no se, no shares: se from ci95
    {"n": 80, "gap": 0.00, "se": 0.01, "variance_shares": {"tuning": 1.0, "replicates": 0.0, "test": 0.0}},
    {"n": 453, "gap": 0.01, "se": 0.01},                                # only in a
])
B = crossover([
    {"n": 10, "gap": 0.05, "se": 0.04, "variance_shares": {"tuning": 0.5, "replicates": 0.14, "test": 0.36}},
    {"n": 20, "gap": 0.03, "se": 0.01, "variance_shares": {"tuning": 0.2, "replicates": 0.05, "test": 0.75}},
    {"n": 40, "gap": -0.02, "se": 0.02},
    {"n": 80, "gap": 0.00, "se": 0.01, "variance_shares": {"tuning": 1.0, "replicates": 0.0, "test": 0.0}},
    {"n": 226, "gap": 0.01, "se": 0.01},                                # only in b
])


def by_n(result: dict) -> dict[int, dict]:
    return {r["n"]: r for r in result["rows"]}


def test_z_removes_the_shared_test_share():
    rows = by_n(rep.compare(A, B))
    assert sorted(rows) == [10, 20, 40, 80]
    # n=10: diff 0.05; full se sqrt(0.03^2 + 0.04^2) = 0.05; without the test share (36%) 0.05 * 0.8 = 0.04.
    assert rows[10]["z_full"] == pytest.approx(1.0)
    assert rows[10]["z"] == pytest.approx(0.05 / 0.04)
    # n=20: a 75% test share halves each se: z doubles, and crosses 1.96 where the full-se z does not.
    assert rows[20]["z_full"] == pytest.approx(0.02 / math.sqrt(2e-4))
    assert rows[20]["z"] == pytest.approx(0.02 / math.sqrt(2 * 0.005 ** 2))
    assert rows[20]["z_full"] < 1.96 < rows[20]["z"]
    assert rows[10]["test_corrected"] and rows[20]["test_corrected"]


def test_fallbacks_se_from_ci95_and_no_test_share():
    rows = by_n(rep.compare(A, B))
    # a's se from its ci95 (half width / 1.96 = 0.02); no test share on either side: the full se is used.
    assert rows[40]["se_a"] == pytest.approx(0.02)
    assert rows[40]["se_from"] == ("ci95", "se")
    assert not rows[40]["test_corrected"]
    assert rows[40]["z"] == rows[40]["z_full"] == pytest.approx(0.04 / math.sqrt(0.02 ** 2 + 0.02 ** 2))
    # identical gaps: z = 0 (the test share 0 leaves se as it is).
    assert rows[80]["z"] == 0.0 and rows[80]["z_full"] == 0.0


def test_share_within_and_sizes_of_one_run(capsys, tmp_path):
    result = rep.compare(A, B)
    # z: 1.25, 2.83, 1.41, 0 -> 3 of 4 within 1.96; with the full se 1.0, 1.41, 1.41, 0 -> 4 of 4:
    # counting the shared test noise would hide the size that does not replicate.
    assert result["share"] == pytest.approx(0.75)
    assert result["share_full"] == pytest.approx(1.0)
    assert result["only_a"] == [453] and result["only_b"] == [226]
    # The --compare mode: reads the two files, prints the table and the verdict against 90%.
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(A))
    b.write_text(json.dumps(B))
    out = rep.main(["--compare", str(a), str(b)])
    text = capsys.readouterr().out
    assert out["share"] == pytest.approx(0.75)
    assert "| 20 | +5.00 | +3.00 |" in text
    assert "3 of 4 sizes (75%; target >= 90%: NOT met)" in text
    assert "only in run a (not scored): n = 453" in text and "only in run b (not scored): n = 226" in text
    assert "no test share: full se" in text


def test_study_runs_refuse_overrides_of_their_own_seeds(tmp_path):
    with pytest.raises(SystemExit):
        rep.main(["--dir", str(tmp_path), "--overrides", "seed=3"])
    assert not (tmp_path / "a.db").exists()

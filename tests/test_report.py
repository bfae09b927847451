"""harness-report: built from a crafted Optuna storage (no training), checked against what the
storage holds and against the known answers the crafted learning curves were drawn from."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.errors import ConfigError
from harness.report import (
    PLOT_FILES,
    Cell,
    Crossover,
    anytime_curve,
    build_report,
    edge_flags,
    importances,
    load_cells,
    open_existing,
    range_position,
    winner_map,
)
from report_fixtures import (
    EDGE_LR, FINETUNE, MID, N_VAL, PRETRAIN_FLOPS, SCRATCH_CATCHES_UP, SCRATCH_NEVER, SPACE, Crafted,
    craft_storage, true_crossover,
)

REPO = Path(__file__).resolve().parents[1]
CONTRACT_FILES = ("report.html", "report.md", "trials.csv", "cells.csv", "crossover.json", *PLOT_FILES.values())

# ------------------------------------------------------------------ recording what the report opens
# An audit hook sees every open() / Path.open / os.open / io.open_code, directory listing and
# sqlite3.connect in the process, whatever library makes it. It cannot be removed, so it records
# only while _SEEN is a list.
_SEEN: list[tuple[str, str]] | None = None
_EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob", "sqlite3.connect", "shutil.copyfile"}


def _audit(event: str, args: tuple) -> None:
    if _SEEN is None or event not in _EVENTS or not args:
        return
    target = args[0]
    if isinstance(target, (str, bytes, os.PathLike)):
        _SEEN.append((event, os.fsdecode(target)))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict[str, Crafted]:
    """One SQLite file, two studies: "toy" (scratch catches up at n ~ 199), "dom" (it never does)."""
    path = tmp_path_factory.mktemp("storage") / "harness.db"
    return {
        "toy": craft_storage(path, "toy"),
        "dom": craft_storage(path, "dom", scratch=SCRATCH_NEVER, grid=(16, 64, 256, 1024), trials=5, rng_seed=1),
    }


@pytest.fixture(scope="module")
def report(crafted, tmp_path_factory) -> dict:
    """The "toy" report, built from an empty working directory that holds decoy run outputs,
    while the audit hook records every file the process touches."""
    global _SEEN
    cwd = tmp_path_factory.mktemp("cwd")
    decoy = cwd / "outputs" / "tune" / "toy" / "finetune-n16"
    decoy.mkdir(parents=True)
    (decoy / "result.json").write_text('{"val_acc": 0.0}')
    (cwd / "conf").mkdir()
    (cwd / "conf" / "report.yaml").write_text("study: {name: decoy}\n")
    out = tmp_path_factory.mktemp("report") / "toy"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        _SEEN = []
        try:
            summary = build_report(crafted["toy"].url, "toy", out, n_boot=400)
        finally:
            seen, _SEEN = _SEEN, None
    return {"summary": summary, "out": out, "seen": seen, "cwd": cwd,
            "tmp_root": tmp_path_factory.getbasetemp()}


def _storage_study(c: Crafted, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=c.url)


# ------------------------------------------------------------------ files


def test_every_file_written_and_html_self_contained(report) -> None:
    out: Path = report["out"]
    for name in CONTRACT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in PLOT_FILES.values():
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert page.count("src='data:image/png;base64,") == len(PLOT_FILES)
    assert not re.search(r"<link|<script|@import|url\(", page, flags=re.IGNORECASE)
    md = (out / "report.md").read_text()
    for png in PLOT_FILES.values():
        assert f"]({png})" in md
    # n_val stated next to n_train (Perez et al. 2021), and the verdict with the interval.
    assert "n_val" in md and f"{N_VAL} labelled examples" in md
    assert report["summary"]["verdict"] in md


def test_the_report_opens_with_the_answer_and_the_gap_figure(report) -> None:
    """report.md and report.html: the title, then the answer in a sentence or two and gap.png, before
    the margin, the source and the labelled-data notes."""
    md = (report["out"] / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert headings[1] == "## The answer" and headings[2] == "## How it was measured"
    answer = md.split("## The answer", 1)[1].split("## How it was measured", 1)[0]
    cross = json.loads((report["out"] / "crossover.json").read_text())
    assert "Crossover" in answer and cross["status"] == "crossover"
    assert "pretraining" in answer and "(gap.png)" in answer
    assert "**Margin" not in answer
    first_image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", md).group(1)
    assert first_image == "gap.png"
    page = (report["out"] / "report.html").read_text()
    assert page.index("The answer") < page.index("How it was measured") < page.index("Margin: ")
    assert page.index("data:image/png") < page.index("How it was measured")  # the gap figure comes with the answer


# ------------------------------------------------------------------ numbers


def test_trials_and_cells_match_the_storage(report, crafted) -> None:
    c = crafted["toy"]
    trials = pd.read_csv(report["out"] / "trials.csv")
    cells = pd.read_csv(report["out"] / "cells.csv").set_index("study_name")
    assert sorted(cells.index) == sorted(c.cells)
    total = 0
    for name in c.cells:
        study = _storage_study(c, name)
        stored = study.get_trials(deepcopy=False)
        total += len(stored)
        row, mine = cells.loc[name], trials[trials["study_name"] == name]
        assert len(mine) == len(stored) == row["n_trials"]
        assert list(mine["recipe_name"].fillna("")) == [t.user_attrs.get("recipe_name", "") for t in stored]
        for state, col in ((TrialState.COMPLETE, "n_complete"), (TrialState.PRUNED, "n_pruned"), (TrialState.FAIL, "n_failed")):
            n_state = sum(t.state == state for t in stored)
            assert row[col] == n_state == (mine["state"] == state.name).sum()
        flops = sum(float(t.user_attrs.get("flops", 0.0)) for t in stored)
        wall = sum(float(t.user_attrs.get("wall_s", 0.0)) for t in stored)
        assert row["flops_total"] == pytest.approx(flops, rel=1e-9)
        assert mine["flops"].sum() == pytest.approx(flops, rel=1e-9)
        assert row["wall_s_total"] == pytest.approx(wall, rel=1e-9)
        assert row["best_val"] == pytest.approx(study.best_value)
        final = study.user_attrs["final"]
        tests = [r["test_acc"] for r in final]
        assert row["n_seeds"] == len(final)
        assert row["test_acc_mean"] == pytest.approx(sum(tests) / len(tests), rel=1e-12)
        assert row["test_acc_ci95_low"] <= row["test_acc_mean"] <= row["test_acc_ci95_high"]
        assert row["rerun_flops"] == pytest.approx(sum(r["flops"] for r in final))
    assert len(trials) == total == report["summary"]["n_trials"]
    assert {"params_lr", "params_steps", "params_optimizer", "params_label_smoothing", "fail_reason",
            "datetime_start", "datetime_complete"} <= set(trials.columns)
    assert set(trials["state"]) == {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}
    assert trials.loc[trials["state"] == "FAIL", "fail_reason"].str.startswith("diverged").all()


SCHEMA = REPO / "docs" / "crossover.schema.json"


@pytest.mark.parametrize("where", ["built", "studies/digits", "studies/digits_split"])
def test_crossover_json_follows_its_published_schema(report, where) -> None:
    """docs/crossover.schema.json describes every key a report writes (no others allowed): the one
    built here from a storage, and the committed studies'."""
    import jsonschema  # a test dependency (pyproject: test extra)
    folder = report["out"] if where == "built" else REPO / where
    data = json.loads((folder / "crossover.json").read_text())
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "undocumented": 1}, json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("where", ["built", "studies/digits", "studies/digits_split"])
def test_crossover_json_reads_back_as_written(report, where) -> None:
    """Crossover.from_json inverts to_json on every crossover.json a report wrote (the committed studies'
    too), so what the renderers read from a file is what they read from the fresh Crossover."""
    folder = report["out"] if where == "built" else REPO / where
    data = json.loads((folder / "crossover.json").read_text())
    assert Crossover.from_json(data).to_json() == data
    if where == "built":
        from harness.report.answer import headline_line

        assert headline_line(Crossover.from_json(data)) == report["summary"]["verdict"]


def test_crossover_matches_the_known_curves(report, crafted) -> None:
    made = crafted["toy"]
    cross = json.loads((report["out"] / "crossover.json").read_text())
    assert {"metric", "margin", "status", "n_star", "ci95", "n_cross", "n_cross_ci95", "extrapolated", "agreement",
            "per_n", "switches", "measured_range", "source"} <= set(cross)
    assert cross["metric"] == "test_acc" and cross["margin"] == 0.01
    assert cross["status"] == "crossover"
    assert cross["measured_range"] == [16, 512]
    verdicts = {p["n"]: p["verdict"] for p in cross["per_n"]}
    assert verdicts[16] == "finetune_better" and verdicts[512] == "scratch_better"
    assert all(p["replicates"] == {"finetune": 3, "scratch": 3} for p in cross["per_n"])
    n_star = true_crossover(FINETUNE, SCRATCH_CATCHES_UP, margin=0.01)  # fine-tune's lead falls to the margin
    lo, hi = cross["ci95"]
    assert lo <= n_star <= hi and lo <= cross["n_star"] <= hi, (n_star, cross)
    lo, hi = cross["n_cross_ci95"]
    assert lo <= made.crossover <= hi, (made.crossover, cross)  # scratch's curve goes ahead
    assert cross["n_star"] < cross["n_cross"] and not cross["extrapolated"]
    # The crafted re-runs carry no per-example records: the intervals say they hold replicate noise only.
    assert cross["intervals"].startswith("replicates only")
    assert cross["source"]["pretrain_flops"] == PRETRAIN_FLOPS and cross["source"]["source_task_acc"] == 0.97
    assert cross["n_val"] == N_VAL
    assert cross == report["summary"]["crossover"]


def test_fine_tune_dominates_and_the_printed_line_says_so(dom_cli) -> None:
    out = dom_cli["out"]
    cross = json.loads((out / "crossover.json").read_text())
    assert cross["status"] == "finetune_ahead", cross
    assert {p["verdict"] for p in cross["per_n"]} == {"finetune_better"}
    assert cross["measured_range"] == [16, 1024]
    assert cross["n_star"] is None and cross["n_cross"] is None  # never meet: "never", no extrapolated crossover
    assert "fine-tune is better by more than 0.01 at every measured size (16-1024)" in dom_cli["printed"]
    # Only the dom study's cells: the toy study shares the file.
    assert set(pd.read_csv(out / "cells.csv")["study_name"].str.split("/").str[0]) == {"dom"}


# ------------------------------------------------------------------ search-space checks


def test_edge_flag_fires_at_the_edge_only(report, crafted) -> None:
    cells = pd.read_csv(report["out"] / "cells.csv", keep_default_na=False).set_index("study_name")
    edge = crafted["toy"].edge_cell
    assert cells.loc[edge, "edge_flags"] == "lr@high"
    assert (cells.drop(index=edge)["edge_flags"] == "").all()
    assert f"| {edge} | lr |" in (report["out"] / "report.md").read_text()

    assert [f.param for f in edge_flags(dict(MID, lr=EDGE_LR), SPACE)] == ["lr"]
    assert edge_flags(MID, SPACE) == []
    low = edge_flags({"steps": 50, "lr": 1.05e-4, "optimizer": "sgd"}, SPACE)
    assert {(f.param, f.side) for f in low} == {("steps", "low"), ("lr", "low")}
    # log-aware: 1e-3 is 40% of [1e-4, 3e-2] in log space (0.3% linearly), so not an edge
    assert range_position(1e-3, SPACE["lr"]) == pytest.approx(math.log(10) / math.log(300))
    assert range_position("adamw", CategoricalDistribution(["adamw", "sgd"])) is None
    assert range_position(3, IntDistribution(1, 5)) == pytest.approx(0.5)


# ------------------------------------------------------------------ storage only


def test_report_reads_nothing_but_the_storage(report, crafted) -> None:
    seen, out, cwd, root = report["seen"], report["out"].resolve(), report["cwd"].resolve(), report["tmp_root"].resolve()
    db = crafted["toy"].path.resolve()
    allowed_db = {Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")}
    forbidden_repo = [REPO / "conf", REPO / "outputs", REPO / "studies"]
    # A relative sys.path entry (setuptools' editable finder hook) is looked up in cwd by importlib.metadata
    # when a library scans entry points (sklearn -> narwhals): the import machinery, not a file the report reads.
    searched = {e for e in sys.path if e and not os.path.isabs(e)}
    opened = [(event, Path(p) if os.path.isabs(p) else cwd / p) for event, p in seen if p not in searched]
    assert any(p.resolve().is_relative_to(out) for _, p in opened), "the audit hook recorded nothing"
    assert any(event == "sqlite3.connect" for event, _ in opened)
    bad = []
    for event, p in opened:
        p = p.resolve()
        if event == "sqlite3.connect":
            if p not in allowed_db:
                bad.append((event, p))
        elif p.is_relative_to(root) and not (p.is_relative_to(out) or p in allowed_db):
            bad.append((event, p))  # the decoy run outputs in cwd, or any other test's files
        elif any(p.is_relative_to(f) for f in forbidden_repo) or p.name in ("result.json", "metrics.csv"):
            bad.append((event, p))
    assert not bad, bad


# ------------------------------------------------------------------ winner map and anytime curves


def _trial(number: int, state: TrialState, value: float | None, flops: float, done_at: int) -> FrozenTrial:
    t0 = datetime(2025, 1, 1)
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    return FrozenTrial(number=number, trial_id=number, state=state, value=value, values=None,
                       datetime_start=t0, datetime_complete=t0 + timedelta(seconds=done_at),
                       params={"lr": 0.01}, distributions=dist, user_attrs={"flops": flops, "wall_s": flops / 10},
                       system_attrs={}, intermediate_values={})


def test_winner_map_uses_the_verdict_rule_and_says_what_was_not_measured() -> None:
    def cells(n_val: int) -> tuple[Cell, Cell]:
        ft = Cell("w/finetune/n10", "finetune", 10, {"n_val": n_val, "pretrain": {"flops": 100.0}},
                  [_trial(0, TrialState.COMPLETE, 0.9, 10.0, 1), _trial(1, TrialState.COMPLETE, 0.952, 20.0, 4)])
        # Completion order differs from trial numbers; failed and pruned trials' FLOPs count.
        sc = Cell("w/scratch/n10", "scratch", 10, {"n_val": n_val},
                  [_trial(0, TrialState.COMPLETE, 0.95, 15.0, 3), _trial(1, TrialState.FAIL, None, 3.0, 1),
                   _trial(2, TrialState.COMPLETE, 0.5, 2.0, 2), _trial(3, TrialState.PRUNED, None, 15.0, 5)])
        return ft, sc

    budgets = [4.0, 10.0, 20.0, 30.0, 40.0]
    ft, sc = cells(100)
    curves = {c.name: anytime_curve(c.trials) for c in (ft, sc)}
    assert list(curves[sc.name].flops) == [3.0, 5.0, 20.0, 35.0]
    assert list(curves[sc.name].best[1:]) == [0.5, 0.95, 0.95] and math.isnan(curves[sc.name].best[0])
    noisy = winner_map([ft, sc], curves, budgets, with_pretraining=False)
    # 4: fine-tune has no result yet; 40: more than fine-tune spent (30); 0.90 vs 0.95 and 0.952 vs
    # 0.95 on 100 validation images cannot be told apart.
    assert list(noisy["winner"]) == ["not_measured", "finetune_better", "inconclusive", "inconclusive", "not_measured"]
    assert noisy["gap"].iloc[1] == pytest.approx(0.4)
    ft, sc = cells(1_000_000)
    precise = winner_map([ft, sc], curves, budgets, with_pretraining=False)
    assert list(precise["winner"]) == ["not_measured", "finetune_better", "scratch_better", "equivalent", "not_measured"]
    with_pt = winner_map([ft, sc], curves, budgets + [110.0], with_pretraining=True)
    # with its pretraining fine-tune's first result comes at 110 FLOPs, more than scratch ever spent
    assert set(with_pt["winner"]) == {"not_measured"}


# ------------------------------------------------------------------ CLI, W&B, errors


def _run_cli(monkeypatch, *overrides: str) -> None:
    from harness.cli.report import main

    monkeypatch.setattr(sys, "argv", ["harness-report", *overrides])
    main()


@pytest.fixture(scope="module")
def dom_cli(crafted, tmp_path_factory) -> dict:
    """harness-report on the "dom" study through the Hydra CLI, logging to W&B offline."""
    tmp = tmp_path_factory.mktemp("dom_cli")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(tmp / var.lower()))
        mp.chdir(tmp)
        with contextlib.redirect_stdout(printed):
            _run_cli(mp, f"storage.url={crafted['dom'].url}", "study.name=dom", "report.dir=rep",
                     "report.n_boot=200", "logger=wandb", "logger.dir=wb", "logger.project=harness-test",
                     f"hydra.run.dir={tmp / 'hydra'}")
    return {"tmp": tmp, "out": tmp / "rep", "printed": printed.getvalue()}


def test_cli_with_wandb_offline_writes_a_report_run(dom_cli) -> None:
    tmp = dom_cli["tmp"]
    assert f"report: {(tmp / 'rep' / 'report.html').resolve()}" in dom_cli["printed"]
    assert "[test_acc, margin 0.01]" in dom_cli["printed"]
    for name in CONTRACT_FILES:
        assert (tmp / "rep" / name).is_file(), name
    runs = list((tmp / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    run = runs[0]
    images = {p.name.split("_1_")[0] for p in (run / "files" / "media" / "images").glob("*.png")}
    assert images == set(PLOT_FILES)
    tables = {p.name.split("_")[0] for p in (run / "files" / "media" / "table").glob("*.table.json")}
    assert tables == {"trials", "cells", "crossover"}
    log = next(run.glob("run-*.wandb")).read_bytes()
    for name in (b"report.html", b"crossover.json", b"report-dom"):  # the report artifact's manifest
        assert name in log


def test_unknown_study_names_the_studies_present(crafted, tmp_path, monkeypatch, capsys) -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*studies present: dom, toy"):
        build_report(crafted["toy"].url, "nope", tmp_path / "r")
    assert not (tmp_path / "r").exists()
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigError, match="no such database file"):
        build_report(f"sqlite:///{missing}", "toy", tmp_path / "r")
    assert not missing.exists()
    with pytest.raises(ConfigError, match="report.metric"):
        build_report(crafted["toy"].url, "toy", tmp_path / "r", metric="f1")
    with pytest.raises(ConfigError, match="not a supported storage URL"):
        build_report("redis://localhost/0", "toy", tmp_path / "r")
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(monkeypatch, f"storage.url={crafted['toy'].url}", "study.name=nope",
                 f"hydra.run.dir={tmp_path / 'hydra'}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: study 'nope'") and "dom, toy" in err[0]


def _cell_contents(url: str, study: str) -> list[tuple]:
    """What load_cells finds, without the cells' names and the trials' timestamps."""
    storage, shown = open_existing(url, sqlite_wal=False)
    return [(c.strategy, c.n_train, c.attrs, [(t.number, t.state, t.value, t.params, t.user_attrs, t.intermediate_values)
                                              for t in c.trials])
            for c in load_cells(storage, study, shown)]


def test_cells_are_found_by_their_attrs_not_their_names(report, crafted, tmp_path) -> None:
    """Cells named anything are found by their study attrs (study, strategy, n_train) and give the
    same report as the normally named ones; a study named like a "toy" cell but carrying another
    study's attrs, or no attrs at all, is not a "toy" cell."""
    path = tmp_path / "named.db"
    odd = craft_storage(path, "toy", name_format="exp-{i}")  # crafted["toy"]'s arguments: same draws
    other = craft_storage(path, "other", grid=(16, 64), trials=4, rng_seed=2, name_format="toy/{strategy}/n{n}")
    optuna.create_study(study_name="toy/scratch/n2048", storage=odd.url).add_trial(
        optuna.trial.create_trial(value=0.99, params={"lr": 1e-3}, distributions={"lr": SPACE["lr"]}))
    optuna.create_study(study_name="run b", storage=odd.url)
    assert odd.cells[7] == "exp-7" and other.cells[0] == "toy/finetune/n16"

    assert _cell_contents(odd.url, "toy") == _cell_contents(crafted["toy"].url, "toy")
    assert len(_cell_contents(odd.url, "other")) == 4
    summary = build_report(odd.url, "toy", tmp_path / "out", n_boot=400)
    assert summary["crossover"] == report["summary"]["crossover"]
    assert summary["verdict"] == report["summary"]["verdict"]
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert sorted(cells["study_name"]) == sorted(odd.cells)
    assert cells.loc[cells["study_name"] == odd.edge_cell, "edge_flags"].item() == "lr@high"
    expected = pd.read_csv(report["out"] / "cells.csv")
    pd.testing.assert_frame_equal(cells.drop(columns="study_name"), expected.drop(columns="study_name"))
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert set(trials["study_name"]) == set(odd.cells)
    when = ["study_name", "datetime_start", "datetime_complete", "duration_s"]
    pd.testing.assert_frame_equal(trials.drop(columns=when), pd.read_csv(report["out"] / "trials.csv").drop(columns=when))

    # The error names the studies by their attrs; with no attrs anywhere, by what their names start with.
    with pytest.raises(ConfigError, match=r"'nope'.*studies present: other, toy: set study.name"):
        build_report(odd.url, "nope", tmp_path / "r")
    bare = f"sqlite:///{tmp_path / 'bare.db'}"
    optuna.create_study(study_name="toy/finetune/n16", storage=bare)
    with pytest.raises(ConfigError, match=r"studies present: toy, but none carries the cell attrs"):
        build_report(bare, "toy", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cells_without_final_are_left_out(tmp_path) -> None:
    c = craft_storage(tmp_path / "thin.db", "thin", grid=(16, 64), trials=4, without_final=("thin/scratch/n64",))
    summary = build_report(c.url, "thin", tmp_path / "out", n_boot=50)
    cross = summary["crossover"]
    assert cross["status"] == "insufficient_data" and cross["n_star"] is None and cross["ci95"] is None
    assert cross["cells_used"] == {"finetune": [16, 64], "scratch": [16]}
    for name in CONTRACT_FILES:
        assert (tmp_path / "out" / name).is_file(), name
    assert "insufficient data" in summary["verdict"]


def test_labels_used_for_selection_are_counted(report, crafted, tmp_path) -> None:
    """n_labelled = n_train + the validation split that selected the configuration; a storage
    whose cells were selected by cross-validation inside n_train counts n_train alone."""
    cells = pd.read_csv(report["out"] / "cells.csv")
    assert (cells["n_labelled"] == cells["n_train"] + N_VAL).all() and set(cells["selection"]) == {"holdout"}
    cross = report["summary"]["crossover"]
    assert cross["n_labelled_by_n_train"]["16"] == 16 + N_VAL and cross["selection"] == ["holdout"]
    assert "n_labelled = n_train + n_val" in (report["out"] / "report.md").read_text()

    made = craft_storage(tmp_path / "cv.db", "toy")
    storage = optuna.storages.RDBStorage(made.url)
    for name in made.cells:
        optuna.load_study(study_name=name, storage=storage).set_user_attr("selection", "cv")
    storage.engine.dispose()
    summary = build_report(made.url, "toy", tmp_path / "out", n_boot=100)
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert (cells["n_labelled"] == cells["n_train"]).all()
    assert summary["crossover"]["n_labelled_by_n_train"]["512"] == 512
    md = (tmp_path / "out" / "report.md").read_text()
    assert "the validation split was never read, so n_labelled = n_train" in md


# ------------------------------------------------------------------ conditional parameters


def _conditional_cell(tmp_path: Path) -> tuple[optuna.storages.BaseStorage, Cell]:
    """A fine-tune cell of 40 trials: `decay` exists only where mode=full and decides the value there;
    `rare` was used by two trials only."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'cond.db'}")
    study = optuna.create_study(study_name="cond/finetune/n16", storage=storage, direction="maximize")
    for key, value in {"strategy": "finetune", "n_train": 16, "study": "cond", "tuning": 0}.items():
        study.set_user_attr(key, value)
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "mode": CategoricalDistribution(["full", "linear_probe"]),
             "decay": FloatDistribution(0.5, 1.0), "rare": FloatDistribution(0.0, 1.0)}
    rng = random.Random(0)
    for i in range(40):
        params = {"lr": 10 ** rng.uniform(-4, -1), "mode": ["full", "linear_probe"][i % 2]}
        value = 0.5 + 0.01 * rng.random()
        if params["mode"] == "full":
            params["decay"] = rng.uniform(0.5, 1.0)
            value = params["decay"]
        if i in (3, 5):
            params["rare"] = rng.random()
        study.add_trial(optuna.trial.create_trial(value=value, params=params,
                                                  distributions={k: space[k] for k in params}))
    cells = load_cells(storage, "cond", "cond.db")
    return storage, cells[0]


def test_importances_assess_a_conditional_parameter_among_the_trials_that_used_it(tmp_path) -> None:
    storage, cell = _conditional_cell(tmp_path)
    frame, notes = importances([cell], storage)

    # Optuna's own call sees only the intersection search space: the conditional parameters vanish.
    study = optuna.load_study(study_name=cell.name, storage=storage)
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)
    plain = optuna.importance.get_param_importances(study, evaluator=evaluator)
    assert set(plain) == {"lr", "mode"}
    # The always-used parameters are assessed as before; decay among the 20 trials that used it.
    assert set(frame.index) == {"lr", "mode", "decay"}
    for name in ("lr", "mode"):
        assert frame.loc[name, "finetune"] == pytest.approx(plain[name])
        assert frame.loc[name, "finetune_trials"] == "40/40"
    assert frame.loc["decay", "finetune_trials"] == "20/40" and frame.loc["decay", "finetune_cells"] == 1
    assert frame.loc["decay", "finetune"] > 0.8  # it decides the value wherever it exists
    assert notes == ["cond/finetune/n16: rare used by 2 of 40 complete trials (< 4)"]


def test_the_report_says_what_among_the_trials_that_used_it_means(report) -> None:
    md = (report["out"] / "report.md").read_text()
    assert "assessed among the trials that used it" in md and "`*_trials`" in md
    assert "finetune_trials" in md  # the column beside each importance


# ------------------------------------------------------------------ equal effort: compute and pruners


def _hyperband(top_of: Callable[[str, int], int]) -> Callable[[str, int], dict]:
    return lambda strategy, n: {"name": "hyperband", "min_resource": 50, "max_resource": top_of(strategy, n),
                                "reduction_factor": 3, "max_resource_from": "pruner.max_resource"}


def test_the_report_flags_sizes_whose_strategies_differ_in_compute_or_in_their_pruners_max_resource(tmp_path) -> None:
    grid = (16, 64, 256, 1024)
    top = _hyperband(lambda strategy, n: 400 if (strategy, n) == ("finetune", 64) else 600)
    c = craft_storage(tmp_path / "fair.db", "fair", grid=grid, trials=4, rng_seed=3, scratch_flops_scale=1.6, pruner=top)
    build_report(c.url, "fair", tmp_path / "out", n_boot=50)
    cells = pd.read_csv(tmp_path / "out" / "cells.csv", keep_default_na=False).set_index("study_name")
    md = (tmp_path / "out" / "report.md").read_text()
    differ = []
    for n in grid:
        ft, sc = cells.loc[f"fair/finetune/n{n}"], cells.loc[f"fair/scratch/n{n}"]
        ratio = sc["flops_total"] / ft["flops_total"]  # what the storage holds, whatever the draws
        assert sc["tuning_flops_ratio"] == pytest.approx(ratio) and ft["tuning_flops_ratio"] == pytest.approx(1 / ratio)
        unequal = max(ratio, 1 / ratio) > 1.5
        if unequal:
            differ.append(n)
        for row in (ft, sc):
            flags = row["fairness_flags"].split(";")
            assert ("tuning_flops_differ" in flags) == unequal, (n, ratio, flags)
            assert ("pruner_max_resource_differs" in flags) == (n == 64), (n, flags)
            assert "pruner_not_recorded" not in flags and row["pruner"] == "hyperband"
        assert (f"**n_train={n}: scratch spent {ratio:.2f}x fine-tune's tuning FLOPs**" in md) == unequal
        assert (f"**n_train={n}: the pruners planned for different maximum resources**" in md) == (n == 64)
    assert 0 < len(differ) < len(grid), differ  # the draws give both kinds of size: the rule is what is checked
    assert cells.loc["fair/finetune/n64", "pruner_max_resource"] == 400
    assert "are not recorded" not in md


def test_a_storage_without_pruner_records_says_it_cannot_check_them(report) -> None:
    cells = pd.read_csv(report["out"] / "cells.csv", keep_default_na=False)
    assert all("pruner_not_recorded" in f.split(";") for f in cells["fairness_flags"])
    md = (report["out"] / "report.md").read_text()
    assert "are not recorded (cells tuned before cells stored their `pruner`)" in md
    assert "cannot be checked" in md


HUB = {"origin": "hub", "ref": "resnet18.a1_in1k", "pretrain_flops": None, "pretrain_flops_from": "unknown"}


def _md_row(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {start}"))


def test_hub_weights_pretraining_is_unknown_never_0_and_the_map_says_why_it_has_no_pretraining_panel(tmp_path) -> None:
    c = craft_storage(tmp_path / "hub.db", "hub", grid=(16, 64), trials=4, weights=HUB)
    summary = build_report(c.url, "hub", tmp_path / "out", n_boot=50)
    out = tmp_path / "out"
    source = summary["crossover"]["source"]
    assert source["origin"] == "hub tag resnet18.a1_in1k" and source["pretrain_flops"] == "unknown"
    assert json.loads((out / "crossover.json").read_text())["source"] == source
    md = (out / "report.md").read_text()
    first = md.split("## How it was measured", 1)[1].split("\n## ")[0]  # the lines right after the answer
    assert "**Source model:** hub tag resnet18.a1_in1k" in first and "pretraining FLOPs unknown" in first
    assert "With pretraining: not drawn, because the pretraining FLOPs" in md
    assert "Right panel: fine-tune's compute includes its pretraining" not in md
    assert not pd.read_csv(out / "winner_map.csv")["with_pretraining"].any()  # only the panel without it
    cells = pd.read_csv(out / "cells.csv", keep_default_na=False).set_index("study_name")
    assert cells.loc["hub/finetune/n16", "pretraining"] == "hub tag resnet18.a1_in1k: FLOPs unknown"
    assert cells.loc["hub/finetune/n16", "pretrain_flops"] == ""  # not 0
    total = _md_row(md, "total fine-tune incl. pretraining")
    assert "unknown" in total and "| 0 |" not in total
    assert "unknown (tuning + re-runs" in _md_row(md, "resources: total FLOPs")
    assert "pretraining hub tag resnet18.a1_in1k (counted once; used by 2 cells)" in md


def test_declared_pretraining_flops_are_counted_and_the_pretraining_panel_is_drawn(tmp_path) -> None:
    declared = dict(HUB, pretrain_flops=5e11, pretrain_flops_from="declared")
    c = craft_storage(tmp_path / "dec.db", "dec", grid=(16, 64), trials=4, weights=declared)
    summary = build_report(c.url, "dec", tmp_path / "out", n_boot=50)
    source = summary["crossover"]["source"]
    assert (source["pretrain_flops"], source["pretrain_flops_from"]) == (5e11, "declared")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "pretraining 5e+11 FLOPs (declared)" in md.split("## How it was measured", 1)[1].split("\n## ")[0]
    assert pd.read_csv(tmp_path / "out" / "winner_map.csv")["with_pretraining"].any()
    *_, total_flops, total_wall = [v.strip() for v in _md_row(md, "total fine-tune incl. pretraining").split("|")[1:-1]]
    assert float(total_flops) > 5e11 and total_wall == "unknown"  # FLOPs declared; its wall time never is


def test_a_fine_tune_cell_without_a_weights_record_has_unknown_pretraining_not_0() -> None:
    from harness.report.crossover import Source

    own = Cell("o/finetune/n10", "finetune", 10, {"weights": {"origin": "own pretraining", "ref": "h", "pretrain_flops": 7.0,
                                                              "pretrain_flops_from": "measured"}}, [])
    bare = Cell("b/finetune/n10", "finetune", 10, {"pretrain": {"flops": 7.0, "config_hash": "h"}}, [])
    scratch = Cell("b/scratch/n10", "scratch", 10, {}, [])
    assert own.pretrain_flops == 7.0 and (own.weights.origin, own.weights.ref) == ("own pretraining", "h")
    assert bare.pretrain_flops is None and bare.weights.origin == "not recorded"
    assert scratch.pretrain_flops == 0.0 and scratch.weights is None
    assert Source.of([bare, scratch]).pretrain_flops == "unknown"
    assert Source.of([own]).pretrain_flops == 7.0


def test_stored_pretraining_and_weights_records_read_without_trusting_them() -> None:
    """harness/store/records.py decodes a cell's `pretrain` and `weights` attrs: malformed values read as
    unknown, never raise; what it writes reads back as written."""
    from harness.store.records import PretrainRecord, WeightsRecord

    assert PretrainRecord.of("x") is None
    raw = {"flops": -1, "wall_s": "x", "source_classes": "abc"}
    odd = PretrainRecord.of(raw)
    assert (odd.flops, odd.wall_s, odd.source_classes, odd.config_hash) == (None, 0.0, None, None)
    assert odd.key == json.dumps(raw, sort_keys=True)  # told apart by what it stored, as before config hashes
    meta = {"flops": 3.0, "wall_s": 1.5, "source_val_acc": 0.9, "steps": 10, "config_hash": "h", "source_classes": ["a"],
            "created": "2025-01-01"}  # harness-pretrain's meta: only the pretrain attr's keys are written
    written = PretrainRecord.of(meta).to_json()
    assert written == {k: meta[k] for k in ("flops", "wall_s", "source_val_acc", "steps", "config_hash", "source_classes")}
    assert PretrainRecord.of(written) == PretrainRecord.of(meta)
    hub = WeightsRecord.of({"origin": "hub", "ref": "tag", "pretrain_flops": "many"})
    assert (hub.origin, hub.ref, hub.pretrain_flops, hub.pretrain_flops_from) == ("hub", "tag", None, "unknown")
    assert WeightsRecord.of(hub.to_json()) == hub
    assert WeightsRecord.of(None).origin == WeightsRecord.of([1]).origin == "not recorded"



def test_stored_budget_pruner_and_caps_read_typed_and_write_back_as_stored() -> None:
    """A cell's `budget`, `pruner` and `caps` attrs are decoded in the store layer: what harness-tune
    writes reads back equal; malformed parts read as missing, never raise."""
    from harness.store.records import BudgetRecord, Caps, PrunerRecord, ReferenceTrial

    trials = {"n_trials": 3, "max_flops": None, "max_wall_s": None}
    assert BudgetRecord.of(trials).to_json() == trials and BudgetRecord.of(trials).kind == "trials"
    assert BudgetRecord.of(trials).limits() == '{"max_flops": null, "max_wall_s": null, "n_trials": 3}'
    ref = {"trial_flops": 2e9, "step_flops": 1e8, "steps": 15, "steps_from": "x", "validations": 3, "val_flops": 5e8,
           "batch_size": 10, "model": "m"}
    flops = {"n_trials": 30, "max_flops": 6e9, "max_wall_s": None, "kind": "flops", "reference": ref}
    budget = BudgetRecord.of(flops)
    assert budget.to_json() == flops and budget.reference == ReferenceTrial(**ref)
    assert budget.limits() == '{"kind": "flops", "max_flops": 6000000000.0, "max_wall_s": null, "n_trials": 30}'
    odd = BudgetRecord.of({"n_trials": "three", "max_flops": True, "reference": {"trial_flops": 1}})
    assert (odd.n_trials, odd.max_flops, odd.reference) == (None, None, None)
    assert BudgetRecord.of([1]) is None

    hyperband = {"name": "hyperband", "min_resource": 5, "reduction_factor": 3, "max_resource": 20,
                 "max_resource_from": "steps.high"}
    pruner = PrunerRecord.of(hyperband)
    assert (pruner.name, pruner.max_resource, dict(pruner.settings)) == ("hyperband", 20, {"min_resource": 5, "reduction_factor": 3})
    assert pruner.to_json() == hyperband and PrunerRecord.of("median") is None

    assert Caps.of({"max_tunings": 4, "max_seeds": 8, "trials_per_run": 20}) == Caps(4, 8, 20)
    assert Caps.of({"max_seeds": 3}) == Caps(max_seeds=3)  # the rest as before cells stored caps
    assert Caps.of(Caps(2, 3, 4).to_json()) == Caps(2, 3, 4) and Caps.of(None) is None


# ------------------------------------------------------------------ issue 21: the answers, the band, the noise said


def _row(n: int, gap: float, verdict: str, **extra) -> dict:
    row = {"n": n, "gap": gap, "ci95": [gap - 0.01, gap + 0.01], "verdict": verdict,
           "replicates": {"finetune": 3, "scratch": 3}, "test_noise": True, "finetune_acc": 0.9, "scratch_acc": 0.9 - gap,
           "probe_acc": None}
    return {**row, **extra}


def _new_json(**top) -> dict:
    """A crossover.json with every key issue 21 adds, three sizes: fine-tune better, undecided, undecided."""
    rows = [
        _row(80, 0.05, "finetune_better", band95=[0.035, 0.065], se=0.006, p_within_margin=0.0, upper975=0.062,
             resolution=0.022, variance_shares={"tuning": 0.5, "replicates": 0.3, "test": 0.2},
             tuning_runs={"finetune": 1, "scratch": 1}, decide=None, failed={"finetune": 0, "scratch": 0}),
        _row(320, 0.012, "inconclusive", band95=[-0.004, 0.028], se=0.0066, p_within_margin=0.41, upper975=0.025,
             resolution=0.024, variance_shares={"tuning": 0.45, "replicates": 0.35, "test": 0.2},
             tuning_runs={"finetune": 1, "scratch": 1},
             decide={"action": "tuning_runs", "number": 4, "text": "4 tuning runs (now 1) would show it better"},
             failed={"finetune": 1, "scratch": 0}),
        _row(640, 0.004, "inconclusive", band95=[-0.012, 0.020], se=0.0066, p_within_margin=0.82, upper975=0.020,
             resolution=0.024, variance_shares={"tuning": 0.4, "replicates": 0.35, "test": 0.25},
             tuning_runs={"finetune": 1, "scratch": 1},
             decide={"action": "larger_test", "number": 3000,
                     "text": "below what this design resolves: even 6 tuning runs x 10 replicates leave sd 0.0060 "
                             "against the 0.0030 needed; with those, a test split of about 3,000 examples (now 1,000) would"},
             failed={"finetune": 0, "scratch": 2}),
    ]
    out = {"metric": "test_acc", "margin": 0.01, "status": "inconclusive", "reason": "undecided at n = [320, 640]",
           "n_star": None, "ci95": [78.0, None], "extrapolated": True, "measured_range": [80, 640], "per_n": rows,
           "needs_replicates": [320], "intervals": "replicates and test examples", "n_boot": 400, "horizon": 10,
           "band": {"method": "max-|t| over the joint bootstrap draws", "level": 0.95, "critical": 2.4},
           "between_runs": "estimated", "tau": 0.006, "n_test": 1000, "settled_from": None, "n_star_text": "n* > 78"}
    return {**out, **top}


def _new_crossover(**top) -> Crossover:
    return Crossover.from_json(_new_json(**top))


def _bare_crossover() -> Crossover:
    """The same study as a crossover.json without its optional parts (no band, no per-size answers)."""
    keep = ("n", "gap", "ci95", "verdict", "replicates", "test_noise", "finetune_acc", "scratch_acc", "probe_acc")
    new = _new_json()
    old = {k: v for k, v in new.items() if k not in ("band", "between_runs", "tau", "n_test", "settled_from",
                                                     "n_star_text")}
    old["per_n"] = [{k: p[k] for k in keep} for p in new["per_n"]]
    return Crossover.from_json(old)


def test_the_answer_lines_state_the_bound_the_probability_the_resolution_and_where_the_variance_comes_from() -> None:
    from harness.report.answer import answer_lines, answer_table, settled_line

    raw = _new_json()
    c = Crossover.from_json(raw)
    lines = answer_lines(c)
    assert len(lines) == 3
    assert lines[2].startswith("With 640 training examples, pretraining is worth at most +2.0 points")
    assert "P(gap <= 0.01) = 0.82" in lines[2] and "resolves margins down to 2.4 points" in lines[2]
    negative = answer_lines(_new_crossover(per_n=[dict(raw["per_n"][0], upper975=-0.015)]))
    assert negative[0].startswith("With 80 training examples, pretraining costs at least 1.5 points")
    table = answer_table(c).set_index("n_train")
    assert table.loc[640, "P(gap <= 0.01)"] == "0.82"
    assert table.loc[640, "fine-tune's advantage at most (97.5%, points)"] == "+2.0"
    assert table.loc[640, "smallest margin resolved (80% power, points)"] == "2.4"
    assert table.loc[640, "gap variance: tuning runs / replicates / test examples"] == "40% / 35% / 25%"
    assert table.loc[640, "tuning runs (fine-tune/scratch)"] == "1/1"
    assert table.loc[640, "replicates (fine-tune/scratch)"] == "3/3"
    assert table.loc[320, "failed re-runs (fine-tune/scratch)"] == "1/0"
    assert table.loc[640, "what would decide"].startswith("below what this design resolves")
    assert table.loc[80, "what would decide"] == ""
    # The smallest measured size with P(gap <= margin) >= 0.9, or "not reached by" the largest.
    assert "not reached by n = 640" in settled_line(c)
    assert "n = 640**" in settled_line(_new_crossover(settled_from=640))
    rows = [dict(p, p_within_margin=q) for p, q in zip(raw["per_n"], (0.1, 0.95, 0.97))]
    later = _new_crossover(per_n=rows, settled_from=320)
    assert "n = 320** (and at every larger measured size)" in settled_line(later)


def test_undecided_sizes_say_what_would_decide_them_not_more_replicates() -> None:
    from harness.report.answer import details, headline_line

    raw = _new_json()
    c = Crossover.from_json(raw)
    line = headline_line(c)
    assert "more replicates would decide" not in line
    assert "n = 320: 4 tuning runs (now 1) would show it better" in line
    assert "n = 640: below what this design resolves" in line and "a test split of about 3,000 examples" in line
    said = " ".join(details(c))
    assert "Undecided sizes and what would decide them" in said and "n = 320: 4 tuning runs" in said
    # A decide without its text still reads.
    bare = _new_crossover(per_n=[dict(p, decide={k: v for k, v in (p["decide"] or {}).items() if k != "text"} or None)
                                 for p in raw["per_n"]])
    assert "n = 640: a test split of about 3,000 examples would decide it" in headline_line(bare)


def test_the_band_the_between_run_variance_the_test_split_and_n_star_are_said() -> None:
    from harness.report.answer import band_note, between_runs_note, details, n_star_phrase, per_size_table, test_split_note

    c = _new_crossover()
    assert band_note(c).startswith(
        "Per-size claims use a simultaneous 95% band across the 3 measured sizes (max-|t| over the joint bootstrap "
        "draws, critical value 2.40), so the chance of any false claim among them is held at 5%")
    note = between_runs_note(c)
    assert "one tuning run per cell" in note and "lack of fit" in note and "upper bound" in note
    assert "sd 0.0060" in note and "added to every interval" in note
    blind = between_runs_note(_new_crossover(between_runs="not estimable", tau=None))
    assert "replicate and test-example noise only" in blind and "miss the tuning noise" in blind
    rows = [dict(p, tuning_runs={"finetune": 3, "scratch": 3}) for p in _new_json()["per_n"]]
    assert "3 independent tuning runs per cell" in between_runs_note(_new_crossover(between_runs="measured", per_n=rows))
    split = test_split_note(c)
    assert "1,000 examples" in split and "n=80 20%, n=320 20%, n=640 25%" in split
    assert n_star_phrase(c) == "n* > 78, extrapolated"
    assert n_star_phrase(_new_crossover(n_star_text="n* = 237 (95% CI 78-1,300)", extrapolated=False)) == \
        "n* = 237 (95% CI 78-1,300)"
    assert any(d.startswith("n* > 78, extrapolated:") for d in details(c))
    assert any("simultaneous 95% band" in d for d in details(c))
    table = per_size_table(c, {}, {}, "test_acc").set_index("n_train")
    assert table.loc[640, "gap 95% CI (pointwise)"] == "[-0.0060, +0.0140]"
    assert table.loc[640, "gap 95% band (simultaneous)"] == "[-0.0120, +0.0200]"
    assert table.loc[640, "fine-tune tuning runs"] == 1


def test_a_crossover_json_without_its_optional_parts_still_renders() -> None:
    from harness.report.answer import (
        answer_lines, answer_table, band_note, between_runs_note, details, headline_line, per_size_table, settled_line,
        short_headline, test_split_note,
    )
    from harness.report.figures import plot_error_rate, plot_gap

    c = _bare_crossover()
    assert headline_line(c).endswith("inconclusive: undecided at n = [320, 640]")
    assert "pointwise 95% interval" in band_note(c)
    assert answer_lines(c) == [] and answer_table(c).empty and settled_line(c) is None
    assert between_runs_note(c) is None and test_split_note(c) is None
    assert short_headline(c).startswith("inconclusive")
    details(c)
    table = per_size_table(c, {}, {}, "test_acc")
    assert "gap 95% band (simultaneous)" not in table and "gap 95% CI (pointwise)" in table
    png = b"\x89PNG\r\n\x1a\n"
    assert plot_gap(c, "old").startswith(png)
    assert plot_error_rate({"finetune": {80: [0.9, 0.91]}, "scratch": {80: [1.0, 0.95]}}, c, "test_acc", "old").startswith(png)


def test_the_gap_and_error_rate_figures_draw_the_new_keys_and_say_when_there_is_nothing() -> None:
    from harness.report.document import PLOT_FILES
    from harness.report.figures import plot_error_rate, plot_gap

    png = b"\x89PNG\r\n\x1a\n"
    assert PLOT_FILES["gap"] == "gap.png" and PLOT_FILES["error_rate"] == "error_rate.png"
    c = _new_crossover(n_star=300.0, fits={"finetune": {"a": 0.95, "b": 0.5, "c": 0.5},
                                           "scratch": {"a": 0.99, "b": 1.5, "c": 0.5}})
    assert plot_gap(c, "new").startswith(png)
    values = {"finetune": {80: [0.9, 0.91, 0.92], 640: [0.93, 0.94, 0.95]},
              "scratch": {80: [0.85, 0.86, 0.84], 640: [0.93, 0.92, 1.0]}}  # a perfect score: drawn at the floor
    assert plot_error_rate(values, c, "test_acc", "new").startswith(png)
    assert plot_gap(_new_crossover(per_n=[]), "empty").startswith(png)
    assert plot_error_rate({}, c, "test_acc", "empty").startswith(png)


def test_failed_reruns_are_counted_per_cell_and_listed_with_their_reasons(tmp_path) -> None:
    from harness.report.tables import failed_counts, failed_rerun_notes

    c = craft_storage(tmp_path / "fail.db", "fail", grid=(16, 64), trials=4)
    study = optuna.load_study(study_name="fail/scratch/n64", storage=c.url)
    final = study.user_attrs["final"]
    final += [{"seed": 9, "status": "diverged", "reason": "TrainingDiverged: loss is nan", "test_acc": 0.1,
               "val_acc": None, "flops": 0.0, "wall_s": 0.0},
              {"seed": 10, "status": "failed", "reason": "RuntimeError: CUDA out of memory", "test_acc": None,
               "val_acc": None, "flops": 0.0, "wall_s": 0.0},
              {"seed": 11, "status": "collapsed", "reason": "test accuracy 0.100 is at chance (0.100)", "test_acc": 0.1,
               "val_acc": 0.1, "flops": 0.0, "wall_s": 0.0}]
    study.set_user_attr("final", final)
    cells = load_cells(open_existing(c.url, True)[0], "fail", c.url)
    assert failed_counts(cells) == {("finetune", 16): 0, ("finetune", 64): 0, ("scratch", 16): 0, ("scratch", 64): 2}
    notes = failed_rerun_notes(cells)
    assert len(notes) == 1 and notes[0].startswith("fail/scratch/n64: 3 of 6 re-runs did not end ok")
    assert "seed 10: failed (raised; left out of the statistics): RuntimeError: CUDA out of memory" in notes[0]
    assert "seed 9: diverged" in notes[0] and "seed 11: collapsed" in notes[0]
    build_report(c.url, "fail", tmp_path / "out", n_boot=50)
    table = pd.read_csv(tmp_path / "out" / "cells.csv").set_index("study_name")
    assert table.loc["fail/scratch/n64", "failed_reruns"] == 2 and table.loc["fail/finetune/n64", "failed_reruns"] == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Re-runs that did not end ok**" in md and "CUDA out of memory" in md
    answers = next(line for line in md.splitlines() if line.startswith("| 64 |") and "%" in line)
    assert "| 0/2 |" in answers  # failed re-runs (fine-tune/scratch) in the per-size answers
    assert "](gap.png)" in md and "](error_rate.png)" in md


# ------------------------------------------------------------------ the page in a real browser

def _page_checker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_report_page", REPO / "benchmarks" / "check_report_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the browser check: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return module


@pytest.mark.slow
def test_the_report_page_renders_in_a_real_browser(report, tmp_path) -> None:
    """Headless Chromium renders report.html: every image decodes, no console message, nothing wider
    than the window; a broken image in a copy of the page is caught (the check can fail)."""
    checker = _page_checker()
    result = checker.check_page(report["out"], screenshot=tmp_path / "shot.png")
    assert result["ok"], result
    assert result["images"] == len(PLOT_FILES) and (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    broken = tmp_path / "broken"
    broken.mkdir()
    page = (report["out"] / "report.html").read_text()
    (broken / "report.html").write_text(page.replace("src='data:image/png;base64,", "src='data:image/png;base64,AAAA", 1))
    bad = checker.check_page(broken)
    assert not bad["ok"] and len(bad["broken"]) == 1, bad

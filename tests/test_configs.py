"""The composed configs of every entry point: the shared blocks (tune/, report/, train/ config groups)
are written once, and each entry point still gets the values it always had. Also: the configs ship
inside the package, and a user's own recipe folder joins through Hydra's search path."""

from __future__ import annotations

import os

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.cli import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]


def composed(config_name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


TUNE_DEFAULTS = {"budget": "trials", "n_trials": 20, "max_flops": None, "reference_steps": None, "max_wall_s": None,
                 "sampler_seed": 0, "n_startup_trials": 5, "enqueue_recipe": True, "selection": "holdout",
                 "cv_folds": 5, "progress": True, "run": 0}
REPORT_DEFAULTS = {"dir": "outputs/report/${study.name}", "n_boot": 1000, "metric": "test_acc", "margin": 0.01,
                   "horizon": 10}
TRAIN_DEFAULTS = {"steps": 300, "batch_size": 64, "optimizer": "adamw", "lr": 0.003, "momentum": 0.9,
                  "weight_decay": 0.05, "warmup_frac": 0.05, "label_smoothing": 0.0, "val_every": 50}


def test_tune_gets_the_tune_defaults():
    cfg = composed("tune")
    assert cfg["tune"] == TUNE_DEFAULTS
    assert cfg["study"] == {"name": "digits", "seeds": 3}
    assert cfg["train"] == TRAIN_DEFAULTS


@pytest.mark.parametrize("recipe", ["digits", "digits_split", "cifar10_gpu"])
def test_study_overrides_only_trials_startup_and_progress_of_the_tune_block(recipe):
    cfg = composed("study", f"recipe={recipe}")
    trials = {"cifar10_gpu": 30}.get(recipe, 5)  # a recipe's own n_trials wins over study.yaml's (recipe after _self_)
    assert cfg["tune"] == {**TUNE_DEFAULTS, "n_trials": trials, "n_startup_trials": 4, "progress": False}
    assert cfg["report"] == REPORT_DEFAULTS
    assert cfg["study"]["name"] == {"digits": "digits", "digits_split": "digits_split", "cifar10_gpu": "cifar10"}[recipe]


def test_study_recipes_set_their_grids():
    assert composed("study")["study"]["n_train"] == [10, 20, 40, 80, 160, 320, 640]
    assert composed("study", "recipe=digits_split")["study"]["n_train"] == [10, 20, 40, 80, 160, 320]
    assert composed("study", "recipe=cifar10_gpu")["train"]["val_every"] == 500


def test_every_data_option_gets_the_one_glyph_block():
    blocks = [composed("train", f"data={d}", "data.root=/x")["data"]["glyphs"] for d in ("digits", "imagefolder", "torchvision")]
    assert blocks[0] == blocks[1] == blocks[2] and blocks[0]["n"] == 20000 and blocks[0]["grid"] == 8
    assert composed("train", "data.glyphs.n=500")["data"]["glyphs"]["n"] == 500


def test_report_gets_the_report_defaults():
    cfg = composed("report")
    assert cfg["report"] == REPORT_DEFAULTS
    assert cfg["study"] == {"name": "digits"}


@pytest.mark.parametrize("entry", ["train", "tune", "pretrain", "study"])
def test_pretraining_is_the_train_block_longer(entry):
    """pretrain/default.yaml composes train/default.yaml: 600 steps, validated every 200, the rest equal."""
    cfg = composed(entry)
    assert cfg["pretrain"]["train"] == {**TRAIN_DEFAULTS, "steps": 600, "val_every": 200}
    assert cfg["pretrain"]["augment"] == "light" and cfg["pretrain"]["seed"] == 0


def test_overriding_the_target_training_leaves_pretraining_alone():
    cfg = composed("train", "train.steps=10", "pretrain.train.lr=0.01")
    assert cfg["train"]["steps"] == 10 and cfg["train"]["lr"] == 0.003
    assert cfg["pretrain"]["train"]["steps"] == 600 and cfg["pretrain"]["train"]["lr"] == 0.01


def test_a_recipe_folder_of_ones_own_joins_through_the_search_path(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text(
        "# @package _global_\nstudy:\n  name: mine\n  n_train: [12, 24]\ndata:\n  n_val: 100\n")
    cfg = composed("study", f"hydra.searchpath=[file://{tmp_path}]", "recipe=mine")
    assert cfg["study"]["name"] == "mine" and cfg["study"]["n_train"] == [12, 24]
    assert cfg["data"]["n_val"] == 100
    assert composed("study", f"hydra.searchpath=[file://{tmp_path}]")["study"]["name"] == "digits"  # default kept


def test_every_config_file_and_package_ships():
    """A non-editable install ships the top-level conf/ (as harness.conf), every stage package and the
    report template: pyproject's packages, package-dir and package-data match what is on disk."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk_packages = {"harness"} | {"harness." + p.parent.name for p in (ROOT / "harness").glob("*/__init__.py")}
    assert set(setup["packages"]) == on_disk_packages | {"harness.conf"}
    assert setup["package-dir"] == {"harness.conf": "conf"}
    conf = ROOT / "conf"
    shipped = {p for g in setup["package-data"]["harness.conf"] for p in conf.glob(g)}
    on_disk = set(conf.rglob("*.yaml"))
    assert on_disk and on_disk <= shipped, sorted(str(p) for p in on_disk - shipped)
    templates = {p for g in setup["package-data"]["harness.report"] for p in (ROOT / "harness" / "report").glob(g)}
    assert ROOT / "harness" / "report" / "templates" / "report.html.j2" in templates  # the report page's template
    assert Path(CONFIG_DIR) == conf  # this checkout's editable install reads the top-level conf/


@pytest.mark.slow
def test_a_regular_install_composes_its_shipped_config(tmp_path):
    """`pip install .` (not editable) into a folder of its own: the wheel carries harness.conf, and
    harness-train --cfg job composes from it, not from this checkout."""
    import subprocess
    import sys

    import shutil

    source = tmp_path / "src"  # a copy: setuptools builds in the source tree, which must stay clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "harness", "conf"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, cwd=tmp_path)
    assert (target / "harness" / "conf" / "train.yaml").is_file()
    script = ("import sys; sys.argv = ['harness-train', '--cfg', 'job']; "
              "import harness.cli; print('CONFIG_DIR', harness.cli.CONFIG_DIR); "
              "from harness.cli.train import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"CONFIG_DIR {target / 'harness' / 'conf'}" in out.stdout
    assert "strategy:" in out.stdout and "train:" in out.stdout


def test_the_typed_settings_are_changed_by_copy_only():
    """A trial's settings are made from the cell's with replace_path; the cell's stay as loaded."""
    import dataclasses

    from conftest import compose_cfg
    from harness.settings.schema import as_dict, has_path, replace_path

    cell = compose_cfg(config_name="tune")
    trial = replace_path(replace_path(cell, "train.lr", 0.5), "search_space.params.lr.high", 0.9)
    assert (trial.train.lr, trial.search_space.params["lr"]["high"]) == (0.5, 0.9)
    assert cell.train.lr == 0.003 and cell.search_space.params["lr"]["high"] == 0.3  # untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(KeyError):
        replace_path(cell, "train.learning_rate", 0.1)
    assert has_path(cell, "strategy.name") and not has_path(cell, "train.learning_rate")
    plain = as_dict(cell)
    assert plain["train"]["lr"] == 0.003 and plain["data"]["glyphs"]["scale"] == [0.75, 1.0]


# Settings whose composed value is the chosen option's, not a default of the settings group: the
# digits data option's class split, the strategy's search space, harness-tune's study name.
OPTION_VALUES = {"data.source_classes", "data.target_classes", "search_space.params", "search_space.recipes",
                 "study_name"}


def _differences(typed, default, path: str = "") -> list[str]:
    import dataclasses

    if dataclasses.is_dataclass(typed) and type(typed) is type(default):
        return [d for f in dataclasses.fields(typed)
                for d in _differences(getattr(typed, f.name), getattr(default, f.name), f"{path}{f.name}.")]
    return [] if typed == default or path.rstrip(".") in OPTION_VALUES else [f"{path.rstrip('.')}: {typed!r} vs {default!r}"]


@pytest.mark.parametrize("app", ["train", "tune", "pretrain"])
def test_the_composed_defaults_are_the_typed_defaults(app):
    """Each entry point's composed defaults (no overrides) equal its settings dataclass built with no
    arguments, but for the values an option carries (OPTION_VALUES): code and YAML do not disagree."""
    from conftest import compose_cfg

    cfg = compose_cfg(config_name=app, small=False)
    assert _differences(cfg, type(cfg)()) == []


def test_every_settings_dataclass_built_with_no_arguments_is_valid():
    from harness.settings.config import validate_cell, validate_run
    from harness.settings.schema import CellConfig, RunConfig

    validate_run(RunConfig())
    validate_cell(CellConfig())

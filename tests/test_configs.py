"""The composed configs of every entry point: the shared blocks (tune/, report/, train/ config groups)
are written once, and each entry point still gets the values it always had. Also: the configs ship
inside the package, and a user's own recipe folder joins through Hydra's search path."""

from __future__ import annotations

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


def test_every_config_file_is_package_data():
    """A non-editable install ships harness/conf/ and the report template: pyproject's package-data matches them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["harness"]
    package = ROOT / "harness"
    shipped = {p for g in globs for p in package.glob(g)}
    on_disk = set((package / "conf").rglob("*.yaml"))
    assert on_disk and on_disk <= shipped, sorted(str(p) for p in on_disk - shipped)
    assert package / "report" / "templates" / "report.html.j2" in shipped  # the report page's template
    assert Path(CONFIG_DIR) == package / "conf"


def test_the_typed_settings_are_changed_by_copy_only():
    """A trial's settings are made from the cell's with replace_path; the cell's stay as loaded."""
    import dataclasses

    from conftest import compose_cfg
    from harness.schema import as_dict, has_path, replace_path

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

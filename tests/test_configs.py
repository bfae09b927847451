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
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def composed(config_name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


def typed(kind, **changes) -> dict:
    """A settings group's typed defaults as composed (plain lists and dicts)."""
    from harness.settings.schema import as_dict
    return {**as_dict(kind()), **changes}


def test_tune_gets_the_typed_defaults():
    from harness.settings.schema import StudyConfig, TrainConfig, TuneConfig
    cfg = composed("tune")
    assert cfg["tune"] == typed(TuneConfig)
    assert cfg["study"] == typed(StudyConfig)
    assert cfg["train"] == typed(TrainConfig)


@pytest.mark.parametrize("recipe", ["digits", "digits_split", "cifar10_gpu"])
def test_study_overrides_only_trials_startup_and_progress_of_the_tune_block(recipe):
    from harness.settings.schema import ReportConfig, TuneConfig
    cfg = composed("study", f"recipe={recipe}")
    trials = {"cifar10_gpu": 30}.get(recipe, 5)  # a recipe's own n_trials wins over study.yaml's (recipe after _self_)
    assert cfg["tune"] == typed(TuneConfig, n_trials=trials, n_startup_trials=4, progress=False)
    assert cfg["report"] == typed(ReportConfig, dir="outputs/report/${study.name}")
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
    from harness.settings.schema import ReportConfig
    cfg = composed("report")
    assert cfg["report"] == typed(ReportConfig, dir="outputs/report/${study.name}")
    assert cfg["study"] == {"name": "digits"}  # harness-report reads the name only


@pytest.mark.parametrize("entry", ["train", "tune", "pretrain", "study"])
def test_pretraining_is_the_train_block_longer(entry):
    """PretrainConfig's train block: 600 steps, validated every 200, the rest the target's defaults."""
    from harness.settings.schema import TrainConfig
    cfg = composed(entry)
    assert cfg["pretrain"]["train"] == typed(TrainConfig, steps=600, val_every=200)
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
    from harness.settings.config import validate
    from harness.settings import schema

    apps = (schema.RunConfig, schema.CellConfig, schema.StudyAppConfig, schema.ReportAppConfig)
    for app in apps:
        if app is schema.StudyAppConfig:  # harness-study needs a grid, which has no default
            with pytest.raises(ConfigError, match="study.n_train"):
                validate(app())
            validate(app(study=schema.StudyConfig(n_train=(10, 20))))
        else:
            validate(app())


def _restated(values, defaults, path: str = "") -> list[str]:
    """The keys of a YAML block whose value is the one it would have without it."""
    if isinstance(values, dict) and isinstance(defaults, dict):
        return [r for k, v in values.items() if k != "defaults" and k in defaults
                for r in _restated(v, defaults[k], f"{path}{k}.")]
    return [path.rstrip(".")] if values == defaults else []


def _yaml(path: Path) -> dict:
    import yaml
    return yaml.safe_load(path.read_text()) or {}


def test_no_config_file_restates_a_typed_default():
    """Each default is written once, in harness/settings/schema.py: an option file, an entry point's
    own blocks and a recipe hold only what they change (a restated value would be a second copy to
    keep in step)."""
    from harness.settings.nodes import BASES
    from harness.settings.schema import as_dict

    found = []
    for path in sorted(ROOT.glob("conf/*/*.yaml")):
        group = path.parent.name
        if group in BASES:
            found += [f"{path.relative_to(ROOT)}: {k}" for k in _restated(_yaml(path), as_dict(BASES[group]()))]
    for app in ("train", "tune", "pretrain", "study", "report"):
        blocks = _yaml(ROOT / "conf" / f"{app}.yaml")
        for key, value in blocks.items():
            base = "study_ref" if (app, key) == ("report", "study") else key
            if base in BASES:
                found += [f"conf/{app}.yaml: {k}" for k in _restated({key: value}, {key: as_dict(BASES[base]())})]
    without = composed("study", "~recipe")
    for path in sorted(ROOT.glob("conf/recipe/*.yaml")):
        found += [f"{path.relative_to(ROOT)}: {k}" for k in _restated(_yaml(path), without)]
    assert found == [], found


def test_an_option_of_ones_own_gets_every_key_from_the_typed_defaults(tmp_path):
    """A user's data option that names two settings composes with all of them (so any can be
    overridden from the command line), like the shipped ones."""
    from harness.settings.schema import DataConfig
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("name: imagefolder\nroot: /x\n")
    cfg = composed("train", f"hydra.searchpath=[file://{tmp_path}]", "data=mine", "data.n_val=99")
    assert cfg["data"] == typed(DataConfig, name="imagefolder", root="/x", n_val=99)


def test_a_restated_default_is_found():
    assert _restated({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 0, "b": {"c": 2, "d": 4}}) == ["b.c"]


@pytest.mark.parametrize("entry", ["train", "tune"])
def test_each_entry_point_checks_its_settings_once(entry, tmp_path, monkeypatch):
    """One harness-train run and one harness-tune cell (3 trials, 2 re-runs), in process: the
    settings are checked by one call of validate, and each group's checks run once per place it
    has (train and pretrain.train), not again per trial, re-run or pretraining."""
    import importlib
    import sys

    from harness.settings import config, schema
    from tuning_helpers import tiny_overrides

    calls = {"validate": 0, "train": 0, "data": 0, "tune": 0}
    validate = config.validate

    def counted_validate(cfg):
        calls["validate"] += 1
        validate(cfg)

    monkeypatch.setattr(config, "validate", counted_validate)
    for name, kind in (("train", schema.TrainConfig), ("data", schema.DataConfig), ("tune", schema.TuneConfig)):
        check = kind.check

        def counted(self, key, _check=check, _name=name):
            calls[_name] += 1
            _check(self, key)
        monkeypatch.setattr(kind, "check", counted)

    small = ["logger=none", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    if entry == "train":
        args = small + ["train.steps=10", "train.val_every=5", "train.batch_size=16", "data.n_train=20", "data.n_val=50",
                        "data.n_test=50", "strategy=finetune", f"pretrain.cache_dir={tmp_path / 'pre'}",
                        "pretrain.train.steps=10", "pretrain.train.val_every=5"]
    else:
        args = small + tiny_overrides(tmp_path) + ["tune.n_trials=3", "strategy=finetune"]
    monkeypatch.setattr(sys, "argv", [f"harness-{entry}", *args])
    importlib.import_module(f"harness.cli.{entry}").main()
    assert calls == {"validate": 1, "train": 2, "data": 1, "tune": 1 if entry == "tune" else 0}

"""Where pretrained weights come from: local files (safetensors, torch state dicts), refused files
(pickled code, corrupt, another model's), hub tags that fail fast offline, and the pretraining cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import harness.training.run
from harness.data.task import build_task
from harness.errors import ConfigError
from harness.training.pretrain import cache_dir, ensure_pretrained, ensure_source, find_pretrained
from harness.training.run import build_model, run_training


class _Payload:
    """Unpickling this would call a function: the kind of file torch.load(weights_only=False) runs."""

    def __reduce__(self):
        return (print, ("this ran at load time",))


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    model = timm.create_model("harness_tiny_cnn", num_classes=7, in_chans=1)
    with torch.no_grad():
        for buf in model.buffers():  # non-default BatchNorm statistics, so buffers are compared for real
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _built(make_cfg, weights: Path):
    cfg = make_cfg("strategy=finetune", f"strategy.weights={weights}")
    return build_model(cfg, build_task(cfg.data))


def _assert_loaded(model, state):
    mine = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) == len(mine) - 2
    for key in backbone:
        assert torch.equal(mine[key], state[key]), key
    assert mine["fc.weight"].shape == (5, 64)  # 7 source classes -> the 5 target classes


@pytest.mark.parametrize("kind", ["safetensors", "pt", "pt_checkpoint"])
def test_local_weights_file_loads(make_cfg, tmp_path, source_state, kind):
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(source_state, str(path))
    elif kind == "pt":
        path = tmp_path / "w.pt"
        torch.save(source_state, path)
    else:  # a training checkpoint wrapping the state dict, keys prefixed by DataParallel
        path = tmp_path / "ckpt.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in source_state.items()}, "epoch": 3}, path)
    _assert_loaded(_built(make_cfg, path), source_state)


def test_local_weights_file_trains(make_cfg, tmp_path, source_state):
    path = tmp_path / "w.safetensors"
    save_file(source_state, str(path))
    cfg = make_cfg("strategy=finetune", f"strategy.weights={path}", "strategy.mode=linear_probe", "train.steps=5")
    result = run_training(cfg, tmp_path / "run")
    state = result.model.state_dict()
    assert all(torch.equal(state[k], source_state[k]) for k in source_state if not k.startswith("fc."))
    assert result.compute.steps == 5


def test_pickled_code_is_refused(make_cfg, tmp_path, source_state, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"weights": source_state, "hook": _Payload()}, path)
    with pytest.raises(ConfigError, match="code") as err:
        _built(make_cfg, path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert "this ran at load time" not in capsys.readouterr().out


def test_pickled_callable_is_refused(make_cfg, tmp_path):
    path = tmp_path / "callable.pt"
    torch.save(torch.nn.functional.relu, path)  # a function by reference: loading it imports code
    with pytest.raises(ConfigError, match="code"):
        _built(make_cfg, path)


@pytest.mark.parametrize("name", ["corrupt.safetensors", "corrupt.pt", "empty.pt"])
def test_corrupt_file_is_refused(make_cfg, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"\x80\x02not really weights" * 8)
    with pytest.raises(ConfigError, match="not a readable") as err:
        _built(make_cfg, path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "code" not in message  # a damaged file is not reported as a security refusal


def test_other_models_weights_are_refused(make_cfg, tmp_path):
    other = timm.create_model("test_resnet", num_classes=5, in_chans=1)
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match="does not fit model TinyCNN") as err:
        _built(make_cfg, path)
    assert "\n" not in str(err.value)


def test_wrong_width_weights_are_refused(make_cfg, tmp_path):
    other = timm.create_model("harness_tiny_cnn", num_classes=5, in_chans=1, widths=(8, 16, 32))
    path = tmp_path / "narrow.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ConfigError, match="wrong shape"):
        _built(make_cfg, path)


def test_missing_weights_file(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        _built(make_cfg, tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------------------- the hub
def test_hub_offline_fails_fast(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg("strategy=finetune", "strategy.weights=hub", "model.name=resnet18.a1_in1k")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="source") as err:
        run_training(cfg, tmp_path)
    assert time.perf_counter() - started < 30  # a retry loop takes about a minute; a generous margin below it
    assert "HF_HUB_OFFLINE" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_hub_fails_fast(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # loopback, discard port: nothing listens
    cfg = make_cfg("strategy=finetune", "strategy.weights=hub", "model.name=resnet18.a1_in1k")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the model hub at http://127.0.0.1:9") as err:
        run_training(cfg, tmp_path)
    assert time.perf_counter() - started < 30  # a retry loop takes about a minute; a generous margin below it
    assert "source" in str(err.value)


def test_hub_needs_a_tag(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="tag"):
        run_training(make_cfg("strategy=finetune", "strategy.weights=hub", "model.name=resnet18"), tmp_path)


# ----------------------------------------------------------------------------- pretraining cache
def test_pretrain_cache_is_reused(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("strategy=finetune", cache=tmp_path / "cache")
    assert find_pretrained(cfg) is None
    calls = []
    real = harness.training.run.run_training

    def counting(*args, **kwargs):
        calls.append(kwargs.get("role"))
        return real(*args, **kwargs)

    monkeypatch.setattr(harness.training.run, "run_training", counting)
    first = ensure_pretrained(cfg)
    assert calls == ["source"]
    assert first.weights.parent == cache_dir(cfg) and first.weights.is_file()
    assert first.meta["steps"] == 20 and first.meta["source_classes"] == ["0", "1", "2", "3", "4"]
    assert first.meta["flops"] > first.meta["train_flops"] > 0
    mtime = first.weights.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the cached pretraining was trained again")

    monkeypatch.setattr(harness.training.run, "run_training", refuse)
    second = ensure_pretrained(cfg)
    assert second == first
    assert second.meta == json.loads((cache_dir(cfg) / "meta.json").read_text())
    assert first.weights.stat().st_mtime_ns == mtime

    # the target side does not change the source model: same cache
    same = make_cfg("strategy=finetune", "data.n_train=40", "train.lr=0.1", "strategy.mode=linear_probe", "seed=1",
                    "data.augment=strong", cache=tmp_path / "cache")
    assert cache_dir(same) == cache_dir(cfg) and ensure_pretrained(same) == first
    # ...but the pretraining config does
    for override in ("pretrain.train.lr=0.01", "pretrain.train.steps=21", "pretrain.seed=1", "pretrain.augment=strong",
                     "data.source_classes=[0,1,2]", "model.drop_rate=0.1"):
        changed = make_cfg("strategy=finetune", override, cache=tmp_path / "cache")
        assert cache_dir(changed) != cache_dir(cfg), override
        assert find_pretrained(changed) is None


def test_the_cache_key_of_a_glyph_source_is_its_glyph_settings_not_the_targets_split(make_cfg, tmp_path):
    from harness.training.pretrain import source_config

    cfg = make_cfg("strategy=finetune", "data.source=glyphs", cache=tmp_path / "cache")
    assert source_config(cfg)["data"]["glyphs"]["stroke"] == (0, 1)  # every effective setting, defaults too
    for override in ("data.glyphs.seed=1", "data.glyphs.n=10400", "data.glyphs.stroke=[0,2]", "data.glyphs.chars=ABCDEF",
                     "data.glyphs.fonts=[cmr10.ttf]", "data.glyphs.threshold=null", "data.glyphs.image_size=16",
                     "data.image_size=16", "data.source=classes"):
        assert cache_dir(make_cfg("strategy=finetune", "data.source=glyphs", override, cache=tmp_path / "cache")) != cache_dir(cfg), override
    for override in ("data.target_classes=null", "data.source_classes=null", "data.split_seed=2", "data.source_n_val=60",
                     "data.n_train=40"):
        assert cache_dir(make_cfg("strategy=finetune", "data.source=glyphs", override, cache=tmp_path / "cache")) == cache_dir(cfg), override


def test_a_class_source_keeps_the_cache_key_it_had_before_glyphs(make_cfg, tmp_path):
    """Checkpoints cached before data.source existed must still be found: same keys, same hash."""
    from harness.training.pretrain import config_hash, source_config

    cfg = make_cfg("strategy=finetune", cache=tmp_path / "cache")
    assert sorted(source_config(cfg)["data"]) == sorted(
        ["name", "root", "dataset", "image_size", "split_seed", "source_classes", "target_classes", "source_n_val"])
    assert config_hash(make_cfg("strategy=finetune", "data.glyphs.seed=5", cache=tmp_path / "cache")) == config_hash(cfg)


def test_finetune_run_uses_cache(make_cfg, tmp_path, monkeypatch):
    """A fine-tune run (harness-train: ensure_source, then the run) pretrains once; the next only reads the cache."""
    cfg = make_cfg("strategy=finetune", "train.steps=5", cache=tmp_path / "cache")
    ensure_source(cfg)
    run_training(cfg, tmp_path / "a")
    assert find_pretrained(cfg) is not None
    monkeypatch.setattr("harness.training.pretrain.pretrain", lambda cfg: (_ for _ in ()).throw(AssertionError("pretrained again")))
    ensure_source(cfg)
    run_training(cfg, tmp_path / "b")


def test_the_trainer_only_reads_the_source_model_and_says_who_makes_it(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("strategy=finetune", "train.steps=5", cache=tmp_path / "cache")
    monkeypatch.setattr("harness.training.pretrain.pretrain", lambda cfg: (_ for _ in ()).throw(AssertionError("the trainer pretrained")))
    with pytest.raises(ConfigError, match="no source model is cached .* run harness-pretrain"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- what cells record of their weights
def test_a_cell_records_where_its_weights_came_from_and_the_report_says_unknown_not_0(make_cfg, tmp_path, source_state):
    from harness.report import build_report
    from harness.store.records import WeightsRecord
    from harness.tuning.tune import tune_cell

    path = tmp_path / "w.safetensors"
    save_file(source_state, str(path))
    cell = [f"storage.url=sqlite:///{tmp_path}/t.db", "tune.n_trials=1", "study.seeds=1", "tune.progress=false",
            "~search_space.params.steps", "study.name=files", "strategy=finetune", f"strategy.weights={path}"]
    study = tune_cell(make_cfg(*cell, config_name="tune"), tmp_path / "runs")
    assert study.user_attrs["weights"] == {"origin": "file", "ref": str(path), "pretrain_flops": None,
                                           "pretrain_flops_from": "unknown"}
    assert "pretrain" not in study.user_attrs
    summary = build_report(f"sqlite:///{tmp_path}/t.db", "files", tmp_path / "report", n_boot=20)
    assert summary["crossover"]["source"]["origin"] == f"file {path}"
    assert summary["crossover"]["source"]["pretrain_flops"] == "unknown"
    assert "pretraining FLOPs unknown" in (tmp_path / "report" / "report.md").read_text().split("## How it was measured", 1)[1].split("\n## ")[0]

    hub = make_cfg("strategy=finetune", "strategy.weights=hub", "model.name=resnet18.a1_in1k", "strategy.pretrain_flops=3e18")
    assert WeightsRecord.of_settings(hub, None).to_json() == {
        "origin": "hub", "ref": "resnet18.a1_in1k", "pretrain_flops": 3e18, "pretrain_flops_from": "declared"}
    assert WeightsRecord.of_settings(make_cfg("strategy=scratch"), None) is None


def test_the_checkpoint_key_changes_with_any_data_setting_not_declared_independent():
    """The pretraining cache is keyed by every data setting but the declared independent ones: a
    setting added to DataConfig changes the source model's key unless someone decides otherwise;
    the target's sizes and draws never do (nor, for glyphs, its split and classes)."""
    import dataclasses

    from conftest import compose_cfg
    from harness.settings.schema import DataConfig
    from harness.training.source_cache import GLYPH_SOURCE_INDEPENDENT, SOURCE_INDEPENDENT, config_hash

    cfg = compose_cfg("strategy=finetune")
    names = {f.name for f in dataclasses.fields(DataConfig)}
    assert SOURCE_INDEPENDENT <= names and GLYPH_SOURCE_INDEPENDENT <= names
    same = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_train=11, draw=3, subset=2, n_test=99))
    assert config_hash(same) == config_hash(cfg)
    moved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_seed=cfg.data.split_seed + 1))
    assert config_hash(moved) != config_hash(cfg)  # the source classes' split moves with it
    WithRevision = dataclasses.make_dataclass("WithRevision", [("revision", str, "v1")], bases=(DataConfig,), frozen=True)
    plain = dataclasses.asdict(cfg.data)
    plain["glyphs"] = cfg.data.glyphs
    a = dataclasses.replace(cfg, data=WithRevision(**plain, revision="v1"))
    b = dataclasses.replace(cfg, data=WithRevision(**plain, revision="v2"))
    assert config_hash(a) != config_hash(b)

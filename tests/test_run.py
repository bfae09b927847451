"""One training run: reproducibility, bad inputs, loggers, augmentation, and the result it returns."""

from __future__ import annotations

import csv
import glob
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.augment import LEVELS, augment_batch
from harness.data.task import build_task
from harness.errors import ConfigError
from harness.training.pretrain import ensure_source
from harness.training.run import run_training


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------- reproducibility
def test_same_seed_same_result(make_cfg, tmp_path):
    cfg = make_cfg("train.steps=20", "data.augment=strong")
    a, b = run_training(cfg, tmp_path / "a"), run_training(cfg, tmp_path / "b")
    assert a.val_acc == b.val_acc and a.test_acc == b.test_acc
    assert a.val_history == b.val_history and len(a.val_history) == 4  # steps 5, 10, 15, 20
    assert _same_weights(a, b)
    c = run_training(make_cfg("train.steps=20", "data.augment=strong", "seed=1"), tmp_path / "c")
    assert not _same_weights(a, c)


def test_finetune_same_seed_same_result_whether_or_not_cached(make_cfg, tmp_path):
    """The first run follows the pretraining (cache missing), the second only reads the cache: same result."""
    cfg = make_cfg("strategy=finetune", "train.steps=15", cache=tmp_path / "cache")
    ensure_source(cfg)  # what harness-train does before its run
    a = run_training(cfg, tmp_path / "a")
    b = run_training(cfg, tmp_path / "b")
    assert a.val_acc == b.val_acc and a.val_history == b.val_history
    assert _same_weights(a, b)
    c = run_training(make_cfg("strategy=finetune", "train.steps=15", "seed=3", cache=tmp_path / "cache"), tmp_path / "c")
    assert not torch.equal(a.model.state_dict()["fc.weight"], c.model.state_dict()["fc.weight"])


# ---------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("override, message", [
    ("train.steps=0", "train.steps=0 must be a positive integer"),
    ("train.steps=-5", "train.steps=-5 must be a positive integer"),
    ("train.steps=2.5", "train.steps=2.5 must be a positive integer"),
    ("train.lr=0", "train.lr=0 must be a positive number"),
    ("train.lr=-0.1", "train.lr=-0.1 must be a positive number"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.optimizer=adam", "train.optimizer=adam is not one of adamw, sgd"),
    ("train.warmup_frac=1.5", "train.warmup_frac"),
    ("pretrain.train.steps=0", "pretrain.train.steps"),
    ("data.augment=heavy", "data.augment=heavy is not one of off, light, strong"),
    ("model.name=resnet_does_not_exist", "model.name=resnet_does_not_exist is not a timm model"),
    ("model.name=harness_tiny_cn", "did you mean harness_tiny_cnn"),
])
def test_bad_input_is_one_line_config_error(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        run_training(make_cfg(override), tmp_path / "run")
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    assert not (tmp_path / "run" / "metrics.csv").exists()  # refused before training


def test_finetune_bad_inputs(make_cfg, tmp_path):
    for override, message in [("strategy.mode=partial", "strategy.mode=partial is not one of"),
                              ("strategy.layer_decay=0", "strategy.layer_decay"),
                              ("strategy.lp_fraction=1", "strategy.lp_fraction")]:
        with pytest.raises(ConfigError, match=message):
            run_training(make_cfg("strategy=finetune", override), tmp_path)


# ------------------------------------------------------------------------------------- result
def test_result_fields(make_cfg, tmp_path):
    result = run_training(make_cfg("train.steps=10", "data.n_train=25"), tmp_path)
    out = result.to_json()
    assert out["strategy"] == "scratch" and out["n_train"] == 25
    assert 0 <= out["val_acc"] <= 1 and 0 <= out["test_acc"] <= 1
    assert out["val_acc"] == out["val_history"][-1][1] and out["val_history"][-1][0] == 10
    compute = out["compute"]
    assert compute["steps"] == 10 and compute["samples_seen"] == 10 * 16
    assert compute["train_flops"] == pytest.approx(10 * compute["flops_per_step"]) and compute["train_flops"] > 0
    # evaluation: 2 validations of 50 and one test of 50, at a third of a training step's per-sample cost
    per_sample = compute["eval_flops"] / (2 * 50 + 50)
    assert 0.2 < per_sample / (compute["flops_per_step"] / 16) < 0.5
    assert compute["wall_s"] > 0
    assert out["config"]["data"]["n_train"] == 25 and out["config"]["train"]["steps"] == 10


def test_the_test_evaluation_keeps_each_examples_correctness(make_cfg, tmp_path):
    """One pass over the test split gives the accuracy and, per example in split order, whether the
    model got it right: what a bootstrap over test examples and a paired comparison need."""
    cfg = make_cfg("train.steps=10", "data.n_test=150")  # 3 evaluation batches of 64, the last short
    result = run_training(cfg, tmp_path / "a")
    correct = result.test_correct
    assert isinstance(correct, np.ndarray) and correct.dtype == bool and correct.shape == (150,)
    assert result.test_acc == correct.mean() == correct.sum() / 150
    task = build_task(cfg.data)
    assert result.test_split == task.test_split != ""
    model = result.model.eval()
    with torch.no_grad():
        again = torch.cat([model(task.test.x[i:i + 64]).argmax(1) == task.test.y[i:i + 64] for i in range(0, 150, 64)])
    assert np.array_equal(correct, again.numpy())
    untested = run_training(cfg, tmp_path / "b", evaluate_test=False)
    assert untested.test_acc is None and untested.test_correct is None


# ------------------------------------------------------------------------------------ loggers
def test_csv_logger_writes_metrics(make_cfg, tmp_path):
    result = run_training(make_cfg("logger=csv", "train.steps=15"), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    val = [r for r in rows if r.get("val_acc")]
    assert [int(r["step"]) + 1 for r in val] == [5, 10, 15]
    assert float(val[-1]["val_acc"]) == pytest.approx(result.val_acc)
    assert all(r["train_loss"] for r in val)


def _wandb_records(path: Path):
    """The records of an offline W&B run file (LevelDB log format: 32 KiB blocks of framed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunks, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 0:
            continue
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
    return records


def test_wandb_logger_offline(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("logger=wandb", f"logger.dir={tmp_path / 'wb'}", "study_name=my-study", "strategy=finetune",
                   "train.steps=10", "data.n_train=30", cache=tmp_path / "cache")
    ensure_source(cfg)  # pretrains first (fresh cache): a run of its own
    result = run_training(cfg, tmp_path / "run")
    files = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 2
    by_job = {}
    for file in files:
        records = _wandb_records(Path(file))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        by_job[run.job_type] = (run, records)
    assert set(by_job) == {"pretrain", "train"}  # harness-train's job_type; tuning's are "trial" and "rerun"
    assert by_job["pretrain"][0].run_group == "my-study"
    run, records = by_job["train"]
    assert run.run_group == "my-study" and run.job_type == "train"
    assert run.display_name == "finetune-n30" and set(run.tags) == {"n_train=30", "finetune"}
    history = [{i.nested_key[0] if i.nested_key else i.key: i.value_json for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [float(h["val_acc"]) for h in history if "val_acc" in h][-1] == pytest.approx(result.val_acc)
    assert any(r.WhichOneof("record_type") == "exit" for r in records)
    import wandb

    assert wandb.run is None  # finished, so the next run gets its own


# ------------------------------------------------------------------------------- augmentation
def test_augment_off_is_identity():
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(augment_batch(x, "off"), x)
    assert LEVELS == ("off", "light", "strong")


@pytest.mark.parametrize("level", ["light", "strong"])
def test_augment_changes_batch_keeps_shape(level):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 12, 12)
    out = augment_batch(x, level)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-4
    assert changed.sum() >= 12  # most images move
    assert torch.isfinite(out).all()


def test_strong_augment_is_stronger_than_light():
    x = torch.randn(64, 1, 16, 16)
    torch.manual_seed(1)
    light = (augment_batch(x, "light") - x).abs().mean()
    torch.manual_seed(1)
    strong = (augment_batch(x, "strong") - x).abs().mean()
    assert strong > light > 0


def test_training_with_strong_augment(make_cfg, tmp_path):
    strong = run_training(make_cfg("data.augment=strong", "train.steps=10"), tmp_path / "s")
    off = run_training(make_cfg("data.augment=off", "train.steps=10"), tmp_path / "o")
    assert strong.compute.steps == 10 and 0 <= strong.val_acc <= 1
    assert not _same_weights(strong, off)  # the augmentation reached the training step


def test_wandb_files_land_in_the_folder_given_after_the_process_changed_folder(make_cfg, tmp_path, monkeypatch):
    """A relative logger.dir is the folder the run was started from: W&B's service process, started
    by an earlier run elsewhere, must not resolve it against its own folder (the run file went
    missing that way)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        monkeypatch.chdir(folder)
        run_training(make_cfg("logger=wandb", "logger.dir=wb", "train.steps=5"), folder / "run")
        assert glob.glob(str(folder / "wb" / "wandb" / "offline-run-*" / "run-*.wandb")), folder

"""The GPU path end to end: bf16-mixed, channels_last, data on the device, and the evaluations that
follow training (final validation, test split). Skipped where no CUDA device is visible (CI), run on
a GPU machine with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZES

from harness.pretrain import ensure_source
from harness.run import run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ON_GPU = ("trainer.accelerator=gpu", "trainer.precision=auto", "trainer.channels_last=auto")


@pytest.mark.parametrize("strategy", ["scratch", "finetune"])
def test_a_run_trains_and_evaluates_on_the_gpu(make_cfg, tmp_path, strategy):
    # val_every does not divide steps, so the final validation and the test split run after fit.
    cfg = make_cfg(f"strategy={strategy}", *ON_GPU, "train.steps=12", "train.val_every=5")
    ensure_source(cfg)
    result = run_training(cfg, tmp_path / "run")
    assert result.compute.steps == 12 and result.val_history[-1][0] == 12
    assert result.test_acc is not None and 0.0 <= result.test_acc <= 1.0
    assert result.compute.peak_mem_bytes and result.compute.peak_mem_bytes < torch.cuda.get_device_properties(0).total_memory


def test_flops_are_counted_the_same_on_the_gpu_as_on_the_cpu(make_cfg, tmp_path):
    cpu = run_training(make_cfg(), tmp_path / "cpu").compute
    gpu = run_training(make_cfg(*ON_GPU), tmp_path / "gpu").compute
    assert gpu.flops_per_step == pytest.approx(cpu.flops_per_step, rel=1e-6)
    assert gpu.train_flops == pytest.approx(cpu.train_flops, rel=1e-6)


def test_a_loader_fed_run_trains_on_the_gpu(make_cfg, tmp_path, image_tree):
    # on_device_max_mb=0: the images go through a DataLoader with pinned memory, not device tensors.
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, "data.n_train=24",
                   "data.on_device_max_mb=0", "data.num_workers=0", *ON_GPU)
    result = run_training(cfg, tmp_path / "run")
    assert result.test_acc is not None and result.compute.steps == 10


def test_a_flops_budgets_reference_trial_is_counted_the_same_on_the_gpu(make_cfg):
    from harness.data import build_task
    from harness.tuning import reference_trial

    cpu_cfg = make_cfg("tune.budget=flops", config_name="tune")
    gpu_cfg = make_cfg("tune.budget=flops", *ON_GPU, config_name="tune")
    task = build_task(cpu_cfg.data)
    cpu, gpu = reference_trial(cpu_cfg, task), reference_trial(gpu_cfg, task)
    assert gpu["trial_flops"] == pytest.approx(cpu["trial_flops"], rel=1e-6) and gpu["steps"] == cpu["steps"]

"""The GPU path end to end: bf16-mixed, channels_last, data on the device, and the evaluations that
follow training (final validation, test split). Skipped where no CUDA device is visible (CI), run on
a GPU machine with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZES

from harness.training.pretrain import ensure_source
from harness.training.run import run_training

import harness.training.run
from harness.data.task import TensorBatches

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ON_GPU = ("trainer.accelerator=gpu", "trainer.precision=auto", "trainer.channels_last=auto")


@pytest.fixture
def observed(monkeypatch) -> dict[str, set]:
    """What the backbone is fed and computes in (device, channels_last weights, its output's dtype), and
    where the training batches live: recorded at every forward of every backbone a run creates."""
    seen: dict[str, set] = {"device": set(), "channels_last": set(), "out_dtype": set(), "batches_on": set()}
    real_create, real_batches = harness.training.run.create_backbone, harness.training.run.train_batches

    def create_backbone(*args, **kwargs):
        model = real_create(*args, **kwargs)

        def look(module, inputs, output):
            x = inputs[0]
            seen["device"].add(x.device.type)
            # The weights' layout (an input of one channel reads as both layouts at once).
            seen["channels_last"].add(any(p.dim() == 4 and p.shape[1] > 1 and not p.is_contiguous()
                                          and p.is_contiguous(memory_format=torch.channels_last) for p in module.parameters()))
            seen["out_dtype"].add(output.dtype)
        model.register_forward_hook(look)
        return model

    def train_batches(images, *args, **kwargs):
        batches = real_batches(images, *args, **kwargs)
        seen["batches_on"].add(batches.x.device.type if isinstance(batches, TensorBatches) else "loader")
        return batches

    monkeypatch.setattr(harness.training.run, "create_backbone", create_backbone)
    monkeypatch.setattr(harness.training.run, "train_batches", train_batches)
    return seen


def test_on_the_cpu_the_observer_sees_fp32_cpu_tensors_channels_last_by_default(make_cfg, tmp_path, observed):
    """The control of the GPU test below, run everywhere: the same observer, the CPU's answers."""
    run_training(make_cfg("trainer.accelerator=cpu", "trainer.channels_last=false", "train.steps=6", "train.val_every=5"),
                 tmp_path / "run")
    assert observed == {"device": {"cpu"}, "channels_last": {False}, "out_dtype": {torch.float32}, "batches_on": {"cpu"}}
    run_training(make_cfg("trainer.accelerator=cpu", "train.steps=6"), tmp_path / "cl")  # auto: channels_last on CPUs too
    assert observed["channels_last"] == {False, True}  # counted before the switch, trained after it


@needs_gpu
@pytest.mark.parametrize("strategy", ["scratch", "finetune"])
def test_a_run_trains_and_evaluates_on_the_gpu(make_cfg, tmp_path, strategy, observed):
    # val_every does not divide steps, so the final validation and the test split run after fit.
    cfg = make_cfg(f"strategy={strategy}", *ON_GPU, "train.steps=12", "train.val_every=5")
    ensure_source(cfg)
    result = run_training(cfg, tmp_path / "run")
    assert result.compute.steps == 12 and result.val_history[-1][0] == 12
    # FLOPs are counted (fp32, outside autocast) on the device too; training and evaluation run in
    # bf16-mixed with channels_last, on data that lives on the GPU.
    assert observed["device"] == {"cuda"} and observed["batches_on"] == {"cuda"}
    assert True in observed["channels_last"] and torch.bfloat16 in observed["out_dtype"]
    assert result.test_acc is not None and 0.0 <= result.test_acc <= 1.0
    assert result.compute.peak_mem_bytes and result.compute.peak_mem_bytes < torch.cuda.get_device_properties(0).total_memory


@needs_gpu
def test_flops_are_counted_the_same_on_the_gpu_as_on_the_cpu(make_cfg, tmp_path):
    cpu = run_training(make_cfg(), tmp_path / "cpu").compute
    gpu = run_training(make_cfg(*ON_GPU), tmp_path / "gpu").compute
    assert gpu.flops_per_step == pytest.approx(cpu.flops_per_step, rel=1e-6)
    assert gpu.train_flops == pytest.approx(cpu.train_flops, rel=1e-6)


@needs_gpu
def test_a_loader_fed_run_trains_on_the_gpu(make_cfg, tmp_path, image_tree):
    # on_device_max_mb=0: the images go through a DataLoader with pinned memory, not device tensors.
    cfg = make_cfg("data=imagefolder", f"data.root={image_tree}", *IMAGE_SIZES, "data.n_train=24",
                   "data.on_device_max_mb=0", "data.num_workers=0", *ON_GPU)
    result = run_training(cfg, tmp_path / "run")
    assert result.test_acc is not None and result.compute.steps == 10


@needs_gpu
def test_a_flops_budgets_reference_trial_is_counted_the_same_on_the_gpu(make_cfg):
    from harness.data.task import build_task
    from harness.tuning.budget import reference_trial

    cpu_cfg = make_cfg("tune.budget=flops", config_name="tune")
    gpu_cfg = make_cfg("tune.budget=flops", *ON_GPU, config_name="tune")
    task = build_task(cpu_cfg.data)
    cpu, gpu = reference_trial(cpu_cfg, task), reference_trial(gpu_cfg, task)
    assert gpu.trial_flops == pytest.approx(cpu.trial_flops, rel=1e-6) and gpu.steps == cpu.steps

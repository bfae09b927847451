"""The real `harness-train` console script: result.json, its stdout, and how bad input ends the
process. Each process pays the cold import of torch and Lightning (~15 s), so they are few (the
other bad inputs are checked in-process in test_run.py) and all are started at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).parent / "harness-train"
SMALL = ["train.steps=10", "train.val_every=5", "train.batch_size=16", "data.n_train=20", "data.n_val=50",
         "data.n_test=50", "logger=none", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Start every console-script run in parallel; collect (returncode, stdout, stderr) by name."""
    script = str(SCRIPT) if SCRIPT.exists() else shutil.which("harness-train")
    assert script, "the harness-train console script is not installed"
    tmp = tmp_path_factory.mktemp("cli")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02definitely not weights" * 4)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    common = SMALL + [f"pretrain.cache_dir={tmp / 'cache'}", "pretrain.train.steps=20"]
    jobs = {
        "ok": common + [f"hydra.run.dir={tmp / 'run'}"],
        "steps0": common + ["train.steps=0", f"hydra.run.dir={tmp / 'bad1'}"],
        "weights": common + ["strategy=finetune", f"strategy.weights={corrupt}", f"hydra.run.dir={tmp / 'bad3'}"],
        "group": ["data=nope", f"hydra.run.dir={tmp / 'bad4'}"],
        "key": ["train.step=5", f"hydra.run.dir={tmp / 'bad5'}"],
        "syntax": ["train.steps=[5", f"hydra.run.dir={tmp / 'bad6'}"],
    }
    procs = {name: subprocess.Popen([script, *args], cwd=tmp, env=env, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for name, args in jobs.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        out[name] = (proc.returncode, stdout, stderr)
    out["run_dir"] = tmp / "run"
    return out


def test_result_json_and_stdout(cli):
    code, stdout, stderr = cli["ok"]
    assert code == 0, stderr
    result = json.loads((cli["run_dir"] / "result.json").read_text())
    assert result["strategy"] == "scratch" and result["n_train"] == 20
    assert 0 <= result["val_acc"] <= 1 and 0 <= result["test_acc"] <= 1
    compute = result["compute"]
    assert compute["train_flops"] > 0 and compute["eval_flops"] > 0 and compute["wall_s"] > 0
    assert result["config"]["train"]["steps"] == 10 and result["config"]["data"]["n_train"] == 20
    assert result["config"]["strategy"]["name"] == "scratch"
    assert f"val_acc={result['val_acc']:.4f}" in stdout
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name, message", [
    ("steps0", "train.steps=0 must be a positive integer"),
    ("weights", "corrupt.pt is not a readable torch weights file"),
])
def test_bad_input_exits_2_with_one_line(cli, name, message):
    code, stdout, stderr = cli[name]
    assert code == 2, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("name, message", [
    ("group", "Could not find 'data/nope' Available options in 'data': digits, imagefolder, torchvision"),
    ("key", "Could not override 'train.step'. To append to your config use +train.step=5"),
    ("syntax", "fix that override"),
])
def test_what_hydra_refuses_before_the_app_runs_also_exits_2_with_one_line(cli, name, message):
    code, stdout, stderr = cli[name]
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout

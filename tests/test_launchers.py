"""Hydra launchers spread cells (and workers) over processes and machines.

- joblib (local processes): tests/test_tuning.py runs a grid multirun through it.
- submitit_local: the local executor of hydra-submitit-launcher runs a real multirun here: two
  cells, every job a process of its own, sharing one storage.
- SLURM (conf/hydra/launcher/slurm_gpu.yaml): no cluster here, so the launcher is driven up to the
  point where it would call sbatch, and the job script it would submit is checked.
"""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

import harness.cli
from harness.store.records import spent
from tuning_helpers import load, run_tune, study_names, tiny_overrides


def _require_submitit():
    """The plugin comes with the test extra; outside CI a missing plugin skips, in CI it fails."""
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        import submitit  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("hydra-submitit-launcher is not installed: pip install -e '.[test]'")
        pytest.skip("hydra-submitit-launcher is not installed (pip install 'harness[slurm]')")


def _compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        return compose(config_name="tune", overrides=list(overrides), return_hydra_config=True)


def test_slurm_gpu_config_submits_one_gpu_per_worker(tmp_path, monkeypatch):
    """Drive the SLURM launcher with conf/hydra/launcher/slurm_gpu.yaml up to sbatch: a job array,
    one task with one GPU per array job, the requested partition, time limit and timeout signal."""
    _require_submitit()
    import submitit.slurm.slurm as slurm
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    cfg = _compose_with_hydra("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu-small",
                              "hydra.launcher.array_parallelism=3")
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    assert (launcher_cfg.gpus_per_node, launcher_cfg.tasks_per_node, launcher_cfg.nodes) == (1, 1, 1)

    params = OmegaConf.to_container(launcher_cfg, resolve=False)
    params.pop("_target_")
    params["submitit_folder"] = str(tmp_path / "submitit" / "%j")
    params["name"] = "harness-tune"
    launcher = SlurmLauncher(**params)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})

    scripts: list[str] = []

    class Submitted(Exception):
        pass

    def submit(self, command):  # instead of running sbatch
        scripts.append(self._make_submission_file_text(command, "test"))
        raise Submitted

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun exists"
    monkeypatch.setattr(slurm.SlurmExecutor, "_submit_command", submit)
    cells = [["strategy=scratch", "data.n_train=10"], ["strategy=scratch", "data.n_train=20"],
             ["strategy=finetune", "data.n_train=10"], ["strategy=finetune", "data.n_train=20"]]
    with pytest.raises(Submitted):
        launcher.launch(cells, initial_job_idx=0)

    (script,) = scripts
    lines = set(script.splitlines())
    for expected in ("#SBATCH --array=0-3%3", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                     "#SBATCH --nodes=1", "#SBATCH --partition=gpu-small", "#SBATCH --time=240",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --mem=32GB", "#SBATCH --signal=USR2@120"):
        assert expected in lines, f"{expected} missing from:\n{script}"
    assert "srun" in script and "submitit.core._submit" in script


@pytest.mark.slow
def test_submitit_local_multirun_over_two_cells(tmp_path):
    """`-m hydra/launcher=submitit_local data.n_train=10,20`: two jobs, each a process of its own;
    each cell ends with exactly its budget and its best re-run."""
    _require_submitit()
    budget = 3
    result = run_tune(tmp_path, "-m", "hydra/launcher=submitit_local", *tiny_overrides(tmp_path, n_train=None),
                      "~search_space.params.steps", "train.steps=10", "study.seeds=1", f"tune.n_trials={budget}",
                      "data.n_train=10,20", f"hydra.sweep.dir={tmp_path}/sweep", timeout=480)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    assert study_names(tmp_path) == ["digits/n000010/scratch/t0", "digits/n000020/scratch/t0"]
    for n in (10, 20):
        study = load(tmp_path, f"digits/n{n:06d}/scratch/t0")
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == budget and all(t.state == TrialState.COMPLETE for t in trials), \
            [(t.state, t.user_attrs.get("fail_reason")) for t in trials]
        assert spent(trials)["n_trials"] == budget
        assert len(study.user_attrs["final"]) == 1
        assert (tmp_path / "sweep" / f"scratch-n{n}" / ".hydra" / "config.yaml").is_file()
    # Two jobs, two processes: submitit's local executor keeps one folder per job, with its result.
    results = list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2 and len({r.parent.name for r in results}) == 2

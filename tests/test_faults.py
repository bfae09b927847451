"""Faults a long tuning run meets: weights files that carry code, Ctrl-C and SIGTERM in the middle
of a trial, and a worker killed outright while others keep working on the same storage.

The chaos tests run real `harness-tune` processes against PostgreSQL (4 workers on 2 cells) and
against the default SQLite storage (2 workers), kill one with SIGKILL mid-trial, and check the
storage afterwards: nothing completed is lost, the killed trial is failed and retried with the same
parameters, and no cell spends more than its budget.

PostgreSQL: set HARNESS_TEST_POSTGRES_URL=postgresql://user:password@127.0.0.1:5432/db (`.ci/run`
starts a server and sets it). Without it the PostgreSQL test is skipped, except under CI, where it
fails. One of its workers logs to W&B (offline, in its own process): no output, file or W&B run
of any worker may hold the storage URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from optuna.trial import FrozenTrial, TrialState

import harness.cli
from harness.settings import config
from harness.settings.schema import CellConfig
from harness.errors import ConfigError
from harness.training.run import run_training
from harness.store.storage import open_storage
from harness.tuning.tune import tune_cell
from harness.store.records import spent
from postgres_helpers import files_holding, postgres_url, secrets_of, text_holding
from tuning_helpers import FINISHED, TUNE, load, sqlite_trials, tiny_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------ safe loading


class _WritesMarker:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_pickle_that_carries_code_is_refused_and_never_runs(make_cfg, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    state = timm.create_model("harness_tiny_cnn", num_classes=7, in_chans=1).state_dict()
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": state, "extra": _WritesMarker(marker)}, evil)

    cfg = make_cfg("strategy=finetune", f"strategy.weights={evil}")
    with pytest.raises(ConfigError) as raised:
        run_training(cfg, tmp_path / "run")
    message = str(raised.value)
    assert "pickled code" in message and "refused" in message and str(evil) in message
    assert "safetensors" in message  # the way out
    assert "\n" not in message
    assert not marker.exists(), "loading the weights file ran the code inside it"


# ----------------------------------------------------------------------------- process helpers


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "HARNESS_STORAGE_URL")}
    env.update(WANDB_MODE="disabled", PYTHONUNBUFFERED="1", **extra)
    return env


def _interruptible() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`, as CI
    scripts do) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cwd: Path, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([TUNE, *args], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=_interruptible)


def _stop_all(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _wait_for(condition, what: str, procs=(), timeout: float = 240.0, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc, log in zip(procs, logs):
            assert proc.poll() in (None, 0), f"a worker failed while waiting for {what}:\n{Path(log).read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _trials(storage, name: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


# --------------------------------------------------------------------------------- interrupts


@pytest.mark.slow
def test_sigint_and_sigterm_stop_a_trial_cleanly_and_the_same_command_resumes(tmp_path):
    """Ctrl-C, then SIGTERM (what a scheduler sends), each to a harness-tune process in the middle
    of a trial; then the same command again finishes the budget with the interrupted parameters
    (re-queued behind the recipes still waiting, and counted once)."""
    budget = 2
    args = [*tiny_overrides(tmp_path), "~search_space.params.steps", "train.steps=150", "train.val_every=25",
            f"tune.n_trials={budget}", "study.seeds=1", f"hydra.run.dir={tmp_path}/run"]
    db = tmp_path / "tune.db"

    def interrupt(sig: signal.Signals, number: int) -> None:
        log = tmp_path / f"{sig.name}.log"
        proc = _start(tmp_path, args, log, _env())
        try:
            # mid-trial: the trial has reported at least one validation, and has many steps to go
            _wait_for(lambda: any(n == number and s == "RUNNING" and k > 0 for n, s, k in sqlite_trials(db)),
                      f"trial {number} to run", [proc], logs=[log])
            proc.send_signal(sig)
            code = proc.wait(120)
        finally:
            _stop_all([proc])
        output = log.read_text()
        assert code == 130, f"{sig.name}: exit {code}\n{output[-3000:]}"
        assert "interrupted" in output and "Traceback" not in output, output[-3000:]

        trials = load(tmp_path).trials
        stopped = trials[number]
        assert stopped.state == TrialState.FAIL, f"{sig.name} left trial {number} {stopped.state.name}"
        assert stopped.user_attrs["fail_reason"] == "interrupted" and stopped.user_attrs["interrupted"] is True
        assert stopped.intermediate_values, "the interrupted trial lost what it had reported"
        # Re-queued behind the recipes still waiting (the cell enqueued `budget` of them when created).
        requeued = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert len(requeued) == 1 and requeued[0].state == TrialState.WAITING
        assert requeued[0].number == budget + number and requeued[0].system_attrs["fixed_params"] == stopped.params
        assert len(trials) == budget + number + 1
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert spent(trials)["n_trials"] == 0  # interruptions are not spent

    interrupt(signal.SIGINT, 0)  # the first recipe
    interrupt(signal.SIGTERM, 1)  # the second recipe, the next waiting trial, interrupted in turn

    # The same command again (in-process: the same config through the same tune_cell, minus the
    # 15 s of imports a third process would cost).
    overrides = [a for a in args if not a.startswith("hydra.")]
    with initialize_config_dir(config_dir=harness.cli.CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="tune", overrides=overrides)
    tune_cell(config.load(CellConfig, cfg), tmp_path / "run")

    study = load(tmp_path)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.user_attrs.get("recipe_name") for t in trials[:2]] == ["adamw", "sgd"]
    assert [t.user_attrs["retry_of"] for t in trials[2:]] == [0, 1]
    assert [t.params for t in trials[2:]] == [t.params for t in trials[:2]]  # the interrupted parameters ran
    assert spent(trials)["n_trials"] == budget
    assert len(study.user_attrs["final"]) == 1


def _descendants(pid: int) -> list[int]:
    """Every process below pid, read from /proc (children before grandchildren)."""
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop(0)
        for child in Path("/proc").glob("[0-9]*"):
            try:
                fields = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                out.append(int(child.name))
                frontier.append(int(child.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_usr2_to_a_running_job_requeues_it_and_its_trial(tmp_path):
    """SLURM's time-limit warning, for real: USR2 delivered to the job process of a running
    `harness-tune -m hydra/launcher=submitit_local` (submitit handles USR2 as on SLURM, and its
    local executor restarts a job that asks to be requeued, as SLURM would). The running trial is
    stored as interrupted, the job is requeued, and its second life re-runs that trial's parameters
    first and finishes the cell."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["-m", "hydra/launcher=submitit_local", *tiny_overrides(tmp_path), "~search_space.params.steps",
            "train.steps=2000", "train.val_every=25", "tune.n_trials=1", "study.seeds=1",
            f"hydra.sweep.dir={tmp_path}/sweep"]
    db, log = tmp_path / "tune.db", tmp_path / "usr2.log"
    proc = _start(tmp_path, args, log, _env())
    try:
        _wait_for(lambda: any(n == 0 and s == "RUNNING" and k > 0 for n, s, k in sqlite_trials(db)),
                  "trial 0 to run", [proc], logs=[log])
        (job,) = [p for p in _descendants(proc.pid) if "submitit.core._submit" in _cmdline(p)]
        os.kill(job, signal.SIGUSR2)
        code = proc.wait(300)
    finally:
        _stop_all([proc])
    output = log.read_text()
    assert code == 0, output[-3000:]
    job_logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.*"))
    assert "Caught signal SIGUSR2" in job_logs and "Requeued job" in job_logs, job_logs[-3000:]

    study = load(tmp_path)
    first, rerun = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    assert first.intermediate_values and max(first.intermediate_values) < 2000  # stopped mid-trial
    assert rerun.user_attrs["retry_of"] == 0 and rerun.params == first.params and rerun.state == TrialState.COMPLETE
    assert spent(study.trials)["n_trials"] == 1
    assert len(study.user_attrs["final"]) == 1


# ------------------------------------------------------------------------------------- chaos

BUDGET = 5
CHAOS = ["~search_space.params.steps", "train.steps=10", "study.seeds=1", f"tune.n_trials={BUDGET}",
         "storage.heartbeat_interval=1", "storage.grace_period=60"]
# A live worker beats every second, however busy the machine: it has 60 s of grace. The killed
# worker's trial is made stale by ageing its heartbeat (_age_heartbeat), not by waiting.
LONG = "train.steps=1000000"  # the victim's trials never end on their own


def _check_cells(storage, names: list[str], killed_cell: str, killed: FrozenTrial,
                 completed_before: dict[str, dict[int, tuple]]) -> None:
    for name in names:
        trials = _trials(storage, name)
        states = [t.state for t in trials]
        assert all(s in FINISHED for s in states), f"{name}: trials left {[s.name for s in states]}"
        # The killed attempt is replaced by its retry: one trial more than the budget, not counted.
        extra = 1 if name == killed_cell else 0
        assert len(trials) == BUDGET + extra and spent(trials)["n_trials"] == BUDGET, \
            f"{name}: {len(trials)} trials for a budget of {BUDGET}"
        for number, before in completed_before.get(name, {}).items():
            t = trials[number]
            assert (t.state, t.value, t.params) == before, f"{name}: completed trial {number} changed"
        failed = [t for t in trials if t.state == TrialState.FAIL]
        if name != killed_cell:
            assert not failed, [t.user_attrs.get("fail_reason") for t in failed]
        else:
            assert [t.number for t in failed] == [killed.number], [t.user_attrs.get("fail_reason") for t in failed]
            retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
            assert len(retries) == 1, "the killed trial was not retried exactly once"
            assert retries[0].params == killed.params and retries[0].state == TrialState.COMPLETE
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.user_attrs["final"]) == 1


def _age_heartbeat(storage, trial: FrozenTrial, hours: int = 1) -> None:
    """Move one trial's heartbeat an hour into the past, on SQLite or PostgreSQL alike."""
    import datetime

    from sqlalchemy import text

    from harness.store.storage import rdb_of

    with rdb_of(storage).engine.begin() as con:
        beat = con.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"), {"t": trial._trial_id}).scalar()
        assert beat is not None, "the killed trial never beat"
        if isinstance(beat, str):
            beat = datetime.datetime.fromisoformat(beat)
        con.execute(text("UPDATE trial_heartbeats SET heartbeat = :b WHERE trial_id = :t"),
                    {"b": beat - datetime.timedelta(hours=hours), "t": trial._trial_id})


def _snapshot(storage, names: list[str]) -> dict[str, dict[int, tuple]]:
    return {name: {t.number: (t.state, t.value, t.params) for t in _trials(storage, name)
                   if t.state == TrialState.COMPLETE} for name in names}


@pytest.mark.slow
def test_chaos_sqlite_two_workers_one_killed(tmp_path):
    """Default storage. The victim tunes cell A; a grid worker (`-m data.n_train=20,10`) tunes cell
    B, then A. The victim is killed mid-trial while the grid worker is busy in B; that worker then
    fails the dead trial in A, runs its retry, and finishes both cells.

    Ordering, not luck: the victim is mid-trial before the grid worker starts; had the grid worker
    reached A's end before the dead trial went stale, it would wait for it (tune_cell's
    wait_for_peers) rather than leave it RUNNING."""
    study = f"chaos-{uuid.uuid4().hex[:6]}"
    url = f"sqlite:///{tmp_path}/tune.db"
    storage = open_storage(url, heartbeat_interval=None)  # the schema exists before the workers race for it
    common = [*tiny_overrides(tmp_path, n_train=None), *CHAOS, f"study.name={study}"]
    a, b = f"{study}/n000010/scratch/t0", f"{study}/n000020/scratch/t0"
    logs = [tmp_path / "victim.log", tmp_path / "grid.log"]
    procs = []
    try:
        procs.append(_start(tmp_path, [*common, "data.n_train=10", LONG, f"hydra.run.dir={tmp_path}/victim"], logs[0], _env()))
        victim = procs[0]
        _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in _trials(storage, a)),
                  "the victim mid-trial", procs, logs=logs)
        procs.append(_start(tmp_path, ["-m", *common, "train.steps=40", "data.n_train=20,10",
                                       f"hydra.sweep.dir={tmp_path}/grid"], logs[1], _env()))
        _wait_for(lambda: any(t.state in FINISHED for t in _trials(storage, b)), "the grid worker busy in B",
                  procs, logs=logs)
        completed = _snapshot(storage, [a, b])
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        (killed,) = [t for t in _trials(storage, a) if t.state == TrialState.RUNNING]
        _age_heartbeat(storage, killed)
        code = procs[1].wait(360)
    finally:
        _stop_all(procs)
    assert code == 0, logs[1].read_text()[-3000:]
    _check_cells(storage, [a, b], a, killed, completed)


@pytest.mark.slow
def test_chaos_postgres_four_workers_one_killed(tmp_path):
    """PostgreSQL through storage=postgres (the URL in HARNESS_STORAGE_URL). Cell A: the victim,
    and a worker that starts as the victim is killed; cell B: two workers, busy at the time."""
    url = postgres_url()
    study = f"chaos-{uuid.uuid4().hex[:8]}"
    storage = open_storage(url, heartbeat_interval=None)
    env = _env(HARNESS_STORAGE_URL=url)
    common = [*[o for o in tiny_overrides(tmp_path, n_train=None) if not o.startswith("storage.url=")],
              "storage=postgres", *CHAOS, f"study.name={study}"]
    a, b = f"{study}/n000010/scratch/t0", f"{study}/n000020/scratch/t0"
    names = ["victim", "b1", "b2", "a1"]
    logs = [tmp_path / f"{n}.log" for n in names]
    procs = []
    try:
        procs.append(_start(tmp_path, [*common, "data.n_train=10", LONG, f"hydra.run.dir={tmp_path}/victim"], logs[0], env))
        for i in (1, 2):
            procs.append(_start(tmp_path, [*common, "data.n_train=20", f"hydra.run.dir={tmp_path}/b{i}"], logs[i], env))
        victim = procs[0]
        _wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values for t in _trials(storage, a))
                  and any(t.state in FINISHED for t in _trials(storage, b)), "the victim mid-trial, cell B busy",
                  procs, logs=logs)
        # This worker logs to W&B (offline): its run configs must not hold the storage URL either.
        procs.append(_start(tmp_path, [*common, "data.n_train=10", f"hydra.run.dir={tmp_path}/a1", "logger=wandb",
                                       "logger.mode=offline", f"logger.dir={tmp_path}/wandb"], logs[3], env))
        completed = _snapshot(storage, [a, b])
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        (killed,) = [t for t in _trials(storage, a) if t.state == TrialState.RUNNING]
        _age_heartbeat(storage, killed)
        codes = [p.wait(360) for p in procs[1:]]
        _check_cells(storage, [a, b], a, killed, completed)
    finally:
        _stop_all(procs)
        for name in (a, b):
            try:
                optuna.delete_study(study_name=name, storage=storage)
            except KeyError:
                pass
    outputs = {n: log.read_text() for n, log in zip(names, logs)}
    assert codes == [0, 0, 0], {n: o[-2000:] for n, o in outputs.items()}
    # The URL came from the environment: no output, run folder, Hydra record or W&B run holds it.
    secrets = secrets_of(url)
    assert not {n: text_holding(o, secrets) for n, o in outputs.items() if text_holding(o, secrets)}
    from test_tuning_wandb import _runs  # W&B's own records, parsed

    wandb_runs = _runs(tmp_path / "wandb")
    assert wandb_runs and all(r["config"]["data"]["n_train"] == 10 and "storage" not in r["config"] for r in wandb_runs), \
        "W&B logged no run config, or the storage section"
    assert (tmp_path / "a1" / ".hydra" / "config.yaml").read_text().count("env:HARNESS_STORAGE_URL") == 1
    assert not files_holding(tmp_path, secrets)

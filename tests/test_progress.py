"""The cell's status line: rewritten in place on a terminal, one plain line per update in a log."""

from __future__ import annotations

import io
import sys

import optuna
import pytest

from harness.tuning.budget import Budget
from harness.tuning.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _study_with_two_trials() -> optuna.Study:
    study = optuna.create_study(study_name="toy/scratch/n10", direction="maximize")
    for value in (0.5, 0.75):
        trial = study.ask()
        study.tell(trial, value)
    return study


def _run(progress: Progress) -> None:
    progress.update()
    progress.waiting()
    progress.waiting()  # said once per wait
    progress.close()


def test_a_log_gets_plain_lines_without_carriage_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    study = _study_with_two_trials()
    _run(Progress(study, Budget(n_trials=4, max_flops=None, max_wall_s=None), enabled=True))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 2, lines
    assert lines[0].startswith("[toy/scratch/n10] trials 2/4 best 0.7500 pruned 0 failed 0 elapsed ")
    assert lines[1].startswith("[toy/scratch/n10] budget spent; waiting for 0 trial(s) of other workers")


def test_a_terminal_gets_one_line_rewritten_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    _run(Progress(_study_with_two_trials(), Budget(n_trials=4, max_flops=None, max_wall_s=None), enabled=True))
    out = screen.getvalue()
    assert "\r[toy/scratch/n10] trials 2/4 best 0.7500" in out and "\r[toy/scratch/n10] budget spent" in out
    assert out.endswith("\n") and out.count("\n") == 1, repr(out)  # the line stays, then one newline


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_disabled_progress_says_nothing(monkeypatch: pytest.MonkeyPatch, stream: type[io.StringIO]) -> None:
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    _run(Progress(_study_with_two_trials(), Budget(n_trials=4, max_flops=None, max_wall_s=None), enabled=False))
    assert err.getvalue() == ""


# ------------------------------------------------------------------ the study's one clock

class _Stream:
    def __init__(self, tty: bool):
        self.text, self.tty = "", tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


def test_the_study_clock_runs_through_every_phase_with_one_elapsed_and_an_eta(monkeypatch):
    """Elapsed counts from the study's start whatever the phase; the ETA is the trainings left at
    this session's rate, and grows when a phase schedules more; a log gets plain lines."""
    from harness.study import clock as clock_module
    from harness.study.clock import StudyClock

    now = [100.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    stream = _Stream(tty=False)
    clock = StudyClock("digits", stream)
    clock.add(100)
    clock.status("tuning", "tuning runs done 0/10", 0)
    now[0] += 60
    line = clock.status("tuning", "tuning runs done 5/10", 50)
    assert "trainings 50/100" in line and "elapsed 1m00s" in line and "eta 1m00s" in line
    clock.add(20)  # the top-up schedules 20 more re-runs
    now[0] += 60
    line = clock.status("top-up", "re-runs 30", 100)
    assert line.startswith("[digits] top-up:") and "elapsed 2m00s" in line and "eta 24s" in line  # 20 left at 50/min
    clock.say("refinement done")
    assert stream.text.count("\n") == 4 and "\r" not in stream.text and "refinement done [elapsed 2m00s]" in stream.text


def test_on_a_terminal_the_status_line_is_rewritten_in_place():
    from harness.study.clock import StudyClock

    stream = _Stream(tty=True)
    clock = StudyClock("s", stream)
    clock.add(10)
    clock.status("tuning", "a", 1)
    clock.status("tuning", "b", 2)
    clock.say("kept")
    clock.close()
    assert stream.text.count("\r\x1b[2K") == 3 and stream.text.count("\n") == 1 and stream.text.endswith("kept [elapsed 0s]\n")

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

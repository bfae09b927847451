"""One clock for a whole study: elapsed time since harness-study started and an ETA through every
phase (tuning, re-runs, top-up, refinement). Work is counted in trainings (a trial or a re-run):
each phase adds what it schedules to the plan, the storage says how many are done, and the ETA is
the trainings left at this session's rate. On a terminal the status line is rewritten in place; in
a log every update is a plain line."""

from __future__ import annotations

import sys
import time


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class StudyClock:
    def __init__(self, name: str, stream=None):
        self.name = name
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.planned = 0
        self.done_at_start: int | None = None
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._transient = False
        self.wandb = None  # the study's open W&B run (harness.study.wandb_study.StudyRun), logger=wandb only

    def add(self, trainings: int) -> None:
        """Work a phase schedules (trials at their budget, re-runs), counted in trainings."""
        self.planned += max(0, int(trainings))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self, done: int) -> float | None:
        """Seconds left at this session's rate (a resumed study's earlier work is not in the rate)."""
        if self.done_at_start is None:
            self.done_at_start = done
        made = done - self.done_at_start
        left = max(0, self.planned - done)
        if left == 0:
            return 0.0
        return self.elapsed() * left / made if made > 0 else None

    def status(self, phase: str, detail: str, done: int) -> str:
        self.planned = max(self.planned, done)
        line = (f"[{self.name}] {phase}: {detail}, trainings {done}/{self.planned}, "
                f"elapsed {clock_text(self.elapsed())}, eta {clock_text(self.eta(done))}")
        self._write(line, transient=True)
        return line

    def say(self, text: str) -> None:
        """A line that stays (what a phase decided), stamped with the study's elapsed time."""
        self._write(f"[{self.name}] {text} [elapsed {clock_text(self.elapsed())}]", transient=False)

    def _write(self, line: str, transient: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("" if transient else "\n"))
            self._transient = transient
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._transient:
            self.stream.write("\n")
            self.stream.flush()
            self._transient = False

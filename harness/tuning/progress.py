"""The status line of one cell's tuning on stderr: on a terminal one line rewritten in place (tqdm),
in a log one plain line per update (tqdm always writes carriage returns, so a log gets print)."""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from harness.store.records import spent
from harness.tuning.budget import Budget


class Progress:
    """One status line per cell: trials done of budget, best so far, pruned/failed, elapsed, ETA."""

    def __init__(self, study: optuna.Study, budget: Budget, enabled: bool):
        self.study, self.budget, self.enabled = study, budget, enabled
        self.started = time.perf_counter()
        at_start = spent([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
        self.done_at_start, self.flops_at_start = at_start["n_trials"], at_start["flops"]
        self.tty = sys.stderr.isatty()
        self.waited_for: int | None = None
        self._line = tqdm(file=sys.stderr, bar_format="{desc}", dynamic_ncols=True, leave=True,
                          disable=not (enabled and self.tty))

    def _done(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        return spent([t for t in trials if t.state.is_finished()])["n_trials"]

    def update(self) -> None:
        self.waited_for = None
        if not self.enabled:
            return
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        done = self._done(trials)
        complete = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        elapsed = time.perf_counter() - self.started
        spent, eta = self._spent(trials, done, elapsed)
        line = (f"[{self.study.study_name}] {spent} best {max(complete) if complete else float('nan'):.4f} "
                f"pruned {states.count(TrialState.PRUNED)} failed {states.count(TrialState.FAIL)} "
                f"elapsed {elapsed:.0f}s eta {eta}")
        self._say(line)

    def _spent(self, trials: list[optuna.trial.FrozenTrial], done: int, elapsed: float) -> tuple[str, str]:
        """Trials done of the budget (and FLOPs spent of it, for tune.budget=flops) and the ETA."""
        if self.budget.kind == "flops" and self.budget.max_flops:
            flops = spent([t for t in trials if t.state.is_finished()])["flops"]
            left, mine = self.budget.max_flops - flops, flops - self.flops_at_start
            eta = f"{left * elapsed / mine:.0f}s" if left > 0 and mine > 0 else "-"
            return f"trials {done} flops {flops:.3g}/{self.budget.max_flops:.3g}", eta
        total = self.budget.n_trials
        mine = max(1, done - self.done_at_start)
        eta = f"{(total - done) * elapsed / mine:.0f}s" if total and done < total else "-"
        return f"trials {done}/{total or '?'}", eta

    def waiting(self) -> None:
        """Said once per wait: why a worker whose cell is spent has not exited yet."""
        running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if self.enabled and running != self.waited_for:
            line = (f"[{self.study.study_name}] budget spent; waiting for {running} trial(s) of other workers to end "
                    "(a dead worker's trial is re-run here)")
            self._say(line)
        self.waited_for = running

    def _say(self, line: str) -> None:
        """One line that a terminal rewrites in place; a log gets one line each."""
        if self.tty:
            self._line.set_description_str(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """A terminal's line stays, followed by a newline."""
        self._line.close()

"""One error type for input a person can fix, and the shell around entry points that turns it into
one line and exit code 2 (the full traceback only with HYDRA_FULL_ERROR=1)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """Bad input: the message names what is wrong and how to fix it, on one line."""


def exits_cleanly(task: F) -> F:
    """Wrap a Hydra task so that bad input ends the process with one line and exit code 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted: finished results are stored (a running trial as interrupted); run the same command again to resume", file=sys.stderr, flush=True)
            sys.exit(EXIT_INTERRUPTED)
        except ConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = " ".join(str(err).split())
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


def _hydra_one_line(err: BaseException) -> str:
    """Hydra's own message on one line: a list of options joined by commas, the search path dropped."""
    text = str(err).split("Config search path")[0]
    if isinstance(err.__cause__, Exception) and str(err.__cause__).strip():
        text += "\n(" + str(err.__cause__).strip().splitlines()[0] + ")"
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("\t") and out and out[-1].startswith("Available options"):
            out[-1] += (" " if out[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            out.append(line.strip())
    return " ".join(out)


def hydra_app(app: Callable[[], Any]) -> Callable[[], Any]:
    """A console script around a @hydra.main function, so that bad input Hydra refuses before the app
    runs (an unknown key without +, a malformed override, a missing config option) also ends with one
    line and exit code 2 instead of Hydra's several lines and exit code 1. Hydra reports those errors
    through hydra._internal.utils.run_and_report; this wraps it for the length of the call only."""

    @functools.wraps(app)
    def main() -> Any:
        from hydra._internal import utils as hydra_utils
        from hydra.errors import CompactHydraException, OverrideParseException

        report = hydra_utils.run_and_report

        def run_and_report(func: Callable[[], Any]) -> Any:
            def guarded() -> Any:
                try:
                    return func()
                except CompactHydraException as err:
                    if os.environ.get("HYDRA_FULL_ERROR") == "1":
                        raise
                    fix = ("fix that override (quote a value that holds brackets, commas or '=')"
                           if isinstance(err, OverrideParseException) else "--help lists the config groups and keys")
                    print(f"error: {_hydra_one_line(err)}: {fix}", file=sys.stderr, flush=True)
                    sys.exit(EXIT_BAD_INPUT)
            return report(guarded)

        from hydra._internal import hydra as hydra_core

        hydra_utils.run_and_report = hydra_core.run_and_report = run_and_report
        try:
            return app()
        finally:
            hydra_utils.run_and_report = hydra_core.run_and_report = report

    return main

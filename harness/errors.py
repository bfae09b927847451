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

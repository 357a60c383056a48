"""Keep TensorFlow's C++ start-up chatter, and Prefect's and MLflow's own lines, off the user's terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def stderr_to(path: str | os.PathLike[str]) -> Iterator[None]:
    """Point file descriptor 2 elsewhere: C++ logging bypasses sys.stderr, so only the descriptor catches it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Import TensorFlow once, silencing what its C++ side prints at import time."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with stderr_to(os.devnull):
        import tensorflow

    return tensorflow


# Prefect's console handler (logging.yml's handlers.console), which prints what reaches the root logger; its
# API handler, on prefect.flow_runs and prefect.task_runs, is what ships a flow run's log to the server.
PREFECT_CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"


def quiet_frameworks(verbose: bool = False) -> None:
    """Call before importing Prefect or MLflow: their settings are read at import.

    Only Prefect's console handler is silenced: the run loggers keep Prefect's level (INFO), so every stage's
    line and the verdict still reach the flow run's log in Prefect's UI, whether the run was started from this
    command, the UI or a schedule (a served flow run's process inherits these settings). PREFECT_LOGGING_LEVEL
    would silence those too: it is the level of the run loggers themselves."""
    if not verbose:
        # A failed stage is reported by modelgate itself, in one line; Prefect would print its traceback too.
        os.environ.setdefault(PREFECT_CONSOLE_LEVEL, "CRITICAL")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
        _own_warnings_to_stderr()
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # A download's progress bar redraws one line with carriage returns: a log keeps every frame of it.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The ephemeral server's telemetry heartbeat reaches for the network and races its own SQLite writes.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _own_warnings_to_stderr() -> None:
    """modelgate's own warnings (a report that could not be uploaded, a spare process gone) reached the terminal
    through Prefect's console handler, now silenced: they get a plain line of their own."""
    own = logging.getLogger("modelgate")
    if any(getattr(handler, "modelgate_warnings", False) for handler in own.handlers):
        return
    handler = _Stderr()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.modelgate_warnings = True
    own.addHandler(handler)
    own.propagate = False


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line comes (a test's capture, or the terminal)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

"""Keep TensorFlow's C++ start-up chatter off the user's terminal."""

from __future__ import annotations

import contextlib
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


def quiet_frameworks(verbose: bool = False) -> None:
    """Call before importing Prefect or MLflow: their settings are read at import."""
    if not verbose:
        # A failed stage is reported by modelgate itself, in one line; Prefect would print its traceback too.
        for variable in ("PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_LOGGING_LEVEL"):
            os.environ.setdefault(variable, "CRITICAL")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # A download's progress bar redraws one line with carriage returns: a log keeps every frame of it.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The ephemeral server's telemetry heartbeat reaches for the network and races its own SQLite writes.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

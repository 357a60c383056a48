"""Run model code in a child process, bounded in time and memory.

A SavedModel is a program: it can hang, crash the interpreter or eat all memory. Prefect's task timeouts
cannot interrupt blocking code in a thread, so every stage that executes a model runs its work here, and
whatever happens to the child, the parent gets a clear ModelRunError and carries on.

Importing TensorFlow and loading a model cost seconds, so the stages of one validation that only read
the model share one child (`shared_model_process`); jobs that change TensorFlow's global state (tf2onnx)
or need their own device visibility get a fresh one. A job that times out or is killed takes the shared
child with it, and the next job starts a new one.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from modelgate.errors import ModelRunError

POLL_S = 0.05
SHARES_PROCESS = "__modelgate_shares_model_process__"


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_limit_mb: int | None = None


@dataclass(frozen=True)
class IsolatedRun:
    value: Any
    wall_s: float
    peak_rss_mb: float


def shares_model_process(job: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a job that only reads the model, so it may run in the validation's shared child."""
    setattr(job, SHARES_PROCESS, True)
    return job


def _redirect_output(log_path: str | None) -> None:
    if log_path:
        # Whatever the model or TensorFlow prints goes to the stage's log, not to the user's terminal.
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def _worker_main(conn, environment: dict[str, str]) -> None:
    # Before anything imports a framework: TensorFlow reads thread counts and device visibility once.
    os.environ.update(environment)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        target, args, log_path = request
        _redirect_output(log_path)
        try:
            reply = ("ok", target(*args))
        except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as a message
            details = traceback.format_exc()
            print(details, file=sys.stderr, flush=True)
            reply = ("error", f"{type(exc).__name__}: {exc}", details)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(reply)


def _rss_mb(process: psutil.Process) -> float:
    try:
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            total += child.memory_info().rss
    except psutil.Error:
        return 0.0
    return total / 2**20


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class ModelProcess:
    """One spawned interpreter that runs jobs sent to it, watched for time and memory while it does."""

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        self._environment = dict(environment or {})
        self._child = None
        self._conn = None
        self._watched: psutil.Process | None = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._child = context.Process(target=_worker_main, args=(child_conn, self._environment), daemon=True)
        self._child.start()
        child_conn.close()
        self._watched = psutil.Process(self._child.pid)

    def close(self) -> None:
        if self._child is None:
            return
        if self._child.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
            self._child.join(5)
        if self._child.is_alive():
            self._child.kill()
        self._child.join(10)
        self._conn.close()
        self._child = self._conn = self._watched = None

    def run(self, target: Callable[..., Any], args: tuple, limits: Limits, label: str,
            log_path: str | Path | None) -> IsolatedRun:
        if self._child is None or not self._child.is_alive():
            self.close()
            self._start()
        started = time.monotonic()
        self._conn.send((target, args, str(log_path) if log_path else None))
        peak = 0.0
        try:
            while True:
                if self._conn.poll(POLL_S):
                    reply = self._conn.recv()
                    break
                peak = max(peak, _rss_mb(self._watched))
                if not self._child.is_alive():
                    raise ModelRunError(f"{label}: model process {_describe_exit(self._child.exitcode)}")
                if time.monotonic() - started > limits.timeout_s:
                    raise ModelRunError(f"{label}: timed out after {limits.timeout_s:g} s")
                if limits.memory_limit_mb is not None and peak > limits.memory_limit_mb:
                    raise ModelRunError(
                        f"{label}: killed at {peak:.0f} MiB resident memory (limit {limits.memory_limit_mb} MiB)"
                    )
        except (ModelRunError, EOFError) as exc:
            self._child.join(1)
            message = exc if isinstance(exc, ModelRunError) else ModelRunError(
                f"{label}: model process {_describe_exit(self._child.exitcode)}"
            )
            self.close()  # a child that broke its bounds is not trusted with the next job
            raise message from None
        peak = max(peak, _rss_mb(self._watched))
        if reply[0] == "error":
            raise ModelRunError(f"{label}: {reply[1]}")
        return IsolatedRun(value=reply[1], wall_s=time.monotonic() - started, peak_rss_mb=peak)


_shared: contextvars.ContextVar[ModelProcess | None] = contextvars.ContextVar("modelgate_shared", default=None)


@contextlib.contextmanager
def shared_model_process(environment: dict[str, str] | None = None) -> Iterator[ModelProcess]:
    """Within this block, jobs marked with shares_model_process run in one child, started on first use
    with these environment variables."""
    process = ModelProcess(environment)
    token = _shared.set(process)
    try:
        yield process
    finally:
        _shared.reset(token)
        process.close()


def run_isolated(
    target: Callable[..., Any],
    *args: Any,
    limits: Limits,
    label: str,
    log_path: str | Path | None = None,
    share: bool | None = None,
) -> IsolatedRun:
    """Call target(*args) in a child interpreter; target must be importable by name, its value must pickle.

    It runs in the shared model process, if one is open, when `share` is True, or when `share` is None and
    the target is marked with shares_model_process.
    """
    shared = _shared.get()
    if share is None:
        share = getattr(target, SHARES_PROCESS, False)
    if shared is not None and share:
        return shared.run(target, args, limits, label, log_path)
    process = ModelProcess()
    try:
        return process.run(target, args, limits, label, log_path)
    finally:
        process.close()


def limits_of(request) -> Limits:
    """The bounds a validation request sets on each stage that runs model code."""
    return Limits(timeout_s=request.model_timeout_s, memory_limit_mb=request.memory_limit_mb)

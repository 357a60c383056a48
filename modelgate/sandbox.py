"""Run model code in a child process, bounded in time and memory.

A SavedModel is a program: it can hang, crash the interpreter or eat all memory. Prefect's task timeouts
cannot interrupt blocking code in a thread, so every stage that executes a model runs its work here, and
whatever happens to the child, the parent gets a clear ModelRunError and carries on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from modelgate.errors import ModelRunError

POLL_S = 0.05


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_limit_mb: int | None = None


@dataclass(frozen=True)
class IsolatedRun:
    value: Any
    wall_s: float
    peak_rss_mb: float


def _child_main(conn, log_path: str | None, target: Callable[..., Any], args: tuple) -> None:
    if log_path:
        # Whatever the model or TensorFlow prints goes to the stage's log, not to the user's terminal.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        result = ("ok", target(*args))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as a message
        details = traceback.format_exc()
        print(details, file=sys.stderr, flush=True)
        result = ("error", f"{type(exc).__name__}: {exc}", details)
    conn.send(result)
    conn.close()


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


def run_isolated(
    target: Callable[..., Any],
    *args: Any,
    limits: Limits,
    label: str,
    log_path: str | Path | None = None,
) -> IsolatedRun:
    """Call target(*args) in a fresh spawned interpreter; its return value must pickle."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(sender, str(log_path) if log_path else None, target, args), daemon=True
    )
    started = time.monotonic()
    child.start()
    sender.close()
    watched = psutil.Process(child.pid)
    peak = 0.0
    message = None
    try:
        while message is None:
            if receiver.poll(POLL_S):
                try:
                    message = receiver.recv()
                except EOFError:
                    child.join(5)
                    raise ModelRunError(f"{label}: model process {_describe_exit(child.exitcode)}") from None
                break
            peak = max(peak, _rss_mb(watched))
            elapsed = time.monotonic() - started
            if not child.is_alive():
                raise ModelRunError(f"{label}: model process {_describe_exit(child.exitcode)}")
            if elapsed > limits.timeout_s:
                raise ModelRunError(f"{label}: timed out after {limits.timeout_s:g} s")
            if limits.memory_limit_mb is not None and peak > limits.memory_limit_mb:
                raise ModelRunError(
                    f"{label}: killed at {peak:.0f} MiB resident memory (limit {limits.memory_limit_mb} MiB)"
                )
    finally:
        if message is not None:
            child.join(5)
        if child.is_alive():
            child.kill()
        child.join(10)
        receiver.close()
    wall_s = time.monotonic() - started
    if message[0] == "error":
        raise ModelRunError(f"{label}: {message[1]}")
    return IsolatedRun(value=message[1], wall_s=wall_s, peak_rss_mb=peak)


def limits_of(request) -> Limits:
    """The bounds a validation request sets on each stage that runs model code."""
    return Limits(timeout_s=request.model_timeout_s, memory_limit_mb=request.memory_limit_mb)

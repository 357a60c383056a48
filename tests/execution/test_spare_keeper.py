"""The spare keeper warms no spare up while a validation runs under it: a spare's imports would take the cores a
validation's conversions and measurements use (issue 22: a spare warmed up as a running validation's export-onnx
began, and the stage took three times as long)."""

import os
import time

import psutil

from modelgate.execution.sandbox import (
    Limits,
    SharedProcess,
    _tell_keeper_a_validation_runs,
    release_shared_process,
    run_isolated,
    shared_processes,
)
from modelgate.execution.spare_keeper import keep_spares

QUIET_S = 3  # how long the keeper is watched for a spare it should not start


def _warm_up() -> None:
    """A pool's warm-up: a spare of its spec is worth keeping."""


def _spares(keeper: int) -> set[int]:
    return {child.pid for child in psutil.Process(keeper).children()}


def _none_within(keeper: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert _spares(keeper) == set(), "a spare warmed up while a validation ran"
        time.sleep(0.1)


def _one_within(keeper: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while not (spares := _spares(keeper)):
        assert time.monotonic() < deadline, "the keeper started no spare once no validation ran"
        time.sleep(0.1)
    return spares.pop()


def test_a_spare_waits_until_no_validation_runs_under_the_keeper():
    spec = SharedProcess(warm_up=_warm_up)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        other = _tell_keeper_a_validation_runs()  # a second validation, in another flow run of the same worker
        assert other is not None
        with shared_processes({"a": spec}):
            run_isolated(os.getpid, limits=limits, label="pid", pool="a")
            release_shared_process("a")  # as TensorFlow's child closes when the targets' stages begin: its lease ends
            _none_within(keeper, QUIET_S)
        _none_within(keeper, QUIET_S)  # this validation is done; the other still runs
        other.close()
        spare = _one_within(keeper, 30)
        with shared_processes({"a": spec}):  # and the next validation of that spec adopts it
            assert run_isolated(os.getpid, limits=limits, label="pid", pool="a").value == spare

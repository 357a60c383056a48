"""The spare keeper warms no spare up while a validation runs under it: a spare's imports would take the cores a
validation's conversions and measurements use (issue 22: a spare warmed up as a running validation's export-onnx
began, and the stage took three times as long). Once one has warmed up, every later pool of its spec gets a copy
forked from it, and nothing imports again (issue 24)."""

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
from tests.execution.spares import is_copy_of_a_spare, new_spare, warm_spares

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


def _count_warm_up() -> None:
    with open(os.environ["WARM_UPS"], "a") as warm_ups:
        warm_ups.write(f"{os.getpid()}\n")


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
        spare = new_spare(keeper, set())
        with shared_processes({"a": spec}):  # and the next validation of that spec adopts a copy of it
            assert is_copy_of_a_spare(run_isolated(os.getpid, limits=limits, label="pid", pool="a").value, keeper)
        assert warm_spares(keeper) == {spare}


def test_every_later_pool_of_a_spec_gets_a_copy_of_one_warm_spare_that_warmed_up_once(tmp_path):
    warm_ups = tmp_path / "warm-ups"
    spec = SharedProcess(environment={"WARM_UPS": str(warm_ups)}, warm_up=_count_warm_up)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        with shared_processes({"a": spec}):  # no spare yet: the pool's own child warms up, and the keeper learns of it
            first = run_isolated(os.getpid, limits=limits, label="pid", pool="a").value
        spare = new_spare(keeper, set())
        copies = []
        for _ in range(3):
            with shared_processes({"a": spec}):
                copies.append(run_isolated(os.getpid, limits=limits, label="pid", pool="a").value)
                assert is_copy_of_a_spare(copies[-1], keeper)
                assert run_isolated(os.getenv, "WARM_UPS", limits=limits, label="env", pool="a").value == str(warm_ups)
        assert len(set(copies)) == 3 and not {first, spare} & set(copies)
        assert warm_ups.read_text().split() == [str(first), str(spare)]  # each copy started warm, importing nothing
        assert warm_spares(keeper) == {spare}


def test_a_spare_outside_the_sandbox_goes_to_its_pool_itself_never_copied():
    """Its warm-up may have opened connections (the logging child's tracking store) that copies must not share."""
    spec = SharedProcess(warm_up=_warm_up, sandboxed=False)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        with shared_processes({"a": spec}):
            run_isolated(os.getpid, limits=limits, label="pid", pool="a")
        spare = new_spare(keeper, set())
        with shared_processes({"a": spec}):
            assert run_isolated(os.getpid, limits=limits, label="pid", pool="a").value == spare


def test_a_copy_ends_with_its_keeper_as_its_spare_does():
    """A copy is no child of the keeper's multiprocessing, which ends the spares at exit."""
    spec = SharedProcess(warm_up=_warm_up)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        with shared_processes({"a": spec}):
            run_isolated(os.getpid, limits=limits, label="pid", pool="a")
        new_spare(keeper, set())
        with shared_processes({"a": spec}):
            copy = psutil.Process(run_isolated(os.getpid, limits=limits, label="pid", pool="a").value)
            assert is_copy_of_a_spare(copy.pid, keeper)
            psutil.Process(keeper).terminate()  # as a stopped `modelgate worker` ends it
            copy.wait(30)  # psutil.TimeoutExpired if it outlived the keeper

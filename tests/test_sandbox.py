import os
import signal
import time

import pytest

from modelgate.errors import ModelRunError
from modelgate.sandbox import Limits, run_isolated, shared_model_process, shares_model_process


def _double(x):
    return 2 * x


def _sleep_forever():
    time.sleep(3600)


def _crash():
    os.kill(os.getpid(), signal.SIGSEGV)


def _raise():
    raise ValueError("the model says no")


def _eat_memory():
    hoard = []
    while True:
        hoard.append(b"\x01" * (50 * 2**20))  # touched, so resident
        time.sleep(0.01)


def test_returns_the_value_and_measures_the_run():
    run = run_isolated(_double, 21, limits=Limits(timeout_s=60), label="double")
    assert run.value == 42
    assert run.wall_s > 0 and run.peak_rss_mb > 0


def test_a_hanging_model_is_stopped_at_its_time_limit():
    started = time.monotonic()
    with pytest.raises(ModelRunError, match="timed out after 2 s"):
        run_isolated(_sleep_forever, limits=Limits(timeout_s=2), label="hang")
    assert time.monotonic() - started < 30


def test_an_interpreter_crash_is_reported_with_its_signal():
    with pytest.raises(ModelRunError, match="killed by signal SIGSEGV"):
        run_isolated(_crash, limits=Limits(timeout_s=60), label="crash")


def test_an_exception_reaches_the_parent_as_one_line(tmp_path):
    log = tmp_path / "child.log"
    with pytest.raises(ModelRunError, match="ValueError: the model says no"):
        run_isolated(_raise, limits=Limits(timeout_s=60), label="raise", log_path=log)
    assert "Traceback" in log.read_text()


def test_a_model_eating_memory_is_killed_at_the_limit():
    with pytest.raises(ModelRunError, match=r"killed at \d+ MiB resident memory \(limit 400 MiB\)"):
        run_isolated(_eat_memory, limits=Limits(timeout_s=120, memory_limit_mb=400), label="memory")


@shares_model_process
def _pid():
    return os.getpid()


def test_jobs_that_share_a_process_reuse_it_until_one_breaks_its_bounds():
    with shared_model_process():
        first = run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value == first
        # A job that is not marked gets a fresh process of its own.
        assert run_isolated(os.getpid, limits=Limits(timeout_s=60), label="own").value != first
        with pytest.raises(ModelRunError, match="timed out"):
            run_isolated(_sleep_forever_shared, limits=Limits(timeout_s=1), label="hang")
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value != first
    assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value != first


@shares_model_process
def _sleep_forever_shared():
    time.sleep(3600)

import os
import signal
import time

import psutil
import pytest

from modelgate.errors import ModelgateError, ModelRunError, NotASavedModel
from modelgate.execution.sandbox import (
    Limits,
    SharedProcess,
    release_shared_process,
    run_isolated,
    shared_processes,
    shares_process,
    start_deferred_processes,
    start_shared_process,
)
from modelgate.execution.spare_keeper import keep_spares
from tests.execution.spares import is_copy_of_a_spare, new_spare


def _double(x):
    return 2 * x


def _sleep_forever():
    time.sleep(3600)


def _crash():
    os.kill(os.getpid(), signal.SIGSEGV)


def _raise():
    raise ValueError("the model says no")


def _not_a_saved_model():
    raise NotASavedModel("/nowhere: no such directory")


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


def test_an_error_of_modelgate_s_own_keeps_its_class_and_message_where_the_caller_asks():
    with pytest.raises(ModelRunError, match="read: NotASavedModel: /nowhere: no such directory"):
        run_isolated(_not_a_saved_model, limits=Limits(timeout_s=60), label="read")
    with pytest.raises(NotASavedModel, match="^/nowhere: no such directory$"):
        run_isolated(_not_a_saved_model, limits=Limits(timeout_s=60), label="read", raises=(ModelgateError,))
    with pytest.raises(ModelRunError, match="raise: ValueError: the model says no"):
        run_isolated(_raise, limits=Limits(timeout_s=60), label="raise", raises=(ModelgateError,))


def test_a_model_eating_memory_is_killed_at_the_limit():
    with pytest.raises(ModelRunError, match=r"killed at \d+ MiB resident memory \(limit 400 MiB\)"):
        run_isolated(_eat_memory, limits=Limits(timeout_s=120, memory_limit_mb=400), label="memory")


@shares_process("a")
def _pid():
    return os.getpid()


@shares_process("b")
def _pid_in_b():
    return os.getpid()


@shares_process("a")
def _sleep_forever_shared():
    time.sleep(3600)


def _mark_warm():
    os.environ["WARMED_UP_BEFORE_ANY_JOB"] = "yes"


@shares_process("a")
def _warm_mark_and_variable():
    return os.environ.get("WARMED_UP_BEFORE_ANY_JOB"), os.environ.get("POOL_VARIABLE")


def test_jobs_that_share_a_process_reuse_it_until_one_breaks_its_bounds():
    with shared_processes({"a": SharedProcess(), "b": SharedProcess()}):
        first = run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value == first
        # Another pool, an unmarked job, and a marked job told not to share each get a process of their own.
        in_b = run_isolated(_pid_in_b, limits=Limits(timeout_s=60), label="b").value
        assert in_b != first
        assert run_isolated(_pid_in_b, limits=Limits(timeout_s=60), label="b").value == in_b
        assert run_isolated(os.getpid, limits=Limits(timeout_s=60), label="own").value != first
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="apart", share=False).value != first
        with pytest.raises(ModelRunError, match="timed out"):
            run_isolated(_sleep_forever_shared, limits=Limits(timeout_s=1), label="hang")
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value != first
    assert run_isolated(_pid, limits=Limits(timeout_s=60), label="pid").value != first


def test_a_pool_with_a_warm_up_starts_at_once_and_runs_it_before_the_first_job():
    pool = {"a": SharedProcess(environment={"POOL_VARIABLE": "set"}, warm_up=_mark_warm)}
    with shared_processes(pool) as processes:
        assert processes["a"].pid is not None  # started before any job was sent
        assert run_isolated(_warm_mark_and_variable, limits=Limits(timeout_s=60), label="warm").value == ("yes", "set")


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_deferred_pool_starts_when_asked_and_a_released_one_closes_until_its_next_job():
    pools = {"a": SharedProcess(warm_up=_mark_warm), "b": SharedProcess(warm_up=_mark_warm, deferred=True)}
    with shared_processes(pools) as processes:
        first = processes["a"].pid
        assert first is not None and processes["b"].pid is None
        start_deferred_processes()
        assert processes["b"].pid is not None
        release_shared_process("a")
        assert processes["a"].pid is None and _gone(first)
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="again").value not in (first, None)


def test_a_pool_that_serves_one_more_job_after_release_closes_after_it_and_later_jobs_get_children_of_their_own():
    limits = Limits(timeout_s=60)
    with shared_processes({"a": SharedProcess(warm_up=_mark_warm, serves_one_more_job=True)}) as processes:
        kept = run_isolated(_pid, limits=limits, label="model stage").value
        release_shared_process("a")
        assert processes["a"].pid == kept  # still there: its last job comes
        assert run_isolated(_pid, limits=limits, label="last job").value == kept
        assert processes["a"].pid is None and _gone(kept)
        later = run_isolated(_pid, limits=limits, label="later").value
        assert later not in (kept, None) and processes["a"].pid is None and _gone(later)


def test_a_released_pool_whose_last_job_needs_its_own_environment_closes_before_that_job_runs():
    limits = Limits(timeout_s=60)
    with shared_processes({"a": SharedProcess(warm_up=_mark_warm, serves_one_more_job=True)}) as processes:
        kept = run_isolated(_pid, limits=limits, label="model stage").value
        release_shared_process("a")
        value = run_isolated(_environment, "WARMED_UP_BEFORE_ANY_JOB", "JOB_VARIABLE", limits=limits, label="own",
                             pool="a", environment={"JOB_VARIABLE": "on"})
        assert value.value == ["yes", "on"]
        assert processes["a"].pid is None and _gone(kept)


def test_an_on_demand_pool_starts_only_when_asked():
    with shared_processes({"a": SharedProcess(warm_up=_mark_warm, on_demand=True)}) as processes:
        start_deferred_processes()
        assert processes["a"].pid is None
        start_shared_process("a")
        started = processes["a"].pid
        assert started is not None
        assert run_isolated(_pid, limits=Limits(timeout_s=60), label="job").value == started


def _environment(*names):
    return [os.environ.get(name) for name in names]


def test_a_job_that_needs_its_own_environment_gets_a_child_of_its_pools_kind_and_the_spare_closes():
    pools = {"a": SharedProcess(environment={"POOL_VARIABLE": "set"}, warm_up=_mark_warm, single_use=True)}
    with shared_processes(pools) as processes:
        spare = processes["a"].pid
        value = run_isolated(_environment, "POOL_VARIABLE", "WARMED_UP_BEFORE_ANY_JOB", "JOB_VARIABLE",
                             limits=Limits(timeout_s=60), label="own", pool="a", environment={"JOB_VARIABLE": "on"})
        assert value.value == ["set", "yes", "on"]
        assert processes["a"].pid is None and _gone(spare)


def test_closing_a_pool_still_warming_up_kills_it_without_waiting():
    with shared_processes({"a": SharedProcess(warm_up=_sleep_forever)}) as processes:
        pid = processes["a"].pid
        started = time.monotonic()
    # A polite close would wait 5 s for a child that never reads its pipe.
    assert time.monotonic() - started < 4
    assert _gone(pid)


def _import_numpy():
    import numpy  # noqa: F401 - OpenBLAS starts a thread per core as NumPy loads, unless told otherwise


@shares_process("a")
def _pid_blas_threads_and_folder():
    import threadpoolctl

    blas = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    return os.getpid(), blas, os.getcwd()


def test_the_spare_keeper_hands_each_spare_over_once_as_a_fresh_child_would_be(tmp_path, monkeypatch):
    spec = SharedProcess(warm_up=_import_numpy)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        monkeypatch.chdir(tmp_path)  # the adopter's folder, not the one its spares started in
        with shared_processes({"a": spec}):  # none yet: the keeper learns that this spec is wanted
            first, fresh_blas, fresh_folder = run_isolated(_pid_blas_threads_and_folder, limits=limits,
                                                           label="first").value
            assert psutil.Process(first).ppid() == os.getpid() and fresh_folder == str(tmp_path)
        spares = []
        new_spare(keeper, set())  # the keeper warms one up once the pool's lease ends
        for _ in range(2):
            with shared_processes({"a": spec}):
                pid, blas, folder = run_isolated(_pid_blas_threads_and_folder, limits=limits, label="spare").value
                spares.append(pid)
                assert is_copy_of_a_spare(pid, keeper)
                assert blas == fresh_blas  # imported with one OpenBLAS thread, given back what a fresh child has
                assert folder == fresh_folder  # a request's relative paths mean what they mean to the adopter
                # Its exit code comes through the keeper, which reaps the copies it hands over.
                with pytest.raises(ModelRunError, match="killed by signal SIGSEGV"):
                    run_isolated(_crash, limits=limits, label="crash", pool="a")
        assert spares[0] != spares[1] and first not in spares  # never a child that ran a job

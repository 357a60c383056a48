"""The OS sandbox under the model processes: what a model let past the op scan can still not do.

The model processes import this module to find _connect, so what is heavy (TensorFlow, Prefect, MLflow) is
imported inside the tests that need it.
"""

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import psutil
import pytest

from modelgate.errors import ModelRejected, ModelRunError
from modelgate.execution import os_sandbox
from modelgate.execution.sandbox import Limits, SharedProcess, run_isolated, shared_processes
from modelgate.execution.spare_keeper import keep_spares
from tests.execution.spares import is_copy_of_a_spare, new_spare

LATER_S = 2
needs_landlock = pytest.mark.skipif(os_sandbox.landlock_abi()[0] < 4, reason="needs Landlock ABI 4 (TCP rules)")


def _connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return "connected"


@needs_landlock
def test_model_code_cannot_connect_to_a_loopback_port(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    assert run_isolated(_connect, port, limits=Limits(timeout_s=60), label="unconfined").value == "connected"
    listener.accept()[0].close()

    sandbox = os_sandbox.for_validation([], tmp_path, required=True)
    with shared_processes({}, sandbox), pytest.raises(ModelRejected) as refused:
        run_isolated(_connect, port, limits=Limits(timeout_s=60), label="connect")
    assert refused.value.check == "os_sandbox"
    assert "the OS sandbox stopped the model" in str(refused.value) and "Permission denied" in str(refused.value)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing reached the port
    listener.close()


def _import_numpy():
    import numpy  # noqa: F401 - OpenBLAS starts a thread per core as NumPy loads, unless told otherwise


def _start_a_thread(after_s: float = 0.0):
    time.sleep(after_s)
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def _start_a_thread_later():
    """Once the warm-up has ended (and the keeper has found the spare single-threaded), as a library's timer might."""
    signal.signal(signal.SIGALRM, lambda *_: _start_a_thread())
    signal.alarm(LATER_S)


@contextlib.contextmanager
def _captured(name: str, caplog):
    """caplog's records of that logger from INFO up, its handler attached to the logger itself: Prefect's first
    flow run in a process may configure the root logger's handlers afresh, caplog's among them."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


def _own_spare(keeper: int, spec: SharedProcess, sandbox, warm: bool = True) -> int:
    """A pool of this spec, which the keeper has no spare for yet, and then the keeper's spare of it (once warm)."""
    known = {child.pid for child in psutil.Process(keeper).children()}
    with shared_processes({"a": spec}, sandbox):
        run_isolated(os.getpid, limits=Limits(timeout_s=60), label="pid", pool="a")
    return new_spare(keeper, known, warm=warm)


@needs_landlock
def test_a_spare_takes_the_sandbox_of_the_pool_that_adopts_it_or_is_refused(tmp_path, caplog):
    """A spare imports before any sandbox is known; it must still be single-threaded when it enters one."""
    listener = socket.create_server(("127.0.0.1", 0))
    sandbox = os_sandbox.for_validation([], tmp_path, required=True)
    limits = Limits(timeout_s=60)
    with keep_spares() as keeper:
        spec = SharedProcess(warm_up=_import_numpy)
        _own_spare(keeper, spec, sandbox)
        with shared_processes({"a": spec}, sandbox):
            assert is_copy_of_a_spare(run_isolated(os.getpid, limits=limits, label="pid", pool="a").value, keeper)
            with pytest.raises(ModelRejected, match="the OS sandbox stopped the model"):
                run_isolated(_connect, listener.getsockname()[1], limits=limits, label="connect", pool="a")

        # One that has a second thread when its pool takes it (here: started after its warm-up) is copied no more,
        # and goes itself, to be refused there.
        later = SharedProcess(warm_up=_start_a_thread_later)
        refused = _own_spare(keeper, later, sandbox)
        time.sleep(LATER_S + 1)
        with _captured("modelgate.sandbox", caplog), shared_processes({"a": later}, sandbox):
            assert run_isolated(os.getpid, limits=limits, label="pid", pool="a").value != refused
        assert f"spare process {refused} cannot enter the sandbox exactly (it has 2 threads" in caplog.text
        new_spare(keeper, {refused})  # its replacement, which will go itself too

        # One with a second thread as its warm-up ends never leaves the keeper, nor does any other of its spec.
        threaded = SharedProcess(warm_up=_start_a_thread)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(_own_spare(keeper, threaded, sandbox, warm=False)).wait(30)
        with shared_processes({"a": threaded}, sandbox):
            pid = run_isolated(os.getpid, limits=limits, label="pid", pool="a").value
            assert psutil.Process(pid).ppid() == os.getpid()
    listener.close()


@needs_landlock
@pytest.mark.usefixtures("prefect_server")
def test_a_model_let_past_the_scan_cannot_write_outside_its_workdir(tmp_path_factory, tracking_uri, workdir, caplog):
    """Whether TensorFlow's child started for the validation or, for the next one, as a spare before it was known."""
    from tests import models
    from tests.flows import run_flow

    target = tmp_path_factory.mktemp("outside") / "escaped.txt"
    model = models.writes_file(tmp_path_factory.mktemp("writes") / "model", target)
    with keep_spares() as keeper, _captured("modelgate.sandbox", caplog):
        fresh = run_flow(model, tracking_uri, workdir, allow_ops=["WriteFile"], export_onnx=False, benchmark=False)
        assert "adopted spare process" not in caplog.text
        _assert_refused(fresh, model, target)
        new_spare(keeper, set(), within_s=120)
        later = tmp_path_factory.mktemp("later")
        report = run_flow(model, tracking_uri, later, allow_ops=["WriteFile"], export_onnx=False, benchmark=False)
    assert "(warmed up with modelgate.execution.pools:import_tensorflow_stack)" in caplog.text
    _assert_refused(report, model, target)


def _assert_refused(report, model, target) -> None:
    assert not target.exists()
    assert report.status == "failed"
    assert {check.name for check in report.failed_checks()} == {"os_sandbox"}
    stages = {stage.name: stage for stage in report.stages}
    assert stages["probe-batch"].status == "failed"
    assert "the OS sandbox stopped the model" in stages["probe-batch"].message
    assert "Permission denied" in stages["probe-batch"].message
    assert report.environment["sandbox"].startswith("landlock ABI")
    assert report.environment["sandbox_writes"].startswith(report.workdir)
    assert str(model) in report.environment["sandbox_reads"]


def test_without_landlock_a_warning_or_with_require_sandbox_no_model_code(tmp_path, monkeypatch):
    """A kernel without Landlock cannot be had here: its probe answers as one would."""
    from modelgate.reporting.recorder import ValidationRun
    from modelgate.request import ValidationRequest

    monkeypatch.setattr(os_sandbox, "landlock_abi", lambda: (0, "no Landlock: the kernel was built without it"))
    request = ValidationRequest(source=str(tmp_path), output_dir=str(tmp_path / "out"),
                                report_path=str(tmp_path / "report.json"))
    run = ValidationRun(request)
    assert run.sandbox is None
    assert [(c.name, c.status) for c in run.report.checks] == [("os_sandbox", "warning")]
    assert "without an OS sandbox" in run.report.checks[0].message

    required = ValidationRun(ValidationRequest(**{**request.model_dump(), "limits": {"require_sandbox": True}}))
    assert required.report.checks == []
    assert required.report.environment["sandbox"].startswith("none (no Landlock")
    with shared_processes({}, required.sandbox), pytest.raises(ModelRunError, match="--require-sandbox"):
        run_isolated(_connect, 1, limits=Limits(timeout_s=60), label="load-and-wrap")


def test_model_processes_may_read_the_code_that_runs_them():
    """The read rule covers the folder holding modelgate (and, in a checkout, tasks/, flows/, tests/)."""
    assert os.path.isfile(os.path.join(os_sandbox.CODE_ROOT, "modelgate", "execution", "os_sandbox.py"))

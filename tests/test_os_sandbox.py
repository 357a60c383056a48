"""The OS sandbox under the model processes: what a model let past the op scan can still not do.

The model processes import this module to find _connect, so what is heavy (TensorFlow, Prefect, MLflow) is
imported inside the tests that need it.
"""

import socket

import pytest

from modelgate import os_sandbox
from modelgate.errors import ModelRejected, ModelRunError
from modelgate.sandbox import Limits, run_isolated, shared_processes

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


@needs_landlock
@pytest.mark.usefixtures("prefect_server")
def test_a_model_let_past_the_scan_cannot_write_outside_its_workdir(tmp_path_factory, tracking_uri, workdir):
    from tests import models
    from tests.flows import run_flow

    target = tmp_path_factory.mktemp("outside") / "escaped.txt"
    model = models.writes_file(tmp_path_factory.mktemp("writes") / "model", target)
    report = run_flow(model, tracking_uri, workdir, allow_ops=["WriteFile"], export_onnx=False, benchmark=False)
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
    from modelgate.recorder import ValidationRun
    from modelgate.schemas import ValidationRequest

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

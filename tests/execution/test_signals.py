"""Real signals on real commands: Ctrl-C on `modelgate validate`, SIGTERM on `modelgate serve`."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from modelgate.service.prefect_server import STARTUP_TIMEOUT_SETTING
from tests import models

STOP_WITHIN_S = 30  # seconds, on a loaded 2-core machine; both took minutes before


def _environment(tmp_path, **extra) -> dict[str, str]:
    """A Prefect home of the test's own (no other process's SQLite lock), and time for a slow server start."""
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {**environment, "PREFECT_HOME": str(tmp_path / "prefect"),
            STARTUP_TIMEOUT_SETTING: "180", **extra}


def _catches(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        mask = next(line.split()[1] for line in status if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def _stopped_within(process: subprocess.Popen, signum: int) -> tuple[float, str]:
    """Seconds until the process group ended after the signal, and its stderr. Both pipes are drained while
    waiting: a command blocked writing to a full pipe would never exit (and wait() alone never reads them).
    A command still running after 300 s is asked for its threads' stacks (SIGUSR1) before it is killed."""
    started = time.monotonic()
    os.killpg(process.pid, signum)  # as a terminal (or a service manager) signals a whole process group
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        stuck = _group_members(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        stderr = f"{stuck}\n{stderr}"
    return time.monotonic() - started, stderr or ""


def _group_members(group: int) -> str:
    members = []
    for member in psutil.process_iter(["pid", "status", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(member.pid) == group:
                members.append(f"{member.info['pid']} {member.info['status']} {' '.join(member.info['cmdline'] or [])[:120]}")
    return "still running: " + "; ".join(members)


def test_ctrl_c_during_a_model_stage_ends_validate_in_seconds_with_the_report_kept(tmp_path):
    model = models.hangs(tmp_path / "hangs")  # its first model stage runs until the stage's time limit
    report_path, tracking_uri = tmp_path / "report.json", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "modelgate.service.cli", "validate", str(model), "--targets", "none", "--report", str(report_path),
               "--output-dir", str(tmp_path / "out"), "--tracking-uri", tracking_uri]
    # As a terminal starts it: SIGINT at its default. A process inherits an ignored SIGINT (something earlier in
    # this test session may ignore it here), and Python then raises no KeyboardInterrupt for it.
    validate = subprocess.Popen(command, cwd=tmp_path, env=_environment(tmp_path), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in validate.stdout:
        if "prepare-inputs" in line:
            break  # probe-batch, next, runs the model first and never ends by itself
    time.sleep(2)
    children = psutil.Process(validate.pid).children(recursive=True)
    assert children, "the Prefect server and the model processes should be running"

    took, stderr = _stopped_within(validate, signal.SIGINT)
    assert took < STOP_WITHIN_S, f"validate took {took:.0f} s to stop: {stderr[-6000:]}"
    assert validate.returncode == 130
    assert "modelgate: error: interrupted" in stderr and "Traceback" not in stderr
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    report = json.loads(report_path.read_text())
    stages = {stage["name"]: stage["status"] for stage in report["stages"]}
    assert report["status"] == "error" and stages["probe-batch"] == "interrupted"
    assert MlflowClient(tracking_uri).get_run(report["mlflow"]["run_id"]).info.status == "FAILED"


def test_serve_stops_in_seconds_on_sigterm_when_its_prefect_server_is_gone(tmp_path, monkeypatch):
    """With a schedule to pause on the way out, Prefect's runner took over a minute, retrying a dead server."""
    from prefect.server.api.server import SubprocessASGIServer

    for key, value in _environment(tmp_path).items():
        monkeypatch.setenv(key, value)  # for the server's process: this one read its settings long ago
    server = SubprocessASGIServer(port=SubprocessASGIServer().find_available_port())
    server.start(timeout=180)
    serve = subprocess.Popen([sys.executable, "-m", "modelgate.service.cli", "serve", "--models", "some-model"], cwd=tmp_path,
                             env=_environment(tmp_path, PREFECT_API_URL=server.api_url), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _catches(serve.pid, signal.SIGTERM):  # Prefect's runner has started serving
            assert serve.poll() is None and time.monotonic() < deadline, serve.stdout.read()
            time.sleep(0.2)
    finally:
        server.stop()
    took, _ = _stopped_within(serve, signal.SIGTERM)
    assert took < STOP_WITHIN_S / 2, f"serve took {took:.0f} s to stop"
    assert serve.returncode == 0


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """Whatever a test here started goes with it; the session's own children (its Prefect server) stay."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    yield
    for child in psutil.Process().children(recursive=True):
        if child.pid not in before:
            child.kill()

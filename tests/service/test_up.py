"""`modelgate up` as a person starts it, in a folder of their own with nothing configured: Prefect's and MLflow's
servers with their UIs, both deployments served, a validation started through the deployment (as the UI's Run
button does), and Ctrl-C stopping every process it started."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

from modelgate.service.prefect_server import STARTUP_TIMEOUT_SETTING
from tests import models
from tests.topology.processes import free_port, http_ok, wait_until

pytestmark = pytest.mark.slow

STARTED_WITHIN_S = 420  # both servers, the runner and its deployments, on a loaded 2-core machine
VALIDATED_WITHIN_S = 420  # a flow run's process, TensorFlow's child, every stage of a small model
STOPPED_WITHIN_S = 60
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class _Lines:
    """The command's output, drained by a thread (a full pipe would block it) and kept for the assertions."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> re.Match | None:
        """The first match in the output, a line wrapped for the terminal (its rest indented) joined again."""
        return re.search(pattern, re.sub(r"\n\s+", " ", "\n".join(self.lines)), re.MULTILINE)

    def text(self) -> str:
        return "\n".join(self.lines[-80:])


def _json(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _running(processes: dict[int, psutil.Process]) -> list[str]:
    running = []
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
    return running


def _environment(tmp_path) -> dict[str, str]:
    """Nothing configured: no Prefect or MLflow setting of this test session, a Prefect home of the test's own."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_"))}
    return {**environment, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            STARTUP_TIMEOUT_SETTING: "180"}


def test_up_starts_both_uis_serves_the_deployments_runs_a_validation_and_ctrl_c_stops_it_all(tmp_path):
    model = models.custom_signature(tmp_path / "model")
    home = tmp_path / "project"
    home.mkdir()
    prefect_port, mlflow_port = free_port(), free_port()
    # As a terminal starts it: in a process group of its own, SIGINT at its default (pytest may ignore it).
    up = subprocess.Popen(
        [sys.executable, "-m", "modelgate.service.cli", "up", "--prefect-port", str(prefect_port),
         "--mlflow-port", str(mlflow_port)],
        cwd=home, env=_environment(tmp_path), start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    output = _Lines(up.stdout)
    seen: dict[int, psutil.Process] = {}  # every process `up` started, and theirs, as they come and go

    def still_up(condition):
        def checked():
            assert up.poll() is None, f"modelgate up exited with {up.returncode}\n{output.text()}"
            with contextlib.suppress(psutil.Error):
                seen.update({p.pid: p for p in psutil.Process(up.pid).children(recursive=True)})
            return condition()
        return checked

    try:
        wait_until(still_up(lambda: output.find(r"^Ready\.")), STARTED_WITHIN_S, "modelgate up ready",
                   diagnose=output.text)
        prefect_ui = output.find(r"^Prefect UI: (\S+)")[1]
        mlflow_ui = output.find(r"^MLflow UI: (\S+)")[1]
        assert (prefect_ui, mlflow_ui) == (f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}")
        api = f"{prefect_ui}/api"
        deployments = {d["name"]: d for d in _json(f"{api}/deployments/filter", {})}
        assert {"validate-savedmodel", "validate-new-versions"} <= set(deployments)
        assert http_ok(f"{mlflow_ui}/health") and http_ok(prefect_ui)  # both UIs answer
        assert _json(f"{mlflow_ui}/api/2.0/mlflow/experiments/search", {"max_results": 10}) is not None

        # One validation through the deployment, as the UI's Run button starts it.
        request = {"source": str(model), "targets": {}, "benchmark": {"enabled": False},
                   "output": {"report_path": str(tmp_path / "report.json"), "output_dir": str(tmp_path / "out")}}
        run = _json(f"{api}/deployments/{deployments['validate-savedmodel']['id']}/create_flow_run",
                    {"parameters": {"request": request}})

        def final_state():
            state = _json(f"{api}/flow_runs/{run['id']}")["state"]
            return state["type"] if state and state["type"] in FINAL_STATES else None

        state = wait_until(still_up(final_state), VALIDATED_WITHIN_S, "the flow run finished", poll_s=1,
                           diagnose=output.text)
        assert state == "COMPLETED", output.text()
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["status"] == "passed"
        logged = _json(f"{mlflow_ui}/api/2.0/mlflow/runs/get?run_id={report['mlflow']['run_id']}")
        assert logged["run"]["info"]["status"] == "FINISHED"  # the flow run logged to the MLflow server `up` started
        assert (home / "mlflow.db").exists()  # on the local store `modelgate validate` writes by default
        # TensorFlow's child closed mid-validation (the targets' stages began): the runner's spare keeper waited
        # for the validation's end to warm up the spare of it.
        wait_until(still_up(lambda: output.find(r"warming up spare")), 120, "a spare warmed up after the validation",
                   diagnose=output.text)
        deferred = output.find(r"a spare \(\S+import_tensorflow_stack\) will warm up once no validation runs")
        assert deferred and deferred.start() < output.find(r"warming up spare").start(), output.text()

        _up_beside_configured_servers(tmp_path, api, mlflow_ui)

        started = {pid: process for pid, process in seen.items() if process.is_running()}
        assert len(started) >= 4, started  # Prefect's server, MLflow's (and its uvicorn), the runner, its spare keeper
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it to its foreground process group
        took = time.monotonic()
        up.wait(STOPPED_WITHIN_S)
        took = time.monotonic() - took
        assert up.returncode == 0, output.text()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _running(seen), 10, "every process gone")
        assert _running(seen) == [], "left running after Ctrl-C"
        assert took < STOPPED_WITHIN_S
        assert not http_ok(f"{mlflow_ui}/health") and not http_ok(f"{api}/health")
        assert output.find(r"^stopped$"), output.text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for process in seen.values():
            with contextlib.suppress(psutil.Error):
                process.kill()


def _up_beside_configured_servers(tmp_path, api: str, mlflow_ui: str) -> None:
    """With PREFECT_API_URL and MLFLOW_TRACKING_URI set, `up` says it uses them and starts only the runner; its
    Ctrl-C stops that runner and leaves those servers be."""
    home = tmp_path / "configured"
    home.mkdir()
    env = {**_environment(tmp_path), "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_ui}
    up = subprocess.Popen([sys.executable, "-m", "modelgate.service.cli", "up"], cwd=home, env=env,
                          start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = _Lines(up.stdout)
    seen: dict[int, psutil.Process] = {}

    def ready():
        assert up.poll() is None, f"modelgate up exited with {up.returncode}\n{output.text()}"
        with contextlib.suppress(psutil.Error):
            seen.update({p.pid: p for p in psutil.Process(up.pid).children(recursive=True)})
        return output.find(r"^Ready\.")

    try:
        wait_until(ready, STARTED_WITHIN_S, "modelgate up ready beside configured servers", diagnose=output.text)
        assert output.find(rf"^Prefect: using the server PREFECT_API_URL names, {re.escape(api)} \(not started here\)")
        assert output.find(rf"^MLflow: using the server MLFLOW_TRACKING_URI names, {re.escape(mlflow_ui)} \(not started")
        commands = [" ".join(p.cmdline()) for p in seen.values() if p.is_running()]
        assert not [c for c in commands if "server" in c.split()], commands  # nothing but the runner (and its keeper)
        os.killpg(up.pid, signal.SIGINT)
        up.wait(STOPPED_WITHIN_S)
        assert up.returncode == 0, output.text()
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _running(seen), 10, "every process gone")
        assert _running(seen) == []
        assert http_ok(f"{api}/health") and http_ok(f"{mlflow_ui}/health")  # not theirs to stop
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for process in seen.values():
            with contextlib.suppress(psutil.Error):
                process.kill()

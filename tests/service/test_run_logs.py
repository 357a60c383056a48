"""A validation as Prefect's users see it, read through Prefect's API: the flow run's name and tags, and its log
telling each stage and the verdict, whether the run came from a deployment (the UI's form, a schedule) or the CLI
against a Prefect server; the CLI's terminal shows none of Prefect's lines."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from flows.new_versions import VALIDATE_DEPLOYMENT
from modelgate.request import ValidationRequest
from tests.flows import run_flow
from tests.topology.processes import wait_until
from tests.tracking.test_registry import FAST, _register

pytestmark = pytest.mark.slow


def _request(source, tracking_uri, workdir, **fields) -> dict:
    request = ValidationRequest(source=str(source), tracking_uri=tracking_uri, report_path=str(workdir / "report.json"),
                                output_dir=str(workdir / "out"), **FAST, **fields)
    return request.as_parameters()


def _log(client, flow_run_id) -> list[str]:
    """Every line of the flow run's log (its task runs' included), oldest first."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    lines, page = [], None
    while page is None or len(page) == 200:
        page = client.read_logs(log_filter=log_filter, limit=200, offset=len(lines))
        lines += [log.message for log in page]
    return lines


def _log_with_verdict(client, flow_run_id) -> list[str]:
    """The log once its last lines arrived: the flow run's process ships them in batches, the last as it exits."""
    return wait_until(lambda: (lines := _log(client, flow_run_id)) and any(line.startswith("report: ") for line in lines)
                      and lines, 60, "the verdict and the report in the flow run's log")


def _assert_tells_each_stage(lines: list[str], report: dict) -> None:
    for stage in report["stages"]:
        name, status = stage["name"], stage["status"]
        if status != "skipped":
            assert f"{name} started" in lines, (name, lines)
        outcome = [line for line in lines if line.startswith(f"{name} {status}")]
        assert len(outcome) == 1, (name, status, lines)
        if status != "skipped":
            assert f" in {stage['duration_s']:.2f} s" in outcome[0]
        if stage["message"]:
            assert f": {' '.join(stage['message'].split())[:40]}" in outcome[0], (outcome[0], stage["message"])
    verdict = f"verdict: {report['status']}" if report["status"] == "passed" else "verdict: "
    assert any(line.startswith(verdict) for line in lines), lines
    assert f"recommendation: {report['recommendation']['line']}" in lines


def test_a_deployment_run_is_named_after_its_model_tagged_with_it_and_logs_each_stage(
        served, model_dirs, tracking_uri, workdir):
    request = _request(model_dirs["custom_signature"], tracking_uri, workdir, model={"signature": "my_custom_signature"})
    flow_run = run_deployment(VALIDATE_DEPLOYMENT, parameters={"request": request}, timeout=600, poll_interval=1)
    assert flow_run.state.is_completed(), (flow_run.state, served.read_text()[-3000:])
    report = json.loads((workdir / "report.json").read_text())
    assert report["status"] == "passed"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        assert run.name == "custom_signature (my_custom_signature)"
        assert "model:custom_signature" in run.tags
        lines = _log_with_verdict(client, run.id)
    _assert_tells_each_stage(lines, report)
    assert "verdict: passed" in lines
    # The report is final: its last stage is MLflow's, done.
    assert report["stages"][-1]["name"] == "log-mlflow" and report["stages"][-1]["status"] == "ok"


def test_the_cli_on_a_prefect_server_logs_the_run_there_and_keeps_the_terminal_clean(
        prefect_server, model_dirs, tracking_uri, tmp_path):
    model = shutil.copytree(model_dirs["nan_outputs"], tmp_path / "cli-logged-model")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "MLFLOW_TRACKING_URI": tracking_uri}
    result = subprocess.run(
        [sys.executable, "-m", "modelgate.service.cli", "validate", str(model), "--targets", "none", "--no-benchmark",
         "--report", str(tmp_path / "report.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    terminal = result.stdout + result.stderr
    for prefect_line in (" | INFO ", " | WARNING ", " | ERROR ", "Finished in state", "Beginning flow run"):
        assert prefect_line not in terminal, terminal
    assert "inspect-model started" not in terminal  # the run's log is Prefect's, not the terminal's
    report = json.loads((tmp_path / "report.json").read_text())
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["cli-logged-model"])))
        assert "model:cli-logged-model" in run.tags and run.state.is_failed()
        lines = _log_with_verdict(client, run.id)
    _assert_tells_each_stage(lines, report)
    assert any(line.startswith("verdict: failed: finite_outputs") for line in lines), lines


def test_a_run_of_an_alias_is_named_after_the_version_it_resolved_to(prefect_server, model_dirs, tracking_uri, workdir):
    version = _register(tracking_uri, "named-by-alias", model_dirs["custom_signature"])
    MlflowClient(tracking_uri).set_registered_model_alias("named-by-alias", "candidate", version)
    report = run_flow("models:/named-by-alias@candidate", tracking_uri, workdir, **FAST, alias=None)
    assert report.status == "passed", report.first_error()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"named-by-alias@{version}"])))
    assert len(runs) == 1 and "model:named-by-alias" in runs[0].tags

"""The scheduled tick closes the MLflow runs that killed validations left RUNNING, and only those."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from prefect import flow

from flows.new_versions import validate_new_versions
from modelgate.request import ValidationRequest
from modelgate.tracking.mlflow_store import open_run

pytestmark = pytest.mark.usefixtures("prefect_server")

OPEN_THEN_WAIT = """
import sys, time
from modelgate.tracking.mlflow_store import open_run
from modelgate.request import ValidationRequest
print(open_run(ValidationRequest.model_validate_json(sys.argv[1]), '.', None).run_id, flush=True)
time.sleep(600)
"""


def test_the_tick_closes_runs_whose_process_or_flow_run_died_as_killed(tmp_path, tracking_uri):
    request = ValidationRequest(source=str(tmp_path), tracking_uri=tracking_uri, experiment_name="abandoned-runs")
    validation = subprocess.Popen([sys.executable, "-c", OPEN_THEN_WAIT, request.model_dump_json()],
                                  stdout=subprocess.PIPE, text=True)
    of_killed_process = validation.stdout.readline().strip()
    validation.kill()  # SIGKILL: nothing of it closes its run
    validation.wait()

    opened = []

    @flow
    def crashes_after_opening_its_run():
        opened.append(open_run(request, str(tmp_path), None).run_id)
        raise RuntimeError("the validation broke before it could close its run")

    assert crashes_after_opening_its_run(return_state=True).is_failed()
    of_failed_flow_run = opened[0]
    still_running = open_run(request, str(tmp_path), None).run_id  # this process, alive, no flow run

    validate_new_versions(model_names=[], tracking_uri=tracking_uri,
                          request_fields={"experiment_name": "abandoned-runs"})
    client = MlflowClient(tracking_uri)
    killed = client.get_run(of_killed_process)
    assert killed.info.status == "KILLED" and killed.data.tags["modelgate.status"] == "killed"
    assert f"process {validation.pid}" in killed.data.tags["modelgate.killed_reason"]
    assert "is gone" in killed.data.tags["modelgate.killed_reason"]
    failed = client.get_run(of_failed_flow_run)
    assert failed.info.status == "KILLED"
    assert "ended FAILED without closing it" in failed.data.tags["modelgate.killed_reason"]
    alive = client.get_run(still_running)
    assert alive.info.status == "RUNNING" and "modelgate.killed_reason" not in alive.data.tags

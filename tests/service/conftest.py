"""Fixtures of the service tests: `modelgate serve` as users start it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flows.new_versions import VALIDATE_DEPLOYMENT
from tests.topology.processes import wait_until
from tests.topology.stack import Topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def served(prefect_server, tracking_uri, tmp_path_factory):
    """`modelgate serve` as users start it, pointed at the test's Prefect server and MLflow store; yields its log.
    Started once for the modules here that use it (test_run_logs, test_schedule), stopped with this package."""
    logs = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "MLFLOW_TRACKING_URI": tracking_uri}
    with open(logs, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "modelgate.service.cli", "serve", "--limit", "2"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def serve_log():
        return logs.read_text()[-3000:]

    def deployment_served():
        try:
            client.read_deployment_by_name(VALIDATE_DEPLOYMENT)
            return True
        except Exception:
            assert process.poll() is None, f"modelgate serve exited with {process.returncode}\n{serve_log()}"
            return False

    with get_client(sync_client=True) as client:
        wait_until(deployment_served, 180, f"deployment {VALIDATE_DEPLOYMENT} served", poll_s=1, diagnose=serve_log)
    yield logs
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    """docker/compose.yaml's base services on loopback (PostgreSQL, MLflow's and Prefect's servers, prefect-setup),
    started once for test_events and test_topology, which add their own workers (and the event path) on top; each
    starts again whatever the other's faults left stopped (a killed worker, MLflow's server), and test_events
    takes its event path down as it ends."""
    with Topology(tmp_path_factory.mktemp("topology")) as running:  # entered first: a failed start stops all
        running.start()
        yield running

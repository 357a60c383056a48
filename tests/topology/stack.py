"""docker/compose.yaml's topology as real processes on loopback: each service's own command and environment.

Only what a container would see differently changes: addresses (service names become 127.0.0.1 and free
ports), container paths (/mlartifacts, /app) and the executables' folder (this virtual environment's); and of
.env's settings, the workers poll for flow runs every second (WORKER_POLL), not every 5 s.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from modelgate.request import ValidationRequest
from tests.signing_keys import key_pair
from tests.topology import compose
from tests.topology.processes import PostgresCluster, Service, free_port, postgres_bindir, wait_until

VALIDATE_DEPLOYMENT = "validate-savedmodel/validate-savedmodel"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Services in compose.yaml that run modelgate's image as a worker, and the work queue each serves.
WORKER_SERVICES = ("worker", "worker-gpu")
# The event path's services, started by start_relay() and register_webhook() only: with the webhook in place,
# every registered version also starts a validation of its own.
EVENT_SERVICES = ("relay", "webhook-setup")
# .env's PREFECT_WORKER_QUERY_SECONDS as an operator may set it: each flow run a test starts is picked up within
# a second instead of 5 s (about 2 s less on average, on each of a dozen flow runs).
WORKER_POLL = {"PREFECT_WORKER_QUERY_SECONDS": "1"}


def _clean_environment() -> dict[str, str]:
    """The test process's environment without its own Prefect and MLflow settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class Topology(contextlib.ExitStack):
    """Postgres, the MLflow and Prefect servers, prefect-setup, and workers started on demand.

    Enter it before start(): leaving it stops every process started so far, whatever failed.
    """

    def __init__(self, root: Path, settings: dict[str, str] | None = None):
        super().__init__()
        self.root = root
        self.model = compose.load({**WORKER_POLL, **(settings or {})})
        self.commands_run: list[list[str]] = []
        self.services: dict[str, Service] = {}
        self.postgres: PostgresCluster | None = None
        self.prefect_port, self.mlflow_port, self.relay_port = free_port(), free_port(), free_port()
        self.prefect_api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"
        self.mlflow_artifacts = root / "mlartifacts"
        self.relay_tls = root / "relay-tls"

    # Addresses and paths as this machine sees them.
    def _loopback(self, value: str) -> str:
        assert self.postgres is not None
        for service_address, local in (("postgres:5432", f"127.0.0.1:{self.postgres.port}"),
                                       ("prefect-server:4200", f"127.0.0.1:{self.prefect_port}"),
                                       ("mlflow:5000", f"127.0.0.1:{self.mlflow_port}"),
                                       ("relay:8765", f"localhost:{self.relay_port}")):
            value = value.replace(service_address, local)
        return value

    def _environment(self, service: str, local: dict[str, str]) -> dict[str, str]:
        home = self.root / service / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        declared = {key: self._loopback(value) for key, value in compose.environment(self.model, service).items()}
        unknown = set(local) - set(declared) - {"MODELGATE_HOME", "PREFECT_WORKER_WEBSERVER_HOST",
                                                "PREFECT_WORKER_WEBSERVER_PORT"}
        assert not unknown, f"{service}: the topology may only relocate settings compose.yaml declares: {unknown}"
        return {**_clean_environment(), "PREFECT_HOME": str(home), **declared, **local}

    def _start(self, service: str, name: str, local: dict[str, str]) -> Service:
        argv = compose.command(self.model, service)
        self.commands_run.append(argv)
        (self.root / name).mkdir(parents=True, exist_ok=True)
        process = Service(name, argv, self._environment(service, local), compose.ROOT, self.root / name / "log")
        self.services[name] = process.start()
        self.callback(process.stop)
        return process

    def start(self) -> None:
        bindir = postgres_bindir()
        assert bindir, "PostgreSQL's server binaries are not installed"
        self.postgres = PostgresCluster(bindir, compose.environment(self.model, "postgres")["POSTGRES_USER"])
        self.callback(self.postgres.stop)
        self.postgres.start()
        self.postgres.run_sql_file(compose.DOCKER / "postgres-init.sql")

        self.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        self._run_once("relay-tls", {"MODELGATE_RELAY_TLS_DIR": str(self.relay_tls)})
        self.start_mlflow()
        prefect = self._start("prefect-server", "prefect-server", {
            "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.prefect_port),
            "PREFECT_UI_API_URL": self.prefect_api,
        })
        prefect.wait_healthy(f"{self.prefect_api}/health")
        self.services["mlflow"].wait_healthy(f"{self.tracking_uri}/health")
        self._run_once("prefect-setup", {"MODELGATE_HOME": str(compose.ROOT)})

    def restore(self, *workers: str) -> None:
        """MLflow's server and the given workers running, after a test stopped or killed them."""
        if not self.services["mlflow"].running():
            self.start_mlflow().wait_healthy(f"{self.tracking_uri}/health")
        for worker in workers:
            if not (worker in self.services and self.services[worker].running()):
                self.start_worker(worker)

    def start_mlflow(self) -> Service:
        return self._start("mlflow", "mlflow", {
            "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(self.mlflow_port),
            "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{self.mlflow_port}",
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.mlflow_artifacts),
            "PYTHONPATH": str(self.relay_tls / "trust"),
        })

    def _run_once(self, service: str, local: dict[str, str]) -> subprocess.CompletedProcess:
        """A one-shot service (prefect-setup, relay-tls, webhook-setup), which must succeed."""
        argv = compose.command(self.model, service)
        self.commands_run.append(argv)
        env = self._environment(service, local)
        result = subprocess.run(argv, check=False, cwd=compose.ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{service} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def start_relay(self) -> Service:
        """The relay as compose.yaml runs it, on HTTPS with relay-tls's certificate; healthy as its check says."""
        relay = self._start("relay", "relay", {
            "MODELGATE_RELAY_HOST": "127.0.0.1", "MODELGATE_RELAY_PORT": str(self.relay_port),
            "MODELGATE_RELAY_CERTFILE": str(self.relay_tls / "relay.pem"),
            "MODELGATE_RELAY_KEYFILE": str(self.relay_tls / "relay-key.pem"),
        })
        relay.wait_healthy(f"{self.relay_url}health", context=self.relay_client_tls())
        return relay

    @property
    def relay_url(self) -> str:
        return self._loopback(compose.environment(self.model, "webhook-setup")["MODELGATE_RELAY_URL"])

    def relay_client_tls(self) -> ssl.SSLContext:
        """What a client that trusts relay-tls's CA (and nothing else) verifies the relay with."""
        return ssl.create_default_context(cafile=str(self.relay_tls / "ca.pem"))

    def register_webhook(self) -> subprocess.CompletedProcess:
        """The one-shot webhook-setup service: MLflow's webhook to the relay, then MLflow's test event."""
        return self._run_once("webhook-setup", {})

    def start_worker(self, service: str = "worker", name: str | None = None) -> Service:
        """A worker as compose.yaml runs it; wait until its health endpoint answers (it has polled the pool)."""
        assert service in WORKER_SERVICES
        name = name or service
        if name in self.services and self.services[name].running():
            raise RuntimeError(f"{name} is already running")
        port = free_port()
        worker = self._start(service, name, {
            "MODELGATE_HOME": str(compose.ROOT),
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        })
        worker.wait_healthy(f"http://127.0.0.1:{port}/health")
        return worker

    # The Prefect API, as the UI uses it.
    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.prefect_api)

    def run_deployment(self, request: dict[str, Any], work_queue: str | None = None) -> str:
        """What the UI's Run button does: a flow run created from the deployment, with the form's parameters."""
        with self.client() as client:
            deployment = client.read_deployment_by_name(VALIDATE_DEPLOYMENT)
            flow_run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"request": request}, work_queue_name=work_queue,
            )
        return str(flow_run.id)

    def flow_run(self, flow_run_id: str):
        with self.client() as client:
            return client.read_flow_run(flow_run_id)

    def state(self, flow_run_id: str) -> str:
        state = self.flow_run(flow_run_id).state
        return state.type.value if state else "UNKNOWN"

    def wait_for_state(self, flow_run_id: str, states: frozenset[str] | set[str], timeout_s: float = 420):
        """The flow run once its state is one of states (by default, any final one)."""
        wait_until(lambda: self.state(flow_run_id) in states, timeout_s, f"flow run {flow_run_id} in {set(states)}",
                   poll_s=1, diagnose=self.logs)
        return self.flow_run(flow_run_id)

    def wait_until_final(self, flow_run_id: str, timeout_s: float = 420):
        return self.wait_for_state(flow_run_id, FINAL_STATES, timeout_s)

    def task_runs(self, flow_run_id: str):
        with self.client() as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    def served_by(self, name: str, flow_run_id: str) -> bool:
        return f"submitting flow run '{flow_run_id}'" in self.services[name].log.read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(service.tail(2500) for service in self.services.values())


def run_parameters(output: Path, source: str, **fields: Any) -> dict[str, Any]:
    """A quick validation's request, writing under output (workers run in the repository: keep it clean)."""
    output.mkdir(parents=True, exist_ok=True)
    quick = {"export_onnx": False, "benchmark": {"batch_sizes": [1], "max_windows": 3, "warmup": 1},
             "output_dir": str(output / "out"), "report_path": str(output / "report.json"),
             "signing_key": str(key_pair(output / "keys")[0])}
    return ValidationRequest(source=source, **{**quick, **fields}).as_parameters()

"""The production topology of docker/, run as real processes on loopback.

PostgreSQL, `mlflow server` and `prefect server start` on it, docker/prefect-setup.sh, and `prefect worker`
processes: each with the command and environment docker/compose.yaml gives it. Validations are started as
the UI's Run button starts them, and the faults a deployment meets are provoked for real.
"""

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.topology import compose
from tests.topology.processes import postgres_bindir, wait_until
from tests.topology.stack import EVENT_SERVICES, run_parameters
from tests.tracking.test_registry import _register

needs_postgres = pytest.mark.skipif(
    postgres_bindir() is None,
    reason="PostgreSQL server binaries not found (apt-get install postgresql; .ci/run installs them)",
)


@pytest.fixture(scope="module")
def topology(stack):
    stack.restore("worker", "worker-gpu")
    return stack


def _report(parameters) -> dict:
    return json.loads(Path(parameters["output"]["report_path"]).read_text())


def test_compose_file_parses_and_every_setting_is_in_env_example():
    text = compose.COMPOSE_FILE.read_text()
    assert compose.variables_used(text) <= set(compose.read_env_file()), "a setting is missing from .env.example"
    model = compose.load()
    services = model["services"]
    assert set(services) == {"postgres", "prefect-server", "mlflow", "prefect-setup", "worker", "worker-gpu",
                             "relay-tls", "relay", "webhook-setup"}
    for name, service in services.items():
        assert "image" in service, name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s missing healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in model["volumes"], f"{name}: undeclared volume {source}"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # MLflow 3 answers only the Host names it is told: the one workers use must be among them.
    allowed = compose.environment(model, "mlflow")["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed
    assert compose.environment(model, "worker")["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_the_gpu_variant_is_a_build_argument_of_the_one_dockerfile():
    dockerfile = (compose.DOCKER / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    build = compose.load()["services"]["worker-gpu"]["build"]
    assert set(build["args"]) <= declared and build["args"]["VARIANT"] == "gpu"
    assert "uv sync --locked" in dockerfile and "--extra ${VARIANT}" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE), "the image must not run as root"


@pytest.mark.slow
@needs_postgres
def test_every_compose_command_is_one_the_topology_runs(topology):
    model = compose.load()
    commands = {name: compose.command(model, name) for name, service in model["services"].items()
                if "command" in service and name not in EVENT_SERVICES}  # those: tests/service/test_events.py
    assert set(commands) == {"prefect-server", "mlflow", "prefect-setup", "worker", "worker-gpu", "relay-tls"}
    for name, argv in commands.items():
        assert argv in topology.commands_run, f"{name}'s command {argv} is not run by the topology test"
    mounted = [v for v in model["services"]["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert mounted == ["./postgres-init.sql:/docker-entrypoint-initdb.d/modelgate.sql:ro"]  # the SQL it ran


@pytest.mark.slow
@needs_postgres
def test_a_bad_model_fails_saying_why_and_the_worker_serves_the_next_run_into_mlflow(
        topology, model_dirs, tmp_path):
    bad = run_parameters(tmp_path / "bad", str(model_dirs["reads_files"]))
    bad_run = topology.run_deployment(bad)
    final = topology.wait_until_final(bad_run).state
    assert final.type.value == "FAILED" and final.message.startswith("failed: op_safety")  # refused: judged
    report = _report(bad)
    assert report["status"] == "failed"  # judged: refused as unsafe, on the check op_safety
    assert "ReadFile" in next(s["message"] for s in report["stages"] if s["name"] == "scan-ops")
    assert "ReadFile" in next(c["message"] for c in report["checks"] if c["name"] == "op_safety")
    client = MlflowClient(topology.tracking_uri)
    failed = client.get_run(report["mlflow"]["run_id"])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["modelgate.status"] == "failed"
    assert failed.data.tags["modelgate.failed_checks"] == "op_safety"
    assert "ReadFile" in failed.data.tags["modelgate.verdict"]

    version = _register(topology.tracking_uri, "topology-model", model_dirs["keras_export"])
    good = run_parameters(tmp_path / "good", f"models:/topology-model/{version}")
    good_run = topology.run_deployment(good)
    assert topology.wait_until_final(good_run).state.type.value == "COMPLETED"
    assert topology.served_by("worker", bad_run) and topology.served_by("worker", good_run)
    report = _report(good)
    assert report["status"] == "passed", report
    run = client.get_run(report["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["modelgate.status"] == "passed"
    assert run.data.metrics["p50_ms.savedmodel.tensorflow.cpu.bs1"] > 0
    assert run.data.tags["modelgate.prefect_flow_run"].endswith(good_run)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html", "signatures.json"} <= artifacts
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))).read_text())
    assert logged["status"] == "passed"
    # the artifacts went through the server into the store it serves, not onto the worker's disk
    assert list(topology.mlflow_artifacts.rglob("report.html"))
    mv = client.get_model_version("topology-model", version)
    assert mv.tags["modelgate.status"] == "passed" and mv.tags["modelgate.run_id"] == run.info.run_id
    assert str(client.get_model_version_by_alias("topology-model", "validated").version) == version


@pytest.mark.slow
@needs_postgres
def test_a_worker_killed_mid_run_leaves_a_crashed_run_and_a_rerun_succeeds(topology, model_dirs, tmp_path):
    killed = run_parameters(tmp_path / "killed", str(model_dirs["keras_export"]))
    killed_run = topology.run_deployment(killed)
    topology.wait_for_state(killed_run, {"RUNNING"})
    wait_until(lambda: Path(killed["output"]["report_path"]).exists() and '"inspect"' in Path(killed["output"]["report_path"]).read_text(),
               180, "the validation under way")
    topology.services["worker"].kill()  # the worker, its flow run and the model's process, as a dying container
    # Nothing tells Prefect at once: the run stays Running until its heartbeats are missed.
    assert topology.state(killed_run) == "RUNNING"

    topology.start_worker("worker")
    rerun = run_parameters(tmp_path / "rerun", str(model_dirs["keras_export"]))
    rerun_run = topology.run_deployment(rerun)
    assert topology.wait_until_final(rerun_run).state.type.value == "COMPLETED"
    assert _report(rerun)["status"] == "passed"

    crashed = topology.wait_until_final(killed_run, timeout_s=300)
    assert crashed.state.type.value == "CRASHED"
    assert "No heartbeat" in crashed.state.message  # docker/automations.yaml did it
    assert _report(killed)["status"] == "running"  # what was found before the kill is still on disk


@pytest.mark.slow
@needs_postgres
def test_mlflow_down_when_results_are_logged_fails_the_run_and_keeps_the_report(topology, model_dirs, tmp_path):
    parameters = run_parameters(tmp_path / "offline", str(model_dirs["custom_signature"]))
    report_file = Path(parameters["output"]["report_path"])
    flow_run = topology.run_deployment(parameters, work_queue="gpu")  # the gpu worker's queue
    wait_until(lambda: report_file.exists() and '"prepare-inputs"' in report_file.read_text(), 240,
               "the validation under way", poll_s=0.2)
    topology.services["mlflow"].stop()

    assert topology.wait_until_final(flow_run).state.type.value == "FAILED"  # no verdict could be recorded
    assert topology.served_by("worker-gpu", flow_run)
    report = _report(parameters)
    assert report["status"] == "error"
    logged = next(s for s in report["stages"] if s["name"] == "log-mlflow")
    kept_at = Path(report["workdir"]) / "report.json"
    assert logged["status"] == "error"
    assert f"could not log the results to MLflow at {topology.tracking_uri}" in logged["message"]
    assert f"the report is kept on disk at {kept_at}" in logged["message"]
    assert "Max retries exceeded" in logged["message"]  # MLflow's own bounded retries, then the failure
    assert json.loads(kept_at.read_text()) == report
    [task] = [t for t in topology.task_runs(flow_run) if t.name.startswith("log-mlflow")]
    assert task.state.type.value == "FAILED" and str(kept_at) in task.state.message  # what the UI shows


def test_env_example_bounds_mlflow_retries_and_sets_the_heartbeat_the_automation_expects():
    settings = compose.read_env_file()
    assert int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 5
    automation = yaml.safe_load((compose.DOCKER / "automations.yaml").read_text())["automations"][0]
    assert automation["trigger"]["within"] >= 3 * int(settings["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])

"""The event path end to end, as docker/compose.yaml runs it on loopback, with MLflow's webhook settings as it ships.

PostgreSQL, MLflow on it (private addresses allowed, the relay's CA trusted through relay-tls's certifi copy),
the Prefect server with its triggers service, prefect-setup's deployments from prefect.yaml, one worker, the
relay on HTTPS with the certificate relay-tls made, and webhook-setup's `modelgate webhook register && test`.
A registry version is validated once through the relay; a replay starts nothing; the schedule catches what
the relay missed while it was down.
"""

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.schedules import IntervalSchedule

from modelgate.service.relay import expected_signature
from modelgate.service.webhooks import WEBHOOK_NAME
from tests.service.test_topology import needs_postgres
from tests.topology import compose
from tests.topology.processes import wait_until
from tests.topology.stack import (
    EVENT_SERVICES,
    VALIDATE_DEPLOYMENT,
    run_parameters,
)
from tests.tracking.test_registry import _register

pytestmark = [pytest.mark.slow, needs_postgres]

MODEL = "evented"
SCHEDULED_DEPLOYMENT = "validate-new-versions/validate-new-versions"


def _deployment_id(topology, name):
    with topology.client() as client:
        return client.read_deployment_by_name(name).id


def _watch_quietly(topology, output):
    """What an operator edits in prefect.yaml: the watched model and small validations; and the schedule paused,
    so that only the relay starts validations until the schedule's own test turns it back on."""
    request_fields = run_parameters(output, "unused", benchmark=False)
    del request_fields["source"]
    deployment_id = _deployment_id(topology, SCHEDULED_DEPLOYMENT)
    with topology.client() as client:
        parameters = {**client.read_deployment(deployment_id).parameters, "model_names": [MODEL],
                      "request_fields": request_fields}
        client.update_deployment(deployment_id, DeploymentUpdate(parameters=parameters))
        [schedule] = client.read_deployment_schedules(deployment_id)
        client.update_deployment_schedule(deployment_id, schedule.id, active=False)


def _take_the_event_path_down(topology):
    """As this module found the stack: the schedule paused (its runs yet to start deleted with it), the relay
    stopped and MLflow's webhook to it deleted."""
    deployment_id = _deployment_id(topology, SCHEDULED_DEPLOYMENT)
    with topology.client() as client:
        [schedule] = client.read_deployment_schedules(deployment_id)
        client.update_deployment_schedule(deployment_id, schedule.id, active=False)
    topology.services["relay"].stop()
    client = MlflowClient(topology.tracking_uri)
    for webhook in client.list_webhooks():
        if webhook.name == WEBHOOK_NAME:
            client.delete_webhook(webhook.webhook_id)


@pytest.fixture(scope="module")
def topology(stack, tmp_path_factory):
    stack.restore("worker")
    _watch_quietly(stack, tmp_path_factory.mktemp("events") / "validations")
    try:
        stack.start_relay()
        stack.register_webhook()
        yield stack
    finally:
        _take_the_event_path_down(stack)


def _flow_runs(topology, deployment_name, key, value):
    deployment_id = _deployment_id(topology, deployment_name)
    with topology.client() as client:
        runs = client.read_flow_runs(limit=200)
    return [run for run in runs if run.deployment_id == deployment_id and key(run.parameters) == value]


def _validations(topology, source):
    return _flow_runs(topology, VALIDATE_DEPLOYMENT, lambda parameters: parameters["request"]["source"], source)


def _relayed_launches(topology, source):
    return _flow_runs(topology, SCHEDULED_DEPLOYMENT, lambda parameters: parameters.get("version"), source)


def _verdict(topology, version, timeout_s=420):
    """The version once the validation launched for it has ended: tags, description and alias all written."""
    client = MlflowClient(topology.tracking_uri)
    claimed = wait_until(lambda: client.get_model_version(MODEL, version).tags.get("modelgate.claim"), timeout_s,
                         f"a validation launched for {MODEL}/{version}", poll_s=2, diagnose=topology.logs)
    topology.wait_until_final(claimed, timeout_s)
    return client.get_model_version(MODEL, version)


def _signed(topology, version, timestamp=None):
    """A delivery as MLflow signs it, with the secret of docker/.env."""
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "now",
                       "data": {"name": MODEL, "version": version, "tags": {}}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(timestamp or time.time()))
    secret = compose.environment(topology.model, "relay")["MODELGATE_WEBHOOK_SECRET"]
    return {"content": body, "headers": {
        "Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": expected_signature(secret, delivery, stamp, body)}}


def _post(topology, delivery):
    return httpx.post(topology.relay_url, verify=topology.relay_client_tls(), timeout=30, **delivery)


def _webhook_test(topology):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run([sys.executable, "-m", "modelgate.service.cli", "webhook", "test", "--tracking-uri",
                           topology.tracking_uri], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def first_version(topology, model_dirs):
    """A SavedModel registered as a training pipeline would, and its verdict once the event path gave one."""
    version = _register(topology.tracking_uri, MODEL, model_dirs["keras_export"])
    return version, _verdict(topology, version)


def test_the_compose_event_services_are_run_as_compose_runs_them(topology):
    for name in EVENT_SERVICES:
        assert compose.command(topology.model, name) in topology.commands_run, name


def test_a_new_registry_version_is_validated_once_through_the_relay(topology, first_version):
    version, judged = first_version
    source = f"models:/{MODEL}/{version}"
    assert judged.tags["modelgate.status"] == "passed", judged.tags
    assert "modelgate: **PASSED**" in judged.description and judged.tags["modelgate.run_id"]
    client = MlflowClient(topology.tracking_uri)
    assert str(client.get_model_version_by_alias(MODEL, "validated").version) == version
    [validation] = _validations(topology, source)
    assert validation.state.type.value == "COMPLETED"
    assert judged.tags["modelgate.claim"] == str(validation.id)  # launched under the schedule's key
    relayed = _relayed_launches(topology, source)  # MLflow's one delivery, through the trigger
    launches = _flow_runs(topology, SCHEDULED_DEPLOYMENT, lambda parameters: True, True)
    assert len(relayed) == 1, [(run.name, run.parameters, run.created_by) for run in launches]
    assert relayed[0].state.type.value == "COMPLETED"


def test_a_replayed_delivery_starts_nothing_and_a_new_one_no_second_validation(topology, first_version):
    version, _ = first_version
    source = f"models:/{MODEL}/{version}"
    delivery = _signed(topology, version)
    assert _post(topology, delivery).status_code == 202
    wait_until(lambda: len(_relayed_launches(topology, source)) == 2, 120, "the second delivery's launch run",
               diagnose=topology.logs)
    replay = _post(topology, delivery)
    assert replay.status_code == 200 and "already relayed" in replay.json()["message"]
    # A fresh delivery after the replay: once its run exists, a run the replay had started would exist too.
    assert _post(topology, _signed(topology, version)).status_code == 202
    wait_until(lambda: len(_relayed_launches(topology, source)) == 3, 120, "the sentinel delivery's launch run",
               diagnose=topology.logs)
    runs = _relayed_launches(topology, source)
    assert len(runs) == 3
    for run in runs:
        topology.wait_until_final(str(run.id), timeout_s=180)
    assert len(_validations(topology, source)) == 1  # the version was judged: nothing launched again


def test_unsigned_stale_or_tampered_requests_are_refused_and_the_relay_keeps_serving(topology, first_version):
    version, _ = first_version
    unsigned = _signed(topology, version)
    del unsigned["headers"]["X-MLflow-Signature"]
    stale = _signed(topology, version, timestamp=time.time() - 3600)
    tampered = _signed(topology, version)
    tampered["content"] = tampered["content"].replace(f'"{version}"'.encode(), b'"999"')
    for delivery in (unsigned, stale, tampered):
        response = _post(topology, delivery)
        assert response.status_code == 401, response.text
    assert topology.services["relay"].running()
    topology.register_webhook()  # webhook-setup again: updated in place, and MLflow's test event verified
    webhooks = [w for w in MlflowClient(topology.tracking_uri).list_webhooks() if w.name == WEBHOOK_NAME]
    assert len(webhooks) == 1 and webhooks[0].url == topology.relay_url


def _tick_soon_and_every_minute(topology):
    """The schedule turned back on, ticking every minute from a few seconds from now: the same ticks as a cron
    of every minute, without waiting for the next whole minute. Then the deployment touched (its parameters
    written back unchanged), so that Prefect's scheduler service for recently updated deployments, which loops
    every 5 s, inserts the runs, not its main loop, which comes round once a minute."""
    deployment_id = _deployment_id(topology, SCHEDULED_DEPLOYMENT)
    first_tick = datetime.now(UTC) + timedelta(seconds=15)
    with topology.client() as client:
        [schedule] = client.read_deployment_schedules(deployment_id)
        client.update_deployment_schedule(deployment_id, schedule.id, active=True, schedule=IntervalSchedule(
            interval=timedelta(minutes=1), anchor_date=first_tick, timezone="UTC"))
        parameters = client.read_deployment(deployment_id).parameters
        client.update_deployment(deployment_id, DeploymentUpdate(parameters=parameters))


# The real scheduler service makes this run (Prefect 3.8.8's fails on every loop with SQLAlchemy 2.1, hence
# the pin below 2.1 in pyproject.toml).
def test_with_the_relay_down_the_next_schedule_tick_validates_the_version(topology, model_dirs, first_version):
    topology.services["relay"].stop()
    tested = _webhook_test(topology)
    assert tested.returncode == 1 and "could not deliver" in tested.stderr, tested.stderr

    registered_at = time.monotonic()
    version = _register(topology.tracking_uri, MODEL, model_dirs["nan_outputs"])
    source = f"models:/{MODEL}/{version}"
    wait_until(lambda: f"Failed to send webhook to {topology.relay_url}" in topology.services["mlflow"].tail(20000),
               120, "MLflow giving up on the delivery", diagnose=topology.logs)
    assert _validations(topology, source) == []  # the event is lost

    earlier = {run.id for run in _relayed_launches(topology, None)}  # ticks before this test's, if any
    _tick_soon_and_every_minute(topology)
    wait_until(lambda: [run for run in _relayed_launches(topology, None) if run.id not in earlier], 150,
               "a flow run of the schedule (it has no version)",
               diagnose=lambda: topology.services["prefect-server"].tail())
    judged = _verdict(topology, version)
    delay = timedelta(seconds=round(time.monotonic() - registered_at))
    print(f"\nrelay down: {source} registered, judged by the next tick (every minute) {delay} later")
    assert judged.tags["modelgate.status"] == "failed" and "finite_outputs" in judged.tags["modelgate.failed_checks"]
    [validation] = _validations(topology, source)
    assert judged.tags["modelgate.claim"] == str(validation.id)
    assert _relayed_launches(topology, source) == []

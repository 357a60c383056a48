"""modelgate relay: signed MLflow webhooks become Prefect events; anything else is turned away."""

import json
import threading
import time
import uuid

import httpx
import pytest
from prefect.client.orchestration import get_client

from modelgate.relay import EVENT_NAME, expected_signature, make_server
from tests.topology.processes import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
SECRET = "s3cret"


@pytest.fixture
def relay_url():
    server = make_server(SECRET, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _post(url, payload, secret=SECRET, timestamp=None, sign=True):
    body = json.dumps(payload)
    delivery, stamp = str(uuid.uuid4()), str(int(timestamp or time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp}
    if sign:
        headers["X-MLflow-Signature"] = expected_signature(secret, delivery, stamp, body.encode())
    return httpx.post(url, content=body, headers=headers, timeout=30)


CREATED = {"entity": "model_version", "action": "created", "timestamp": "now",
           "data": {"name": "relayed", "version": "7", "source": "x", "tags": {}}}


def _events_named(name):
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter", json={"filter": {"event": {"name": [name]}}})
    return response.json()["events"]


def test_a_signed_model_version_created_becomes_a_prefect_event(relay_url):
    response = _post(relay_url, CREATED)
    assert response.status_code == 202, response.text
    events = wait_until(lambda: _events_named(EVENT_NAME), 30, "the relay's event reaching the Prefect server")
    assert events[0]["resource"]["mlflow.model.version"] == "7"
    assert events[0]["payload"]["source"] == "models:/relayed/7"


@pytest.mark.parametrize(
    "case, status",
    [("unsigned", 401), ("wrong secret", 401), ("stale", 401), ("malformed", 400), ("other event", 400)],
)
def test_anything_unsigned_stale_or_malformed_is_rejected(relay_url, case, status):
    payload = {"unexpected": True} if case == "malformed" else (
        {**CREATED, "action": "deleted"} if case == "other event" else CREATED)
    response = _post(relay_url, payload, sign=case != "unsigned", secret="nope" if case == "wrong secret" else SECRET,
                     timestamp=time.time() - 3600 if case == "stale" else None)
    assert response.status_code == status, response.text
    assert response.json()["message"]


def test_the_relay_refuses_to_start_without_a_secret():
    with pytest.raises(ValueError, match="secret"):
        make_server("")

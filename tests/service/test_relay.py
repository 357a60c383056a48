"""modelgate relay: signed MLflow webhooks become Prefect events, once each; anything else is turned away."""

import json
import socket
import ssl
import threading
import time
import uuid

import httpx
import pytest
from mlflow.tracking import MlflowClient
from mlflow.webhooks.types import ModelVersionCreatedPayload
from prefect.client.orchestration import get_client

from modelgate.service.cli import main
from modelgate.service.relay import (
    EVENT_NAME,
    MAX_SKEW_S,
    DeliveryLog,
    expected_signature,
    make_server,
)
from modelgate.service.relay_tls import make_relay_tls
from tests.topology.processes import wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")
SECRET = "s3cret"


@pytest.fixture(scope="module")
def relay_tls(tmp_path_factory):
    tls, _ = make_relay_tls(tmp_path_factory.mktemp("relay-tls"), ["127.0.0.1"])
    return tls


@pytest.fixture
def relay_url(relay_tls):
    server = make_server(SECRET, port=0, certfile=str(relay_tls.certfile), keyfile=str(relay_tls.keyfile))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay_client(relay_tls):
    """A client trusting the relay's CA and nothing else: the certificate must verify for 127.0.0.1."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(relay_tls.ca)), timeout=30) as client:
        yield client


def _delivery(payload, secret=SECRET, timestamp=None, sign=True):
    body = json.dumps(payload)
    delivery, stamp = str(uuid.uuid4()), str(int(timestamp or time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp}
    if sign:
        headers["X-MLflow-Signature"] = expected_signature(secret, delivery, stamp, body.encode())
    return {"content": body, "headers": headers}


def _created(version):
    return {"entity": "model_version", "action": "created", "timestamp": "now",
            "data": {"name": "relayed", "version": version, "source": "x", "tags": {}}}


def _events_named(name):
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter", json={"filter": {"event": {"name": [name]}}})
    return response.json()["events"]


def _relayed(delivery_id):
    return [e for e in _events_named(EVENT_NAME) if e["payload"]["delivery_id"] == delivery_id]


def test_a_signed_model_version_created_becomes_a_prefect_event(relay_url, relay_client):
    delivery = _delivery(_created("7"))
    response = relay_client.post(relay_url, **delivery)
    assert response.status_code == 202, response.text
    delivery_id = delivery["headers"]["X-MLflow-Delivery-Id"]
    [event] = wait_until(lambda: _relayed(delivery_id), 30, "the relay's event reaching the Prefect server")
    assert event["resource"]["mlflow.model.version"] == "7"
    assert event["payload"]["source"] == "models:/relayed/7"


def test_a_replayed_delivery_and_mlflows_test_event_are_answered_without_an_event(relay_url, relay_client):
    replayed = _delivery(_created("8"))
    assert relay_client.post(relay_url, **replayed).status_code == 202
    again = relay_client.post(relay_url, **replayed)
    assert again.status_code == 200 and "already relayed" in again.json()["message"]
    test_event = _delivery({"entity": "model_version", "action": "created", "timestamp": "now",
                            "data": ModelVersionCreatedPayload.example()})
    answer = relay_client.post(relay_url, **test_event)
    assert answer.status_code == 200 and answer.json()["test_event"] is True
    # Events reach the server in the order they were emitted: once the sentinel is there, nothing else is coming.
    sentinel = _delivery(_created("9"))
    assert relay_client.post(relay_url, **sentinel).status_code == 202
    wait_until(lambda: _relayed(sentinel["headers"]["X-MLflow-Delivery-Id"]), 30, "the sentinel's event")
    assert len(_relayed(replayed["headers"]["X-MLflow-Delivery-Id"])) == 1
    assert _relayed(test_event["headers"]["X-MLflow-Delivery-Id"]) == []


@pytest.mark.parametrize(
    "case, status",
    [("unsigned", 401), ("wrong secret", 401), ("stale", 401), ("tampered", 401), ("malformed", 400),
     ("other event", 400)],
)
def test_anything_unsigned_stale_tampered_or_malformed_is_rejected(relay_url, relay_client, case, status):
    payload = {"unexpected": True} if case == "malformed" else (
        {**_created("7"), "action": "deleted"} if case == "other event" else _created("7"))
    delivery = _delivery(payload, sign=case != "unsigned", secret="nope" if case == "wrong secret" else SECRET,
                         timestamp=time.time() - 3600 if case == "stale" else None)
    if case == "tampered":
        delivery["content"] = delivery["content"].replace('"7"', '"70"')
    response = relay_client.post(relay_url, **delivery)
    assert response.status_code == status, response.text
    assert response.json()["message"]


def test_the_relay_keeps_serving_past_stalled_and_plain_http_clients(relay_url, relay_client):
    host, port = relay_url.removeprefix("https://").rstrip("/").split(":")
    with socket.create_connection((host, int(port))):  # connected, never a TLS handshake
        with pytest.raises(httpx.HTTPError):
            httpx.post(relay_url.replace("https", "http"), **_delivery(_created("7")), timeout=10)
        assert relay_client.get(f"{relay_url}health").status_code == 200
        assert relay_client.post(relay_url, **_delivery(_created("7"), sign=False)).status_code == 401


def test_a_delivery_id_is_remembered_as_long_as_its_timestamp_would_be_accepted():
    log, now = DeliveryLog(), 1_000_000.0
    assert log.first_time("early", sent_at=now, now=now)
    assert log.first_time("late", sent_at=now + MAX_SKEW_S, now=now)  # MLflow's clock ahead of ours
    assert not log.first_time("early", sent_at=now, now=now + MAX_SKEW_S)
    assert not log.first_time("late", sent_at=now + MAX_SKEW_S, now=now + 2 * MAX_SKEW_S)
    assert log.first_time("early", sent_at=now, now=now + MAX_SKEW_S + 1)  # by then verify() calls it stale


def test_the_certificate_is_kept_while_it_fits_and_reissued_for_other_names(tmp_path):
    tls, issued = make_relay_tls(tmp_path, ["relay", "localhost"])
    certificate = tls.certfile.read_bytes()
    assert issued and make_relay_tls(tmp_path, ["localhost", "relay"]) == (tls, False)
    assert tls.certfile.read_bytes() == certificate
    assert tls.ca.read_bytes() in (tls.trust / "certifi" / "cacert.pem").read_bytes()
    assert tls.keyfile.stat().st_mode & 0o077 == 0
    assert make_relay_tls(tmp_path, ["relay"])[1] is True
    assert tls.certfile.read_bytes() != certificate


def test_the_relay_refuses_to_start_without_a_secret():
    with pytest.raises(ValueError, match="secret"):
        make_server("")


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_webhook_register_takes_mlflows_url_rules_and_is_idempotent(capsys, monkeypatch, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a store of its own: its webhook fires on no one else's versions
    monkeypatch.setenv("MODELGATE_WEBHOOK_SECRET", SECRET)
    code, _, err = _cli(capsys, "webhook", "register", "--tracking-uri", tracking_uri, "--url", "http://relay:8765/")
    # (MLflow's own log lines of creating the store come first on stderr)
    assert code == 2 and "modelgate: error: webhook register: Invalid webhook URL scheme: 'http'" in err
    assert "Traceback" not in err
    code, _, err = _cli(capsys, "webhook", "register", "--tracking-uri", tracking_uri, "--url", "https://127.0.0.1:1/")
    assert code == 2 and "error" in err  # MLflow's SSRF guard: a loopback address needs its private-IP setting
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    for done in ("created", "updated"):
        code, out, _ = _cli(capsys, "webhook", "register", "--tracking-uri", tracking_uri, "--url", "https://127.0.0.1:1/")
        assert code == 0 and out.startswith(f"{done} MLflow webhook modelgate-relay"), out
    assert [w.name for w in MlflowClient(tracking_uri).list_webhooks()].count("modelgate-relay") == 1


def test_bad_relay_and_webhook_options_are_one_line_errors(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELGATE_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for argv, reason in [
        (["relay", "--port", "0", "--certfile", str(tmp_path / "missing.pem")], "relay: [Errno 2]"),
        (["relay", "--port", "0", "--keyfile", str(tmp_path / "key.pem")], "relay: --keyfile needs --certfile"),
        (["webhook", "register", "--url", "https://relay:8765/"], "webhook: --tracking-uri"),
        (["webhook", "certificate", "--hostname", "relay"], "webhook certificate: --out"),
    ]:
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and err.startswith(f"modelgate: error: {reason}"), err

"""`modelgate relay`: MLflow registry webhooks in, Prefect events out.

MLflow 3 (database stores only, experimental) can POST `model_version.created` to a URL, signed with
HMAC-SHA256 over "<delivery id>.<timestamp>.<body>" (header X-MLflow-Signature: "v1,<base64>"). The relay
verifies that signature and the timestamp's freshness, rejects anything else, and emits the Prefect event
`modelgate.model-version.created`; the validate-new-versions deployment's trigger turns it into a launch under
the schedule's idempotency key, so the event and the schedule never validate one version twice.

MLflow accepts only https webhook URLs by default: `make_server(certfile=...)` serves TLS. A signed delivery
stays acceptable for MAX_SKEW_S either side of its timestamp, so its id is remembered that long and a replay
is answered without emitting again. MLflow's own test event (`MlflowClient.test_webhook`) is verified and
answered, never emitted.

Limits: MLflow delivers each event once with a few retries and keeps no queue, so an event sent while the
relay is down is lost; the validate-new-versions schedule remains the fallback that catches it. Inbound
webhooks straight into Prefect are a Prefect Cloud feature, hence this relay for self-hosted servers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mlflow.webhooks.types import ModelVersionCreatedPayload
from prefect.events import emit_event

logger = logging.getLogger("modelgate.relay")

EVENT_NAME = "modelgate.model-version.created"
MAX_SKEW_S = 300
MAX_BODY_BYTES = 1 << 20
# A client that connects and then stalls (no TLS handshake, no request) is dropped after this long.
CONNECTION_TIMEOUT_S = 30


class Rejected(Exception):
    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


def expected_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers, body: bytes, now: float | None = None) -> dict:
    """The webhook's JSON payload, once signature, freshness and shape are right; Rejected otherwise."""
    signature = headers.get("X-MLflow-Signature")
    delivery_id = headers.get("X-MLflow-Delivery-Id")
    timestamp = headers.get("X-MLflow-Timestamp")
    if not (signature and delivery_id and timestamp):
        raise Rejected(HTTPStatus.UNAUTHORIZED, "unsigned: X-MLflow-Signature, -Delivery-Id and -Timestamp are required")
    if not hmac.compare_digest(signature, expected_signature(secret, delivery_id, timestamp, body)):
        raise Rejected(HTTPStatus.UNAUTHORIZED, "bad signature")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise Rejected(HTTPStatus.BAD_REQUEST, "timestamp is not an integer") from None
    skew = abs((now or time.time()) - sent_at)
    if skew > MAX_SKEW_S:
        raise Rejected(HTTPStatus.UNAUTHORIZED, f"timestamp {skew:.0f} s away from now: a replay, or clocks apart")
    try:
        payload = json.loads(body)
        name, version = str(payload["data"]["name"]), str(payload["data"]["version"])
    except (ValueError, KeyError, TypeError):
        raise Rejected(HTTPStatus.BAD_REQUEST, "malformed payload: expected data.name and data.version") from None
    if (payload.get("entity"), payload.get("action")) != ("model_version", "created"):
        raise Rejected(HTTPStatus.BAD_REQUEST, f"unexpected event {payload.get('entity')}.{payload.get('action')}")
    return {"name": name, "version": version, "delivery_id": delivery_id, "sent_at": sent_at,
            "test_event": payload["data"] == ModelVersionCreatedPayload.example()}


class DeliveryLog:
    """Delivery ids already relayed, each kept for as long as verify() would accept its timestamp."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, sent_at: float, now: float | None = None) -> bool:
        now = now or time.time()
        with self._lock:
            self._expiry = {seen: until for seen, until in self._expiry.items() if until >= now}
            if delivery_id in self._expiry:
                return False
            self._expiry[delivery_id] = max(now, sent_at) + MAX_SKEW_S
            return True


def emit(verified: dict) -> None:
    source = f"models:/{verified['name']}/{verified['version']}"
    emit_event(
        event=EVENT_NAME,
        resource={
            "prefect.resource.id": f"mlflow.model-version.{verified['name']}.{verified['version']}",
            "mlflow.model.name": verified["name"],
            "mlflow.model.version": verified["version"],
        },
        payload={"source": source, "delivery_id": verified["delivery_id"]},
    )


def make_handler(secret: str, deliveries: DeliveryLog):
    class WebhookHandler(BaseHTTPRequestHandler):
        timeout = CONNECTION_TIMEOUT_S

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(HTTPStatus.OK, "relaying")
            else:
                self._reply(HTTPStatus.NOT_FOUND, "POST MLflow's webhooks to /; GET /health")

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY_BYTES:
                    raise Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload too large")
                verified = verify(secret, self.headers, self.rfile.read(length))
            except Rejected as rejected:
                logger.warning("rejected webhook from %s: %s", self.client_address[0], rejected)
                self._reply(rejected.status, str(rejected))
                return
            if verified["test_event"]:
                self._reply(HTTPStatus.OK, "MLflow's test event verified; nothing emitted", test_event=True)
            elif not deliveries.first_time(verified["delivery_id"], verified["sent_at"]):
                self._reply(HTTPStatus.OK, f"delivery {verified['delivery_id']} already relayed; nothing emitted")
            else:
                emit(verified)
                self._reply(HTTPStatus.ACCEPTED, f"models:/{verified['name']}/{verified['version']} queued")

        def _reply(self, status: HTTPStatus, text: str, **fields) -> None:
            body = json.dumps({"status": status.value, "message": text, **fields}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            logger.info(format, *args)

    return WebhookHandler


class RelayServer(ThreadingHTTPServer):
    """TLS is negotiated in each connection's own thread, so a client that never finishes its handshake holds
    up that thread alone, not the accept loop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler, tls: ssl.SSLContext | None):
        super().__init__(address, handler)
        self.tls = tls

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}/"

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT_S)
        with self.tls.wrap_socket(request, server_side=True) as tls_request:
            super().finish_request(tls_request, client_address)

    def handle_error(self, request, client_address) -> None:
        logger.warning("connection from %s dropped: %s", client_address[0], sys.exc_info()[1])


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def make_server(secret: str, host: str = "127.0.0.1", port: int = 8765,
                certfile: str | None = None, keyfile: str | None = None) -> RelayServer:
    if not secret:
        raise ValueError("the relay needs the webhook's secret: unsigned webhooks are never accepted")
    if keyfile and not certfile:
        raise ValueError("--keyfile needs --certfile")
    tls = tls_context(certfile, keyfile) if certfile else None
    return RelayServer((host, port), make_handler(secret, DeliveryLog()), tls)

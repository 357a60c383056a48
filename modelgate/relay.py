"""`modelgate relay`: MLflow registry webhooks in, Prefect events out.

MLflow 3 (database stores only, experimental) can POST `model_version.created` to a URL, signed with
HMAC-SHA256 over "<delivery id>.<timestamp>.<body>" (header X-MLflow-Signature: "v1,<base64>"). The relay
verifies that signature and the timestamp's freshness, rejects anything else, and emits the Prefect event
`modelgate.model-version.created`; the validate-savedmodel deployment's trigger turns it into a flow run.

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
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefect.events import emit_event

logger = logging.getLogger("modelgate.relay")

EVENT_NAME = "modelgate.model-version.created"
MAX_SKEW_S = 300
MAX_BODY_BYTES = 1 << 20


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
        skew = abs((now or time.time()) - int(timestamp))
    except ValueError:
        raise Rejected(HTTPStatus.BAD_REQUEST, "timestamp is not an integer") from None
    if skew > MAX_SKEW_S:
        raise Rejected(HTTPStatus.UNAUTHORIZED, f"timestamp {skew:.0f} s away from now: a replay, or clocks apart")
    try:
        payload = json.loads(body)
        name, version = str(payload["data"]["name"]), str(payload["data"]["version"])
    except (ValueError, KeyError, TypeError):
        raise Rejected(HTTPStatus.BAD_REQUEST, "malformed payload: expected data.name and data.version") from None
    if (payload.get("entity"), payload.get("action")) != ("model_version", "created"):
        raise Rejected(HTTPStatus.BAD_REQUEST, f"unexpected event {payload.get('entity')}.{payload.get('action')}")
    return {"name": name, "version": version, "delivery_id": delivery_id}


def emit(verified: dict) -> None:
    emit_event(
        event=EVENT_NAME,
        resource={
            "prefect.resource.id": f"mlflow.model-version.{verified['name']}.{verified['version']}",
            "mlflow.model.name": verified["name"],
            "mlflow.model.version": verified["version"],
        },
        payload={"source": f"models:/{verified['name']}/{verified['version']}",
                 "delivery_id": verified["delivery_id"]},
    )


def make_handler(secret: str):
    class WebhookHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY_BYTES:
                    raise Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload too large")
                verified = verify(secret, self.headers, self.rfile.read(length))
                emit(verified)
            except Rejected as rejected:
                logger.warning("rejected webhook from %s: %s", self.client_address[0], rejected)
                self._reply(rejected.status, str(rejected))
                return
            self._reply(HTTPStatus.ACCEPTED, f"models:/{verified['name']}/{verified['version']} queued")

        def _reply(self, status: HTTPStatus, text: str) -> None:
            body = json.dumps({"status": status.value, "message": text}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
            logger.info(format, *args)

    return WebhookHandler


def make_server(secret: str, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    if not secret:
        raise ValueError("the relay needs the webhook's secret: unsigned webhooks are never accepted")
    return ThreadingHTTPServer((host, port), make_handler(secret))

"""The MLflow webhook that feeds `modelgate relay`: registered once per tracking server, and tested end to end.

MLflow checks the URL on its server: https only unless MLFLOW_WEBHOOK_ALLOWED_SCHEMES says otherwise, and a
host on a private address only with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true.
"""

from __future__ import annotations

import json

from mlflow.entities.webhook import Webhook
from mlflow.tracking import MlflowClient

WEBHOOK_NAME = "modelgate-relay"
EVENTS = ["model_version.created"]
DESCRIPTION = "New registry versions, to modelgate relay (a Prefect event that starts their validation)"


class WebhookError(Exception):
    pass


def find(client: MlflowClient, name: str) -> Webhook | None:
    page_token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        match = next((webhook for webhook in page if webhook.name == name), None)
        if match or not page.token:
            return match
        page_token = page.token


def register(client: MlflowClient, url: str, secret: str, name: str = WEBHOOK_NAME) -> tuple[str, Webhook]:
    """Create the webhook, or bring the one of that name to this URL, events and secret; ("created" | "updated", it).

    MLflow never returns a stored secret, so an existing webhook is always updated rather than compared."""
    if not secret:
        raise WebhookError("the webhook needs a secret: the relay accepts signed deliveries only")
    existing = find(client, name)
    if existing is None:
        return "created", client.create_webhook(name, url, events=EVENTS, description=DESCRIPTION, secret=secret)
    updated = client.update_webhook(existing.webhook_id, url=url, events=EVENTS, description=DESCRIPTION,
                                    secret=secret, status="ACTIVE")
    return "updated", updated


def test(client: MlflowClient, name: str = WEBHOOK_NAME) -> tuple[bool, str]:
    """MLflow's server sends its test event to the webhook: whether the relay verified it, and what happened."""
    webhook = find(client, name)
    if webhook is None:
        raise WebhookError(f"no webhook named {name}: run `modelgate webhook register` first")
    result = client.test_webhook(webhook.webhook_id)
    if result.error_message:
        return False, f"MLflow could not deliver its test event to {webhook.url}: {result.error_message}"
    try:
        answer = json.loads(result.response_body or "")
    except ValueError:
        answer = None
    answer = answer if isinstance(answer, dict) else {}
    if result.response_status == 200 and answer.get("test_event") is True:
        return True, f"the relay at {webhook.url} verified MLflow's test event"
    said = answer.get("message") or (result.response_body or "")[:200]
    return False, f"{webhook.url} did not verify MLflow's test event: HTTP {result.response_status} {said}"

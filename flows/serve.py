"""Both deployments served from one process: a single-machine set-up with no work pool or worker."""

from __future__ import annotations

from prefect import serve
from prefect.events import DeploymentEventTrigger

from flows.new_versions import validate_new_versions
from flows.validate import validate_savedmodel
from modelgate.relay import EVENT_NAME

DEFAULT_CRON = "*/15 * * * *"
# A version announced by `modelgate relay` (an MLflow webhook) is launched at once, under the schedule's
# idempotency key (see modelgate/scheduling.py); the schedule catches the rest.
RELAYED_VERSION = DeploymentEventTrigger(
    expect={EVENT_NAME},
    parameters={"version": "{{ event.payload.source }}", "timeout_s": 0},
)


def serve_deployments(model_names: list[str], base_paths: list[str], request_fields: dict, cron: str = DEFAULT_CRON,
                      tracking_uri: str | None = None, limit: int = 2) -> None:
    """validate-savedmodel runs on demand (the UI's form); validate-new-versions on the cron schedule and for
    each version the relay announces, with the same settings."""
    schedule_parameters = {"model_names": model_names, "base_paths": base_paths, "request_fields": request_fields,
                           "tracking_uri": tracking_uri}
    serve(
        validate_savedmodel.to_deployment(name="validate-savedmodel"),
        validate_new_versions.to_deployment(
            name="validate-new-versions", cron=cron if model_names or base_paths else None,
            parameters=schedule_parameters, triggers=[RELAYED_VERSION],
        ),
        limit=limit,
    )

"""The scheduled side: find registry versions this validator has not judged, validate each as its own run.

The event side runs here too: `modelgate relay`'s event starts this flow for the version it announces, so
both launch through the same idempotency key and a version is validated once whoever sees it first.
"""

from typing import Annotated

from prefect import flow
from pydantic import Field

from modelgate.request import ValidationRequest, default_tracking_uri
from tasks.close_abandoned_runs import close_abandoned_runs
from tasks.find_new_versions import find_announced_version, find_new_versions
from tasks.launch_validation import launch_validation
from tasks.reverify_signed import reverify_signed_versions
from tasks.summarize_validations import summarize_validations

VALIDATE_DEPLOYMENT = "validate-savedmodel/validate-savedmodel"


@flow(name="validate-new-versions")
def validate_new_versions(
    model_names: Annotated[list[str], Field(title="Registered models", description="Names in the MLflow registry.")],
    base_paths: Annotated[list[str], Field(
        title="TF Serving base paths", description="Folders of numbered SavedModel versions (base/1, base/2, ...).",
    )] = [],  # noqa: B006 - Prefect copies parameters per run
    request_fields: Annotated[dict, Field(
        title="Validation settings",
        description="Validation request fields for every version; source and tracking URI are set here.",
    )] = {},  # noqa: B006 - Prefect copies parameters per run
    tracking_uri: Annotated[str | None, Field(
        title="MLflow tracking URI", description="Empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.",
    )] = None,
    deployment: Annotated[str, Field(
        title="Validation deployment", description="Deployment that validates one version; its workers share the load.",
    )] = VALIDATE_DEPLOYMENT,
    timeout_s: Annotated[float, Field(
        title="Wait (s)",
        description="How long to wait for the validations; 0 launches them and returns, so that a worker with one "
                    "slot does not hold it while the validations it launched wait for that slot.",
    )] = 3600,
    version: Annotated[str, Field(
        title="Announced version",
        description="Only this registry version (models:/NAME/VERSION), as `modelgate relay` announces it; "
                    "the watched models and base paths are then left to the schedule. Empty: those.",
    )] = "",
) -> list[dict[str, str]]:
    uri = tracking_uri or default_tracking_uri()
    settings = ValidationRequest(source="", **request_fields).mlflow  # keys of earlier releases read too
    experiment = settings.experiment_name
    close_abandoned_runs(uri, experiment)  # before anything is launched: a killed run of a version ended it
    if version:
        pending = find_announced_version(version, uri)
    else:
        pending = find_new_versions(model_names, base_paths, uri, experiment)
    launched = [(version, launch_validation(version, deployment, request_fields, uri)) for version in pending]
    if not version and settings.signing_key:
        # After the launches, which it must never hold up: what this validator signed, verified again.
        reverify_signed_versions(model_names, uri, settings.signing_key, settings.signing_certificate)
    return summarize_validations(launched, uri, experiment, timeout_s)

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from modelgate.request import ValidationRequest
from modelgate.service.scheduling import PendingVersion, claim
from modelgate.tracking.registry import registry_client


@task(name="launch-validation", cache_policy=NO_CACHE)
def launch_validation(pending: PendingVersion, deployment: str, request_fields: dict, tracking_uri: str) -> str:
    """One flow run of the validation deployment per version and attempt, whoever asks; returns its id."""
    request = ValidationRequest(**{**request_fields, "source": pending.source})
    # the schedule's own store, whatever the fields said
    request = request.model_copy(update={"mlflow": request.mlflow.model_copy(update={"tracking_uri": tracking_uri})})
    parameters = {"request": request.as_parameters()}
    flow_run = run_deployment(
        deployment, parameters=parameters, idempotency_key=pending.idempotency_key(), timeout=0, as_subflow=False
    )
    claim(registry_client(tracking_uri), pending, str(flow_run.id))
    return str(flow_run.id)

from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.scheduling import PendingVersion, pending_versions


@task(name="find-new-versions", cache_policy=NO_CACHE)
def find_new_versions(model_names: list[str], tracking_uri: str) -> list[PendingVersion]:
    """Versions of these registered models that this validator version has not judged yet."""
    return pending_versions(MlflowClient(tracking_uri, registry_uri=tracking_uri), model_names)

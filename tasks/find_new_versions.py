from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.service.scheduling import (
    PendingVersion,
    announced_pending,
    pending_base_path_versions,
    pending_versions,
)
from modelgate.tracking.registry import registry_client


@task(name="find-new-versions", cache_policy=NO_CACHE)
def find_new_versions(
    model_names: list[str], base_paths: list[str], tracking_uri: str, experiment_name: str
) -> list[PendingVersion]:
    """Versions of these registered models and TF Serving base paths that this validator has not judged."""
    client = registry_client(tracking_uri)
    return pending_versions(client, model_names) + pending_base_path_versions(client, base_paths, experiment_name)


@task(name="find-announced-version", cache_policy=NO_CACHE)
def find_announced_version(source: str, tracking_uri: str) -> list[PendingVersion]:
    """The version `modelgate relay` announced, unless this validator has judged it."""
    return announced_pending(registry_client(tracking_uri), source)

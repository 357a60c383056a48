from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.tracking.abandoned_runs import close_abandoned_runs as close_runs


@task(name="close-abandoned-runs", cache_policy=NO_CACHE)
def close_abandoned_runs(tracking_uri: str, experiment_name: str) -> dict[str, str]:
    """MLflow runs left RUNNING by a validation that was killed, closed as KILLED with the reason."""
    return close_runs(tracking_uri, experiment_name)

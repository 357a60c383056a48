from mlflow.tracking import MlflowClient
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.registry import TAG_PREFIX
from modelgate.scheduling import PendingVersion, wait_for_flow_runs


@task(name="summarize-validations", cache_policy=NO_CACHE)
def summarize_validations(
    launched: list[tuple[PendingVersion, str]], tracking_uri: str, timeout_s: float
) -> list[dict[str, str]]:
    """Wait for every launched validation, then one table: version, flow run, its state, the verdict."""
    states = wait_for_flow_runs([flow_run_id for _, flow_run_id in launched], timeout_s)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    rows = []
    for pending, flow_run_id in launched:
        tags = client.get_model_version(pending.version.name, pending.version.version).tags or {}
        rows.append({
            "version": pending.version.uri, "attempt": str(pending.attempt), "flow_run": flow_run_id,
            "flow_run_state": states.get(flow_run_id, "UNKNOWN"), "verdict": tags.get(TAG_PREFIX + "status", "none"),
        })
    create_table_artifact(
        key="new-versions", table=rows or [{"version": "none", "verdict": "no new versions"}],
        description=f"Versions validated in this tick ({len(rows)})",
    )
    return rows

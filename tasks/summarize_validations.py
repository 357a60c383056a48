from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.service.scheduling import PendingVersion, judged_sources, verdict, wait_for_flow_runs
from modelgate.tracking.registry import registry_client


@task(name="summarize-validations", cache_policy=NO_CACHE)
def summarize_validations(
    launched: list[tuple[PendingVersion, str]], tracking_uri: str, experiment_name: str, timeout_s: float
) -> list[dict[str, str]]:
    """Wait for every launched validation, then one table: version, flow run, its state, the verdict."""
    states = wait_for_flow_runs([flow_run_id for _, flow_run_id in launched], timeout_s)
    client = registry_client(tracking_uri)
    judged = judged_sources(client, experiment_name)
    rows = []
    for pending, flow_run_id in launched:
        rows.append({
            "version": pending.source, "attempt": str(pending.attempt), "flow_run": flow_run_id,
            "flow_run_state": states.get(flow_run_id, "UNKNOWN"), "verdict": verdict(client, pending, judged),
        })
    create_table_artifact(
        key="new-versions", table=rows or [{"version": "none", "verdict": "no new versions"}],
        description=f"Versions validated in this tick ({len(rows)})",
    )
    return rows

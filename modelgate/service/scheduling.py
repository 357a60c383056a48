"""Which registry versions still need this validator, and launching each exactly once.

Exactly once, even with two schedulers ticking at the same moment, or a tick and `modelgate relay`'s event for
the same version: every launch asks Prefect for a flow run with an idempotency key made of the version and the
validator version, and Prefect's server creates at most one flow run per key; the second asker gets the same
flow run back. A run that ended without writing a
verdict (crashed, cancelled) is retried under the next attempt's key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client

from modelgate.model.model_source import version_folders
from modelgate.tracking.registry import (
    MODELS_URI,
    TAG_PREFIX,
    RegistryVersion,
    validator_version,
)

VERDICTS = frozenset({"passed", "failed", "error"})
CLAIM_TAG = TAG_PREFIX + "claim"
ATTEMPT_TAG = TAG_PREFIX + "attempt"
FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True)
class PendingVersion:
    """A registry version (models:/NAME/VERSION) or a numbered folder of a TF Serving base path."""

    source: str
    attempt: int
    registry: RegistryVersion | None = None

    def idempotency_key(self) -> str:
        return f"modelgate/{validator_version()}/{self.source}/attempt-{self.attempt}"


def flow_run_state(flow_run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value if state else None


def pending_versions(client: MlflowClient, model_names: list[str]) -> list[PendingVersion]:
    """Versions with no verdict from this validator version, oldest first."""
    current = validator_version()
    pending = []
    for name in model_names:
        for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda mv: int(mv.version)):
            tags = mv.tags or {}
            if tags.get(TAG_PREFIX + "validator_version") == current and tags.get(TAG_PREFIX + "status") in VERDICTS:
                continue
            attempt = int(tags.get(ATTEMPT_TAG, "1"))
            claim = tags.get(CLAIM_TAG)
            if claim and flow_run_state(claim) in FINISHED_STATES:
                attempt += 1  # the claimed run ended without a verdict: try again under a new key
            version = RegistryVersion(name, str(mv.version))
            pending.append(PendingVersion(version.uri, attempt, version))
    return pending


def announced_pending(client: MlflowClient, source: str) -> list[PendingVersion]:
    """The registry version the relay announced (models:/NAME/VERSION), if it has no verdict yet."""
    match = MODELS_URI.match(source)
    return [pending for pending in pending_versions(client, [match["name"]]) if pending.source == source] if match else []


def judged_sources(client: MlflowClient, experiment_name: str) -> dict[str, str]:
    """Local sources this validator version has given a verdict, from the runs' tags: source -> verdict."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_PREFIX}validator_version` = '{validator_version()}'",
        max_results=50000,
    )
    return {
        run.data.tags[TAG_PREFIX + "source"]: run.data.tags[TAG_PREFIX + "status"]
        for run in sorted(runs, key=lambda run: run.info.start_time)
        if run.data.tags.get(TAG_PREFIX + "status") in VERDICTS and TAG_PREFIX + "source" in run.data.tags
    }


def pending_base_path_versions(client: MlflowClient, base_paths: list[str], experiment_name: str) -> list[PendingVersion]:
    """Numbered version folders of TF Serving base paths with no verdict from this validator version.

    A folder cannot carry tags, so the verdict is looked up among the MLflow runs; the idempotency key alone
    keeps two schedulers from validating a folder twice.
    """
    judged = judged_sources(client, experiment_name)
    pending = []
    for base in base_paths:
        folders = version_folders(Path(base).resolve())
        pending += [PendingVersion(str(folder), 1) for _, folder in folders if str(folder) not in judged]
    return pending


def claim(client: MlflowClient, pending: PendingVersion, flow_run_id: str) -> None:
    """Mark a registry version as being validated by this flow run (folders have nowhere to say it)."""
    if pending.registry is None:
        return
    version = pending.registry
    client.set_model_version_tag(version.name, version.version, CLAIM_TAG, flow_run_id)
    client.set_model_version_tag(version.name, version.version, ATTEMPT_TAG, str(pending.attempt))


def verdict(client: MlflowClient, pending: PendingVersion, judged: dict[str, str]) -> str:
    """judged is judged_sources(), looked up once for all the folders of a tick."""
    if pending.registry is not None:
        tags = client.get_model_version(pending.registry.name, pending.registry.version).tags or {}
        return tags.get(TAG_PREFIX + "status", "none")
    return judged.get(pending.source, "none")


def wait_for_flow_runs(flow_run_ids: list[str], timeout_s: float, poll_s: float = 2.0) -> dict[str, str]:
    """Final state of each flow run, or its state when the time ran out."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while True:
            for flow_run_id in flow_run_ids:
                state = client.read_flow_run(flow_run_id).state
                states[flow_run_id] = state.type.value if state else "UNKNOWN"
            done = all(s in FINISHED_STATES for s in states.values())
            if done or time.monotonic() > deadline:
                return states
            time.sleep(poll_s)

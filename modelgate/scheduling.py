"""Which registry versions still need this validator, and launching each exactly once.

Exactly once, even with two schedulers ticking at the same moment: every launch asks Prefect for a flow run
with an idempotency key made of the version and the validator version, and Prefect's server creates at most
one flow run per key; the second scheduler gets the same flow run back. A run that ended without writing a
verdict (crashed, cancelled) is retried under the next attempt's key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client

from modelgate.registry import TAG_PREFIX, RegistryVersion, validator_version

VERDICTS = frozenset({"passed", "failed", "error"})
CLAIM_TAG = TAG_PREFIX + "claim"
ATTEMPT_TAG = TAG_PREFIX + "attempt"


@dataclass(frozen=True)
class PendingVersion:
    version: RegistryVersion
    attempt: int

    def idempotency_key(self) -> str:
        return f"modelgate/{validator_version()}/{self.version.uri}/attempt-{self.attempt}"


def _flow_run_state(flow_run_id: str) -> str | None:
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
            if claim and _flow_run_state(claim) in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                attempt += 1  # the claimed run ended without a verdict: try again under a new key
            pending.append(PendingVersion(RegistryVersion(name, mv.version), attempt))
    return pending


def claim(client: MlflowClient, pending: PendingVersion, flow_run_id: str) -> None:
    client.set_model_version_tag(pending.version.name, pending.version.version, CLAIM_TAG, flow_run_id)
    client.set_model_version_tag(pending.version.name, pending.version.version, ATTEMPT_TAG, str(pending.attempt))


def wait_for_flow_runs(flow_run_ids: list[str], timeout_s: float, poll_s: float = 2.0) -> dict[str, str]:
    """Final state of each flow run, or its state when the time ran out."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while True:
            for flow_run_id in flow_run_ids:
                state = client.read_flow_run(flow_run_id).state
                states[flow_run_id] = state.type.value if state else "UNKNOWN"
            done = all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values())
            if done or time.monotonic() > deadline:
                return states
            time.sleep(poll_s)

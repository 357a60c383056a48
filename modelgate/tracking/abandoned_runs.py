"""MLflow runs whose validation died without closing them (SIGKILL, a worker lost), closed as KILLED.

A validation closes its MLflow run however it ends, unless its process is killed outright: then the run would
stay RUNNING for ever. Each run records the Prefect flow run and the process (host, pid, start time) that own it,
so a later look can tell: a flow run that has ended, or a process of this host that is gone, leaves the run
abandoned. A run owned by a live process, or by a process on another host whose flow run still looks alive
(or that this Prefect server does not know), is left alone: that cannot be told from here.
"""

from __future__ import annotations

import os
import socket

import psutil
from mlflow.tracking import MlflowClient
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from modelgate.service.scheduling import FINISHED_STATES, flow_run_state
from modelgate.tracking.registry import TAG_PREFIX

FLOW_RUN_TAG, HOST_TAG, PID_TAG, STARTED_TAG = (TAG_PREFIX + name for name in ("flow_run_id", "host", "pid", "pid_started"))
KILLED_REASON_TAG = TAG_PREFIX + "killed_reason"
START_TIME_SLACK_S = 1.0


def owner_tags() -> dict[str, str]:
    """Who owns a run being opened: this process, and the Prefect flow run it runs in, if any."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            STARTED_TAG: f"{psutil.Process().create_time():.2f}"}
    if flow_run.id:
        tags[FLOW_RUN_TAG] = flow_run.id
    return tags


def _process_gone(tags: dict[str, str]) -> bool:
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False
    try:
        started = psutil.Process(int(tags[PID_TAG])).create_time()
    except psutil.NoSuchProcess:
        return True
    return abs(started - float(tags.get(STARTED_TAG, started))) > START_TIME_SLACK_S  # the pid was reused


def why_abandoned(tags: dict[str, str]) -> str | None:
    flow_run_id = tags.get(FLOW_RUN_TAG)
    owner = f"Prefect flow run {flow_run_id}" if flow_run_id else "no Prefect flow run"
    if flow_run_id:
        try:
            state = flow_run_state(flow_run_id)
        except ObjectNotFound:
            owner = f"Prefect flow run {flow_run_id}, unknown to this Prefect server"
        else:
            if state in FINISHED_STATES:
                return f"its {owner} ended {state} without closing it"
    if _process_gone(tags):
        return f"its process {tags[PID_TAG]} on {tags[HOST_TAG]} is gone ({owner})"
    return None


def close_abandoned_runs(tracking_uri: str, experiment_name: str) -> dict[str, str]:
    """Close the experiment's abandoned modelgate runs as KILLED, the reason in a tag; returns run id -> reason."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    running = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_PREFIX}status` = 'running'",
        max_results=50000,
    )
    closed = {}
    for run in running:
        reason = why_abandoned(run.data.tags)
        if reason:
            client.set_tag(run.info.run_id, KILLED_REASON_TAG, reason)
            client.set_tag(run.info.run_id, TAG_PREFIX + "status", "killed")
            client.set_terminated(run.info.run_id, "KILLED")
            closed[run.info.run_id] = reason
    return closed

"""Both deployments served from one process: a single-machine set-up with no work pool or worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading

import psutil
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner

from flows.new_versions import validate_new_versions
from flows.validate import validate_savedmodel
from modelgate.execution.spare_keeper import keep_spares
from modelgate.service.relay import EVENT_NAME

DEFAULT_CRON = "*/15 * * * *"
SHUTDOWN_GRACE_S = 5.0
# A version announced by `modelgate relay` (an MLflow webhook) is launched at once, under the schedule's
# idempotency key (see modelgate/service/scheduling.py); the schedule catches the rest.
RELAYED_VERSION = DeploymentEventTrigger(
    expect={EVENT_NAME},
    parameters={"version": "{{ event.payload.source }}", "timeout_s": 0},
)


class _BoundedShutdownRunner(Runner):
    """Prefect's runner, whose stop on SIGTERM cannot outlast SHUTDOWN_GRACE_S. Its own handler calls stop(),
    which inside the running event loop only makes a coroutine nobody awaits, then exits: leaving the loop
    pauses the schedules on the Prefect server, retried for minutes when that server is gone."""

    def handle_sigterm(self, *args, **kwargs) -> None:
        threading.Thread(target=_exit_after_grace, daemon=True, name="modelgate-shutdown-deadline").start()
        sys.exit(0)


def _stop_children() -> None:
    """The flow runs still under way (and an ephemeral Prefect server) go with the process that started them."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=SHUTDOWN_GRACE_S / 2)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _exit_after_grace() -> None:
    threading.Event().wait(SHUTDOWN_GRACE_S)
    _stop_children()
    os._exit(0)


def serve_deployments(model_names: list[str], base_paths: list[str], request_fields: dict, cron: str = DEFAULT_CRON,
                      tracking_uri: str | None = None, limit: int = 2) -> None:
    """validate-savedmodel runs on demand (the UI's form); validate-new-versions on the cron schedule and for
    each version the relay announces, with the same settings. Each flow run is a process of its own: a spare keeper
    beside the runner warms up their model processes."""
    schedule_parameters = {"model_names": model_names, "base_paths": base_paths, "request_fields": request_fields,
                           "tracking_uri": tracking_uri}
    runner = _BoundedShutdownRunner(limit=limit)
    runner.add_deployment(validate_savedmodel.to_deployment(name="validate-savedmodel"))
    runner.add_deployment(validate_new_versions.to_deployment(
        name="validate-new-versions", cron=cron if model_names or base_paths else None,
        parameters=schedule_parameters, triggers=[RELAYED_VERSION],
    ))
    with keep_spares():
        try:
            asyncio.run(runner.start())
        except (KeyboardInterrupt, TerminationSignal):
            pass  # as prefect.serve does: a stop asked for
        finally:
            _stop_children()

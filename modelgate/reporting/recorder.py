"""The validation in progress: runs stages, keeps the report, and never loses what was found so far.

After every stage the report is written to disk and, once an MLflow run is open, uploaded to it, so a
crash at any point leaves the report as it stood, locally and in MLflow.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Completed, State

from modelgate.errors import ModelgateError, ModelRejected
from modelgate.execution import os_sandbox
from modelgate.report import STATUS_WHEN_BROKEN, Check, StageRecord, ValidationReport
from modelgate.reporting import atomic_write
from modelgate.reporting.environment import gather_environment
from modelgate.request import ValidationRequest
from modelgate.stages import StageResult
from modelgate.tracking import mlflow_store

if TYPE_CHECKING:
    from prefect import Task

logger = logging.getLogger("modelgate")


class Missing:
    """Stands in for the result of a stage that did not complete; stages given one are skipped.

    Whatever a flow reads off it (missing.model_dir) is missing too, so composition needs no special cases.
    """

    def __init__(self, stage: str, failed_check: str | None = None):
        self.stage = stage
        self.failed_check = failed_check  # set where what is missing is a model that passed this check

    def __getattr__(self, name: str) -> Missing:
        return self


def _needs(missing: list[Missing]) -> str:
    stages = sorted({value.stage for value in missing if value.failed_check is None})
    checks = sorted({value.failed_check for value in missing if value.failed_check})
    reasons = [f"needs stage {', '.join(stages)}, which did not complete"] if stages else []
    reasons += [f"needs a model that passes {check}, which failed" for check in checks]
    return "; ".join(reasons)


class StageListener(Protocol):
    def stage_started(self, name: str) -> None: ...

    def stage_finished(self, record: StageRecord) -> None: ...


_listeners: list[StageListener] = []


def add_listener(listener: StageListener) -> None:
    _listeners.append(listener)


def remove_listener(listener: StageListener) -> None:
    _listeners.remove(listener)


@task(name="skipped-stage", cache_policy=NO_CACHE)
def skipped_stage(reason: str) -> State:
    return Completed(name="Skipped", message=reason)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ModelgateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def new_workdir(output_dir: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(output_dir).resolve() / f"{stamp}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    return workdir


class ValidationRun:
    def __init__(self, request: ValidationRequest):
        self.request = request
        self.workdir = new_workdir(request.output.output_dir)
        self.report = ValidationReport(
            source=request.source, request=request, workdir=str(self.workdir),
            environment=gather_environment(),
        )
        self.sandbox = self._sandbox()
        self.report_file = self.workdir / "report.json"
        self.save()

    def __enter__(self) -> ValidationRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            # Interrupted (Ctrl-C, a cancelled flow run): the stage under way says so, and what is known stays.
            reason = describe_error(exc) if str(exc) else type(exc).__name__
            for record in self.report.stages:
                if record.status == "running":
                    record.status, record.message = "interrupted", f"interrupted: {reason}"
            self.report.stages.append(StageRecord(name="flow", status="error", message=reason))
            self.report.status = "error"
            self.save()
            if self.report.mlflow.run_id:
                try:
                    mlflow_store.close_run(self.report.mlflow, "error")
                except Exception:  # noqa: BLE001 - the original exception is the one to raise
                    logger.exception("could not close the MLflow run")

    def _sandbox(self) -> os_sandbox.OsSandbox | None:
        """The OS sandbox of this validation's model processes, recorded in the environment; a warning where
        the kernel cannot give one (or, with require_sandbox, the model stages refuse to run, see ModelProcess)."""
        request = self.request
        sources = [request.source, request.baseline, request.inputs.path]
        sandbox = os_sandbox.for_validation(sources, self.workdir, request.limits.require_sandbox)
        if sandbox is None:
            reason = os_sandbox.landlock_abi()[1]
            self.report.environment["sandbox"] = f"none ({reason})"
            self.report.checks.append(Check(name="os_sandbox", status="warning", message=(
                f"model code ran without an OS sandbox: {reason}; only the op scan and the time and memory limits "
                "stood in its way (--require-sandbox refuses to run it)")))
        else:
            self.report.environment.update(sandbox.record())
        return sandbox

    def save(self) -> None:
        text = self.report.model_dump_json(indent=2)
        atomic_write.write_text(self.report_file, text)
        atomic_write.write_text(self.request.output.report_path, text)
        if self.report.mlflow.run_id and self.report.status == "running":
            try:
                mlflow_store.upload_report(self.report.mlflow, self.report_file)
            except Exception as exc:  # noqa: BLE001 - the local report stands; the final MLflow stage says more
                logger.warning("could not upload the report to MLflow: %s", exc)

    def skip(self, name: str, reason: str) -> Missing:
        """A stage that cannot run: recorded, and shown in Prefect's UI as a task run in a Skipped state."""
        record = StageRecord(name=name, status="skipped", message=reason)
        self.report.stages.append(record)
        self.save()
        if FlowRunContext.get() is not None:
            skipped_stage.with_options(name=name)(reason)
        for listener in _listeners:
            listener.stage_finished(record)
        return Missing(name)

    def stage(
        self,
        fn: Task,
        *args: Any,
        on_error: Callable[[ValidationReport, Exception], None] | None = None,
        after: tuple[Any, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Run one stage (a task, named by its task name), unless a stage it needs did not complete: one whose
        result it takes, or one it must come `after` (model code runs only after the op scan cleared it).
        Record the outcome either way."""
        name = fn.name
        missing = [value for value in (*args, *kwargs.values(), *after) if isinstance(value, Missing)]
        if missing:
            return self.skip(name, _needs(missing))
        record = StageRecord(name=name, status="running")
        self.report.stages.append(record)
        for listener in _listeners:
            listener.stage_started(name)
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except ModelRejected as exc:
            # A verdict, not a breakdown: the named check fails the validation and the stages needing this skip.
            record.status, record.message = "failed", str(exc)
            self.report.checks.append(Check(
                name=exc.check, status=STATUS_WHEN_BROKEN[exc.severity], severity=exc.severity, message=str(exc),
            ))
            if on_error:
                on_error(self.report, exc)
            result = Missing(name)
        except Exception as exc:  # noqa: BLE001 - a failed stage is recorded and the flow goes on
            record.status, record.message = "error", describe_error(exc)
            if on_error:
                on_error(self.report, exc)
            result = Missing(name)
        else:
            record.status = "ok"
            if isinstance(result, StageResult) and (failure := result.apply_to(self.report)):
                record.status, record.message = "failed", failure
        record.duration_s = round(time.perf_counter() - started, 3)
        self.save()
        for listener in _listeners:
            listener.stage_finished(record)
        return result

    def passed(self, check: str) -> Missing | None:
        """Stands in for a model that passed `check`: stages that need one take it `after`, and are skipped
        once the check has failed (a model TensorFlow cannot load has no conversion to judge)."""
        failed = any(c.name == check and c.status == "failed" for c in self.report.checks)
        return Missing(check, failed_check=check) if failed else None

    def conclude(self) -> None:
        """The verdict as the report stands; closing stages (MLflow, the registry) may still change it."""
        self.report.conclude()
        self.save()

    def close(self) -> ValidationReport:
        """The final verdict: written locally, uploaded, and the MLflow run ended with it."""
        self.conclude()
        if self.report.mlflow.run_id:
            try:
                mlflow_store.upload_report(self.report.mlflow, self.report_file)
                mlflow_store.close_run(self.report.mlflow, self.report.status)
            except Exception as exc:  # noqa: BLE001 - the report on disk already says everything
                logger.warning("could not close the MLflow run: %s", exc)
        return self.report

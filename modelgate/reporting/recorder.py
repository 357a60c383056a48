"""The validation in progress: runs stages, keeps the report, and never loses what was found so far.

After every stage the report is written to disk and, once an MLflow run is open, uploaded to it, so a
crash at any point leaves the report as it stood, locally and in MLflow. When the last stage is done (or the
flow is interrupted), report.json and report.html are written one final time, with every stage's outcome, the
format matrix and the recommendation, and MLflow gets those copies.

Each stage's start and outcome (its duration and, where it did not pass, why) and the verdict go to the flow
run's log through Prefect's run logger, so the run's Logs tab in Prefect's UI tells the story; the CLI keeps
them off the terminal (modelgate.execution.quiet).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.states import Completed, State

from modelgate.errors import ModelgateError, ModelRejected
from modelgate.execution import os_sandbox
from modelgate.report import STATUS_WHEN_BROKEN, Check, RecommendationSection, StageRecord, ValidationReport, utc_now
from modelgate.reporting import atomic_write, html_report, matrix
from modelgate.reporting.environment import gather_environment
from modelgate.request import ValidationRequest
from modelgate.stages import StageResult
from modelgate.tracking import mlflow_store

if TYPE_CHECKING:
    from prefect import Task

logger = logging.getLogger("modelgate")
# A stage's reason in the run's log is one line; the report keeps the whole message.
LOG_REASON_CHARS = 300
STAGE_LOG_LEVELS = {"ok": logging.INFO, "skipped": logging.INFO, "failed": logging.WARNING, "error": logging.ERROR,
                    "interrupted": logging.ERROR}
VERDICT_LOG_LEVELS = {"passed": logging.INFO, "failed": logging.WARNING, "error": logging.ERROR}


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger, whose lines Prefect ships to the run's log; modelgate's own outside a flow run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LOG_REASON_CHARS else line[: LOG_REASON_CHARS - 1] + "…"


def _finite_or_named(value: Any) -> Any:
    """Infinite and NaN figures as the strings the report's comparisons write ('Infinity', 'NaN'): JSON's null
    would read as 'not computed'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite_or_named(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_named(item) for item in value]
    return value


def log_stage(record: StageRecord) -> None:
    """`<stage> <status> in <s> s: <reason>`, at a level that says how it went."""
    took = "" if record.status == "skipped" else f" in {record.duration_s:.2f} s"
    reason = f": {one_line(record.message)}" if record.message else ""
    run_logger().log(STAGE_LOG_LEVELS.get(record.status, logging.INFO), "%s %s%s%s", record.name, record.status,
                     took, reason)


class Missing:
    """Stands in for the result of a stage that did not complete; stages given one are skipped.

    Whatever a flow reads off it (missing.model_dir) is missing too, so composition needs no special cases.
    """

    def __init__(self, stage: str, failed_check: str | None = None):
        self.stage = stage
        self.failed_check = failed_check  # set where what is missing is a model that passed this check

    def __getattr__(self, name: str) -> Missing:
        return self


def known(result: Any) -> Any:
    """A stage's result, or None where it did not complete: for a stage that can do without it."""
    return None if isinstance(result, Missing) else result


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
        self.html_file = self.workdir / "report.html"
        self.closed = False
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
            self.report.finished_at = self.report.finished_at or utc_now()
            run_logger().error("flow interrupted: %s", one_line(reason))
            self._record_matrix()
            self._finish()

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
        if self.report.mlflow.run_id and not self.closed:
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
        log_stage(record)
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
        run_logger().info("%s started", name)
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
        log_stage(record)
        if isinstance(result, StageResult) and (finding := result.finding()):
            run_logger().info("%s: %s", name, one_line(finding))
        for listener in _listeners:
            listener.stage_finished(record)
        return result

    def passed(self, check: str) -> Missing | None:
        """Stands in for a model that passed `check`: stages that need one take it `after`, and are skipped
        once the check has failed (a model TensorFlow cannot load has no conversion to judge)."""
        failed = any(c.name == check and c.status == "failed" for c in self.report.checks)
        return Missing(check, failed_check=check) if failed else None

    def conclude(self) -> None:
        """The verdict as the report stands, with the format matrix and the recommendation; closing stages (MLflow,
        the registry) may still change it."""
        self.report.conclude()
        self._record_matrix()
        self.save()

    def _record_matrix(self) -> None:
        """The format matrix and the format to serve, as the console, report.html and MLflow's tags show them."""
        try:
            built = matrix.build(self.report)
        except Exception as exc:  # noqa: BLE001 - a report without its matrix is still the report
            logger.warning("could not build the format matrix: %s", exc)
            return
        self.report.matrix = [_finite_or_named(row.model_dump(mode="json")) for row in built.rows]
        found = built.recommendation
        self.report.recommendation = RecommendationSection(
            **(found.model_dump(mode="json") if found else {}), line=built.recommendation_line(),
            reason=built.reason,
        )

    def close(self) -> ValidationReport:
        """The final verdict, after the last stage: report.json and report.html written with every stage's outcome,
        uploaded, and the MLflow run ended with it."""
        self.report.conclude()
        self._record_matrix()
        log = run_logger()
        log.log(VERDICT_LOG_LEVELS.get(self.report.status, logging.INFO), "verdict: %s",
                one_line(self.report.verdict_line()))
        if self.report.recommendation:
            log.info("recommendation: %s", self.report.recommendation.line)
        log.info("report: %s", self.report_file)
        self._finish()
        return self.report

    def _finish(self) -> None:
        """The last copies: report.html rendered from the report as it ends, report.json beside it, both uploaded to
        the MLflow run, which ends with the report's status. Whatever fails here, the report on disk stands."""
        try:
            html_report.write(self.report, self.html_file)
            self.report.artifacts.setdefault("report.html", str(self.html_file))
        except Exception as exc:  # noqa: BLE001 - report.json says everything report.html would
            logger.warning("could not write report.html: %s", exc)
        self.closed = True
        self.save()
        if not self.report.mlflow.run_id:
            return
        try:
            mlflow_store.upload_report(self.report.mlflow, self.report_file)
            if self.html_file.is_file():
                mlflow_store.upload_report(self.report.mlflow, self.html_file)
            mlflow_store.close_run(self.report.mlflow, self.report.status)
        except Exception as exc:  # noqa: BLE001 - the report on disk already says everything
            logger.warning("could not close the MLflow run: %s", exc)

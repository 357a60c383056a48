"""The MLflow side of a validation: one run, opened first, fed the report as it grows, closed last.

The active run of the mlflow module is thread-local and Prefect runs tasks in threads, so everything here
goes through MlflowClient with an explicit run id.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from modelgate.abandoned_runs import owner_tags
from modelgate.errors import ModelgateError
from modelgate.onnx_jobs import log_onnx_model_job
from modelgate.registry import is_registry_uri, validator_version
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import MlflowSection, OutputComparison, ValidationReport, ValidationRequest

PARAM_VALUE_LIMIT = 6000
UNSAFE_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
# A rejected model fails its run as a validation that could not run does: MLflow, Prefect and the registry
# agree that only a passed validation finished well; the modelgate.status tag tells failed from error.
RUN_STATUS = {"passed": "FINISHED", "failed": "FAILED", "error": "FAILED", "running": "KILLED"}


class ResultsNotLogged(ModelgateError):
    """The tracking server refused or never answered (after MLflow's own bounded HTTP retries)."""


def metric_key(*parts: object) -> str:
    return ".".join(UNSAFE_METRIC_CHARS.sub("_", str(part)) for part in parts)


def _absolute(source: str) -> str:
    return source if is_registry_uri(source) else str(Path(source).resolve())


def open_run(request: ValidationRequest, workdir: str, flow_run_url: str | None) -> MlflowSection:
    tracking_uri = request.resolved_tracking_uri()
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(request.experiment_name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(request.experiment_name)
        except Exception:  # another validation created it in the meantime
            experiment_id = client.get_experiment_by_name(request.experiment_name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    tags = {
        "modelgate.status": "running",
        "modelgate.source": _absolute(request.source),
        "modelgate.validator_version": validator_version(),
        "modelgate.workdir": workdir,
        **owner_tags(),
    }
    if flow_run_url:
        tags["modelgate.prefect_flow_run"] = flow_run_url
    run_name = request.source.removeprefix("models:/") if is_registry_uri(request.source) else Path(request.source).name
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    return MlflowSection(tracking_uri=tracking_uri, experiment_id=experiment_id, run_id=run.info.run_id)


def upload_report(section: MlflowSection, report_file: str | Path) -> None:
    MlflowClient(section.tracking_uri).log_artifact(section.run_id, str(report_file))


def _params(report: ValidationReport) -> list[Param]:
    values = report.request.model_dump(mode="json")
    values.update(resolved_signature=report.signature, resolved_tags=report.tags)
    return [
        Param(key, (json.dumps(value) if not isinstance(value, str) else value)[:PARAM_VALUE_LIMIT])
        for key, value in sorted(values.items())
    ]


def _metrics(report: ValidationReport) -> dict[str, float]:
    metrics: dict[str, float] = {"validation.passed": float(report.status == "passed")}
    for status in ("passed", "failed", "warning", "skipped"):
        metrics[metric_key("checks", status)] = float(sum(c.status == status for c in report.checks))
    for bench in report.benchmarks:
        config = (bench.runtime, bench.device, f"bs{bench.batch_size}")
        for figure in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms"):
            metrics[metric_key(f"latency_{figure}", *config)] = getattr(bench, figure)
        metrics[metric_key("throughput", *config)] = bench.throughput
    metrics.update(_onnx_metrics("onnx", report.onnx.outputs))
    if report.onnx.cuda is not None:
        metrics.update(_onnx_metrics("onnx_cuda", report.onnx.cuda.outputs))
    if report.onnx.status in ("passed", "failed"):
        metrics["onnx.passed"] = float(report.onnx.status == "passed")
    for stage in report.stages:
        metrics[metric_key("stage_seconds", stage.name)] = stage.duration_s
    return metrics


def _onnx_metrics(prefix: str, outputs: dict[str, OutputComparison]) -> dict[str, float]:
    """Every figure of every output, as `<prefix>.<figure>.<output>`; infinite ones too (MLflow keeps them)."""
    return {
        metric_key(prefix, figure, name): float(value)
        for name, comparison in outputs.items()
        for figure, value in comparison.model_dump().items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _artifact_folder(name: str) -> str | None:
    if name.endswith(".log"):
        return "logs"
    return "onnx" if name.startswith("onnx_abs_error_") else None


def log_results(report: ValidationReport) -> None:
    """Params, metrics, artifacts and tags of a finished validation; the run ends with the report's verdict.

    Whatever stops them (the server down, a full disk), the error says where the report is kept instead.
    """
    try:
        _log_results(report)
    except Exception as exc:  # noqa: BLE001 - every failure here leaves the same thing to say
        raise ResultsNotLogged(
            f"could not log the results to MLflow at {report.mlflow.tracking_uri}; the report is kept on disk at "
            f"{Path(report.workdir) / 'report.json'} ({type(exc).__name__}: {exc})"
        ) from exc


def _log_results(report: ValidationReport) -> None:
    section = report.mlflow
    client = MlflowClient(section.tracking_uri)
    now = get_current_time_millis()
    client.log_batch(
        section.run_id,
        metrics=[Metric(key, value, now, 0) for key, value in _metrics(report).items()],
        params=_params(report),
        tags=[
            RunTag("modelgate.status", report.status),
            RunTag("modelgate.signature", report.signature or ""),
            RunTag("modelgate.first_error", (report.first_error() or "")[:5000]),
            RunTag("modelgate.failed_checks", ",".join(c.name for c in report.failed_checks())[:5000]),
            RunTag("modelgate.verdict", report.verdict_line()[:5000]),
        ],
    )
    with tempfile.TemporaryDirectory() as scratch:
        signatures_file = Path(scratch) / "signatures.json"
        signatures_file.write_text(
            json.dumps({key: sig.model_dump(mode="json") for key, sig in report.signatures.items()}, indent=2)
        )
        client.log_artifact(section.run_id, str(signatures_file))
    for name, path in report.artifacts.items():
        if Path(path).is_file():
            client.log_artifact(section.run_id, path, _artifact_folder(name))
    _log_onnx(report, client)


def _log_onnx(report: ValidationReport, client: MlflowClient) -> None:
    """The comparison as an MLflow table, and the converted model as a logged model with its signature."""
    onnx = report.onnx
    runtimes = {"cpu": onnx.outputs, **({"cuda": onnx.cuda.outputs} if onnx.cuda else {})}
    rows = [
        {"runtime": runtime, "output": name, **comparison.model_dump(mode="json")}
        for runtime, outputs in runtimes.items() for name, comparison in outputs.items()
    ]
    if rows:
        client.log_table(report.mlflow.run_id, {key: [row[key] for row in rows] for key in rows[0]},
                         artifact_file="onnx/comparison_table.json")
    converted = any(stage.name == "export-onnx" and stage.status == "ok" for stage in report.stages)
    if not (converted and onnx.path and Path(onnx.path).is_file()):
        return
    onnx.mlflow_model_uri = run_isolated(
        log_onnx_model_job, report.mlflow.tracking_uri, report.mlflow.run_id, onnx.path,
        report.signatures[report.signature],
        report.inputs.path if report.inputs else None, onnx.external_data,
        limits=limits_of(report.request), label="log-mlflow (ONNX model)",
        log_path=Path(report.workdir) / "log-onnx-model.log",
    ).value


def close_run(section: MlflowSection, status: str) -> None:
    client = MlflowClient(section.tracking_uri)
    client.set_tag(section.run_id, "modelgate.status", status)
    client.set_terminated(section.run_id, RUN_STATUS[status])

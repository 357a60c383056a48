"""The MLflow side of a validation: one run, opened first, fed the report as it grows, closed last.

The active run of the mlflow module is thread-local and Prefect runs tasks in threads, so everything here
goes through MlflowClient with an explicit run id. A target whose module defines `log_model` (see
modelgate.targets) has its artifact logged as an MLflow logged model, by that hook, in a child process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from modelgate.errors import ModelgateError
from modelgate.execution.sandbox import ModelProcess, SharedProcess, limits_of, shared_process
from modelgate.report import MlflowSection, OutputComparison, TargetSection, ValidationReport
from modelgate.reporting import matrix
from modelgate.request import ValidationRequest
from modelgate.targets import LoggedModelSource
from modelgate.targets import registry as target_registry
from modelgate.tracking.abandoned_runs import owner_tags
from modelgate.tracking.registry import is_registry_uri, validator_version
from modelgate.tracking.store_template import prepare_store

PARAM_VALUE_LIMIT = 6000
UNSAFE_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
# A rejected model fails its run as a validation that could not run does: MLflow, Prefect and the registry
# agree that only a passed validation finished well; the modelgate.status tag tells failed from error.
RUN_STATUS = {"passed": "FINISHED", "failed": "FAILED", "error": "FAILED", "running": "KILLED"}
# One metric per figure: `<figure>.<target>.<runtime>.<device>.bs<N>`, the SavedModel's own runtimes under the
# target `savedmodel` (their names of releases before targets are gone: docs/CHANGELOG.md). Every figure of every
# benchmark, std_ms and stability included, is in the run's table artifact benchmarks.json.
LATENCY_FIGURES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
BENCHMARK_TABLE = "benchmarks.json"


class ResultsNotLogged(ModelgateError):
    """The tracking server refused or never answered (after MLflow's own bounded HTTP retries)."""


def metric_key(*parts: object) -> str:
    return ".".join(UNSAFE_METRIC_CHARS.sub("_", str(part)) for part in parts)


def _absolute(source: str) -> str:
    return source if is_registry_uri(source) else str(Path(source).resolve())


def open_run(request: ValidationRequest, workdir: str, flow_run_url: str | None) -> MlflowSection:
    tracking_uri = request.resolved_tracking_uri()
    prepare_store(tracking_uri)  # a new SQLite store: a copy of one migrated once, not MLflow's migrations again
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(request.mlflow.experiment_name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(request.mlflow.experiment_name)
        except Exception:  # another validation created it in the meantime
            experiment_id = client.get_experiment_by_name(request.mlflow.experiment_name).experiment_id
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
    for section in [key for key, value in values.items() if isinstance(value, dict)]:
        # one param per setting, so runs stay searchable by each (targets.onnx.options, benchmark.budget_s)
        values.update({f"{section}.{key}": value for key, value in values.pop(section).items()})
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
        for figure in (*LATENCY_FIGURES, "throughput"):
            metrics[metric_key(figure, bench.target, *config)] = getattr(bench, figure)
    for name, target in report.targets.items():
        for key, comparison in target.comparisons.items():
            metrics.update(_comparison_metrics(name, key.split("/", 1), comparison.outputs))
        if target.status in ("passed", "failed"):
            metrics[metric_key(name, "passed")] = float(target.status == "passed")
        conversion = target.conversion
        if conversion and conversion.duration_s is not None:
            metrics[metric_key(name, "conversion_seconds")] = conversion.duration_s
        if conversion and conversion.size_bytes is not None:
            metrics[metric_key(name, "size_bytes")] = float(conversion.size_bytes)
        if target.localisation:
            metrics[metric_key(name, "localisation", "matched_tensors")] = float(target.localisation.matched)
        if target.remediation:
            tried = [variant for variant in target.remediation.variants if variant.status != "untried"]
            metrics[metric_key(name, "remediation", "variants_tried")] = float(len(tried))
            metrics[metric_key(name, "remediation", "passed")] = float(target.remediation.chosen is not None)
    for stage in report.stages:
        metrics[metric_key("stage_seconds", stage.name)] = stage.duration_s
    return metrics


def _finding_tags(report: ValidationReport) -> list[RunTag]:
    """Where each localised target's error starts and which variant passed, as the runs list can show them."""
    tags = []
    for name, target in report.targets.items():
        if target.localisation:
            tags.append(RunTag(f"modelgate.{name}.localisation", target.localisation.summary[:5000]))
        if target.remediation:
            tags.append(RunTag(f"modelgate.{name}.remediation", target.remediation.summary[:5000]))
    return tags


def _comparison_metrics(prefix: str, placement: list[str], outputs: dict[str, OutputComparison]) -> dict[str, float]:
    """Every figure of every output, as `<prefix>.<figure>.<placement>.<output>`; infinite ones too (MLflow
    keeps them)."""
    return {
        metric_key(prefix, figure, *placement, name): float(value)
        for name, comparison in outputs.items()
        for figure, value in comparison.model_dump().items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _artifact_folder(name: str, targets: Iterable[str]) -> str | None:
    """A name in a target's folder (litert/converter.log) goes under targets/, beside that target's artifact."""
    if "/" in name and name.split("/", 1)[0] in targets:
        return str(PurePosixPath("targets", name).parent)
    return "logs" if name.endswith(".log") else None


def log_results(report: ValidationReport) -> dict[str, str]:
    """Params, metrics, artifacts and tags of a finished validation; the run ends with the report's verdict.

    Whatever stops them (the server down, a full disk), the error says where the report is kept instead.
    """
    try:
        return _log_results(report)
    except Exception as exc:  # noqa: BLE001 - every failure here leaves the same thing to say
        raise ResultsNotLogged(
            f"could not log the results to MLflow at {report.mlflow.tracking_uri}; the report is kept on disk at "
            f"{Path(report.workdir) / 'report.json'} ({type(exc).__name__}: {exc})"
        ) from exc


def _log_results(report: ValidationReport) -> dict[str, str]:
    """Returns the URIs of the logged models, by target."""
    models = _models_to_log(report)
    # A validation's logging child started warming up as its targets' stages ended (modelgate.execution.pools).
    child = shared_process(LOGGING_POOL) or ModelProcess(LOGGING_PROCESS)
    try:
        if models and child.pid is None:
            child.start()  # it imports MLflow while this process uploads the rest
        _log_run(report)
        return {name: child.run(log_model_job, (name, source), limits_of(report.request), f"log-mlflow ({name} model)",
                                Path(report.workdir) / f"log-{name}-model.log").value
                for name, source in models.items()}
    finally:
        child.close()


def _log_run(report: ValidationReport) -> None:
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
            *_finding_tags(report),
        ],
    )
    with tempfile.TemporaryDirectory() as scratch:
        signatures_file = Path(scratch) / "signatures.json"
        signatures_file.write_text(
            json.dumps({key: sig.model_dump(mode="json") for key, sig in report.signatures.items()}, indent=2)
        )
        client.log_artifact(section.run_id, str(signatures_file))
    logged = _log_targets(report, client)
    for name, path in report.artifacts.items():
        if Path(path).is_file() and str(Path(path)) not in logged:
            client.log_artifact(section.run_id, path, _artifact_folder(name, report.targets))
    if report.benchmarks:
        rows = [{**bench.model_dump(mode="json"), "providers": ", ".join(bench.providers)} for bench in report.benchmarks]
        client.log_table(section.run_id, {key: [row.get(key) for row in rows] for key in rows[0]},
                         artifact_file=BENCHMARK_TABLE)
    built = matrix.build(report)
    if built.rows:
        client.log_table(section.run_id, built.columns(), artifact_file="matrix.json")
    for key, value in built.tags().items():
        client.set_tag(section.run_id, f"modelgate.{key}", value[:5000])


def _artifact_files(path: Path) -> list[Path]:
    """The artifact and the files that go with it, which share its stem (model.onnx.data, model.bin; see
    modelgate.execution.target_jobs.artifact_size)."""
    return [path, *sorted(companion for companion in path.parent.glob(f"{path.stem}.*")
                          if companion != path and companion.is_file())]


def _log_targets(report: ValidationReport, client: MlflowClient) -> set[str]:
    """Under targets/<name>/: each target's artifact (but those logged as a logged model instead), its
    conversion's files and error histograms; and its comparison as an MLflow table at
    <name>/comparison_table.json. Returns the paths logged, which report.artifacts may hold too."""
    run_id = report.mlflow.run_id
    logged: set[str] = set()
    for name, target in report.targets.items():
        folder = f"targets/{name}"
        rows = [
            {"runtime": comparison.runtime, "device": comparison.device, "output": output, **figures.model_dump(mode="json")}
            for comparison in target.comparisons.values() for output, figures in comparison.outputs.items()
        ]
        if rows:
            client.log_table(run_id, {key: [row[key] for row in rows] for key in rows[0]},
                             artifact_file=f"{name}/comparison_table.json")
        conversion = target.conversion
        files = [Path(path) for path in (conversion.artifacts.values() if conversion else [])]
        files += [Path(path) for comparison in target.comparisons.values() for path in comparison.histograms.values()]
        if not _logs_model(name) and _usable(target):
            artifact = Path(conversion.path)
            if artifact.is_dir():
                client.log_artifacts(run_id, str(artifact), f"{folder}/{artifact.name}")
            else:
                files += _artifact_files(artifact)
        for path in dict.fromkeys(files):
            if path.is_file():
                client.log_artifact(run_id, str(path), folder)
                logged.add(str(path))
    return logged


def _usable(target: TargetSection) -> bool:
    conversion = target.conversion
    return bool(conversion and conversion.path and not conversion.failure and Path(conversion.path).exists())


def _logs_model(name: str) -> bool:
    """Whether the target's module logs its artifact as an MLflow logged model (a target this modelgate no
    longer has does not)."""
    declared = target_registry().get(name)
    return declared is not None and declared.logs_model


def _models_to_log(report: ValidationReport) -> dict[str, LoggedModelSource]:
    """The targets whose usable artifact goes to MLflow as a logged model, with what their log_model reads."""
    return {
        name: LoggedModelSource(
            tracking_uri=report.mlflow.tracking_uri, run_id=report.mlflow.run_id, artifact=section.conversion.path,
            signature=report.signatures[report.signature], inputs_path=report.inputs.path if report.inputs else None,
            details=dict(section.conversion.details),
        )
        for name, section in report.targets.items() if _logs_model(name) and _usable(section)
    }


def import_mlflow() -> None:
    """The logging child's warm-up: MLflow; the tracking store the validation logs to (MLFLOW_TRACKING_URI, the
    store's module and its schema check, seconds of imports); and the installed packages, which MLflow reads
    to check a logged model's requirements against them (seconds too). Each is cached for the process."""
    import mlflow  # noqa: F401

    with contextlib.suppress(Exception):  # what fails here fails again in the job, which says why
        from mlflow.utils import requirements_utils

        if os.environ.get("MLFLOW_TRACKING_URI"):
            MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        requirements_utils._init_modules_to_packages_map()


# The child that runs the targets' log_model: MLflow writes to the tracking store, which may lie outside the
# workdir or over the network, so it stays outside the OS sandbox; it runs no TensorFlow model code, only the
# converted file (MLflow checks the input example), as the runtimes outside the sandbox do.
LOGGING_PROCESS = SharedProcess(warm_up=import_mlflow, sandboxed=False)
# Within a validation it is a pool, warmed up as the targets' stages end (modelgate.execution.pools).
LOGGING_POOL = "mlflow-logging"


def logging_pool(request: ValidationRequest) -> SharedProcess:
    """The logging child of a validation, started on demand (modelgate.execution.pools.end_target_stages)."""
    return replace(LOGGING_PROCESS, environment={"MLFLOW_TRACKING_URI": request.resolved_tracking_uri()},
                   on_demand=True)


def log_model_job(target_name: str, source: LoggedModelSource) -> str:
    """In the logging child: the target's own log_model; returns the logged model's URI."""
    return target_registry()[target_name].log_model(source)


def close_run(section: MlflowSection, status: str) -> None:
    client = MlflowClient(section.tracking_uri)
    client.set_tag(section.run_id, "modelgate.status", status)
    client.set_terminated(section.run_id, RUN_STATUS[status])

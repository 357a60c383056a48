from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ConversionFailed, ModelRejected
from modelgate.execution.pools import conversion_pool
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.execution.target_jobs import conversion_job
from modelgate.report import ValidationReport
from modelgate.reporting.recorder import describe_error
from modelgate.request import ValidationRequest
from modelgate.stages import PreparedInputs, SignatureChoice, TargetArtifact
from modelgate.targets import ConversionSource, target

RECORD = "conversion.json"


@task(name="export-target", cache_policy=NO_CACHE)
def export_target(
    name: str, choice: SignatureChoice, parent: TargetArtifact | None, inputs: PreparedInputs,
    request: ValidationRequest, workdir: str,
) -> TargetArtifact:
    """The target's converter in a bounded, sandboxed child; the file counts only once its checks pass.
    Either way the outcome is kept in <target>/conversion.json, with reproduce.sh and the converter's log."""
    chosen = target(name)
    folder = Path(workdir) / name
    folder.mkdir(exist_ok=True)
    log_path = folder / "convert.log"
    source = ConversionSource(
        model_dir=str(Path(choice.model_dir).resolve()), tags=choice.tags, signature=choice.signature,
        model_format=choice.model_format, output_dir=str(folder), log_path=str(log_path),
        parent_artifact=parent.path if parent is not None else None,
        calibration_inputs=[inputs.path] if inputs.path else [], options=request.options_of(chosen),
    )
    process_environment = getattr(chosen.implementation(), "process_environment", None)
    conversion = run_isolated(
        conversion_job, name, source, limits=limits_of(request), label=f"export-{name}", log_path=log_path,
        pool=conversion_pool(chosen), environment=process_environment(source) if process_environment else None,
    ).value
    reproduce = folder / "reproduce.sh"
    reproduce.write_text(f"#!/bin/sh\n# The {name} conversion modelgate ran, as commands.\nset -e\n{conversion.reproduce}\n")
    record = folder / RECORD
    conversion.artifacts = {f"{name}/{path.name}": str(path) for path in (reproduce, log_path, record)}
    if conversion.path and not conversion.details.get("external_data"):
        # A model with external data goes to MLflow as a logged model only, not twice.
        conversion.artifacts[f"{name}/{Path(conversion.path).name}"] = conversion.path
    record.write_text(conversion.model_dump_json(indent=2))
    if conversion.failure:
        severity = request.severity_of(name)
        raise ConversionFailed(chosen.check_name, f"{name} conversion failed: {conversion.failure}", conversion, severity)
    return TargetArtifact(target=name, conversion=conversion)


def record_target_error(name: str, rejections_only: bool = False) -> Callable[[ValidationReport, Exception], None]:
    """What the target's section says when one of its stages did not complete: why, and what a failed
    conversion found (unsupported ops, the converter's message, checks). With rejections_only (its benchmark),
    only a verdict on the target is recorded: a benchmark that could not run leaves the comparison's status."""

    def record(report: ValidationReport, error: Exception) -> None:
        if rejections_only and not isinstance(error, ModelRejected):
            return
        section = report.targets[name]
        conversion = getattr(error, "conversion", None)
        if conversion is not None:
            section.conversion = conversion
            report.artifacts.update({key: path for key, path in conversion.artifacts.items() if Path(path).is_file()})
        # A conversion that is impossible is a verdict on the model; one that could not run (a crash, a limit) is not.
        section.status = "failed" if isinstance(error, ModelRejected) else "error"
        section.message = describe_error(error)

    return record

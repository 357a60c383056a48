from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelRejected, OnnxConversionError
from modelgate.onnx_export import ConversionPlan, convert_job, default_opset, needs_external_data
from modelgate.recorder import describe_error
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import (
    CheckList,
    OnnxExport,
    SignatureChoice,
    ValidationReport,
    ValidationRequest,
)

CONVERSION_RECORD = "onnx_conversion.json"


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_onnx(choice: SignatureChoice, cleared: CheckList, request: ValidationRequest, workdir: str) -> OnnxExport:
    """tf2onnx in a bounded child process; the file counts only once tf2onnx converted every op and the
    checker and ONNX Runtime accept it. Either way the outcome is kept in onnx_conversion.json."""
    model_dir = str(Path(choice.model_dir).resolve())
    plan = ConversionPlan(
        model_dir=model_dir,
        signature_key=choice.signature.key,
        tags=choice.tags,
        opset=request.onnx_opset or default_opset(),
        output_path=str(Path(workdir) / "model.onnx"),
        external_data=request.onnx_external_data == "always" or needs_external_data(model_dir),
    )
    reproduce = Path(workdir) / "reproduce.sh"
    reproduce.write_text(f"#!/bin/sh\n# The conversion modelgate ran, as commands.\nset -e\n{plan.shell_command()}\n")
    log_path = Path(workdir) / "tf2onnx.log"
    record = Path(workdir) / CONVERSION_RECORD
    artifacts = {"reproduce.sh": str(reproduce), "tf2onnx.log": str(log_path), CONVERSION_RECORD: str(record)}
    conversion = run_isolated(
        convert_job, plan, choice.signature, str(log_path),
        limits=limits_of(request), label="export-onnx", log_path=log_path,
    ).value
    if conversion.path and not conversion.external_data:
        # A model with external data goes to MLflow as a logged model only, not twice.
        artifacts["model.onnx"] = conversion.path
    conversion.artifacts = artifacts
    record.write_text(conversion.model_dump_json(indent=2))
    if conversion.failure:
        severity = "error" if request.onnx_requirement == "required" else "warning"
        raise OnnxConversionError(f"conversion failed: {conversion.failure}", conversion, severity)
    return OnnxExport(conversion=conversion)


def record_onnx_error(report: ValidationReport, error: Exception) -> None:
    """The ONNX section says why, and keeps what a failed conversion found (unsupported ops, tf2onnx's
    message, checks)."""
    conversion = getattr(error, "conversion", None)
    if conversion is not None:
        conversion.apply_to_section(report.onnx)
        report.artifacts.update({name: path for name, path in conversion.artifacts.items() if Path(path).is_file()})
    # A conversion that is impossible is a verdict on the model; one that could not run (a crash, a limit) is not.
    report.onnx.status = "failed" if isinstance(error, ModelRejected) else "error"
    report.onnx.message = describe_error(error)

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.onnx_export import ConversionPlan, convert_job, default_opset
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import CheckList, OnnxExport, SignatureChoice, ValidationReport, ValidationRequest


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_onnx(choice: SignatureChoice, cleared: CheckList, request: ValidationRequest, workdir: str) -> OnnxExport:
    """tf2onnx in a bounded child process; the file counts only once the checker and ONNX Runtime accept it."""
    plan = ConversionPlan(
        model_dir=str(Path(choice.model_dir).resolve()),
        signature_key=choice.signature.key,
        tags=choice.tags,
        opset=request.onnx_opset or default_opset(),
        output_path=str(Path(workdir) / "model.onnx"),
    )
    reproduce = Path(workdir) / "reproduce.sh"
    reproduce.write_text(f"#!/bin/sh\n# The conversion modelgate ran, as a command.\nset -e\n{plan.shell_command()}\n")
    log_path = Path(workdir) / "tf2onnx.log"
    artifacts = {"reproduce.sh": str(reproduce), "tf2onnx.log": str(log_path)}
    run_isolated(convert_job, plan, str(log_path), limits=limits_of(request), label="export-onnx", log_path=log_path)
    return OnnxExport(path=plan.output_path, opset=plan.opset, artifacts={"model.onnx": plan.output_path, **artifacts})


def record_onnx_error(report: ValidationReport, message: str) -> None:
    report.onnx.status = "error"
    report.onnx.message = message

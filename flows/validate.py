"""The validation flow: composes the stages; each stage's numerics live in tasks/ and modelgate/."""

from prefect import flow
from prefect.runtime import flow_run

from modelgate.recorder import ValidationRun
from modelgate.schemas import ValidationReport, ValidationRequest
from tasks.benchmark import benchmark
from tasks.check_contract import check_signature
from tasks.compare_onnx import compare_onnx
from tasks.export_onnx import export_onnx, record_onnx_error
from tasks.inspect_model import inspect_model
from tasks.load_and_wrap import load_and_wrap
from tasks.log_mlflow import log_to_mlflow, open_mlflow_run
from tasks.prepare_inputs import prepare_inputs
from tasks.run_checks import run_checks
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


@flow(name="validate-savedmodel")
def validate_savedmodel(request: ValidationRequest) -> ValidationReport:
    """Inspect, wrap, check, benchmark and convert one TensorFlow SavedModel, and record it all in MLflow."""
    with ValidationRun(request) as run:
        workdir = str(run.workdir)
        run.stage("open-mlflow-run", open_mlflow_run, request, workdir, flow_run.get_flow_run_ui_url())
        inspection = run.stage("inspect", inspect_model, request.model_dir, workdir, request.model_version)
        choice = run.stage("select-signature", select_signature, inspection, request.signature, request.tags)
        run.stage("check-signature", check_signature, choice, request)
        cleared = run.stage("scan-ops", scan_ops, choice, request.allow_ops)
        inputs = run.stage("prepare-inputs", prepare_inputs, choice, request, workdir)
        run.stage("load-and-wrap", load_and_wrap, choice, inputs, cleared, request, workdir)
        reference = run.stage("run-checks", run_checks, choice, inputs, cleared, request, workdir)
        run.stage("benchmark", benchmark, choice, inputs, cleared, request, workdir)
        if request.export_onnx:
            exported = run.stage("export-onnx", export_onnx, choice, cleared, request, workdir, on_error=record_onnx_error)
            run.stage("compare-onnx", compare_onnx, exported, inputs, reference, request, workdir, on_error=record_onnx_error)
        else:
            run.report.onnx.message = "not asked (--no-onnx)"
        return run.finish(log_to_mlflow)

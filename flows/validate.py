"""The validation flow: composes the stages; each stage's numerics live in tasks/ and modelgate/."""

from prefect import flow
from prefect.runtime import flow_run

from modelgate.recorder import ValidationRun
from modelgate.registry import is_registry_uri
from modelgate.pools import validation_pools
from modelgate.sandbox import shared_processes
from modelgate.schemas import ValidationReport, ValidationRequest
from tasks.benchmark import benchmark
from tasks.benchmark_onnx import benchmark_onnx
from tasks.benchmark_report import benchmark_report
from tasks.check_contract import check_signature
from tasks.compare_baseline import compare_baseline
from tasks.compare_onnx import compare_onnx
from tasks.export_onnx import export_onnx, record_onnx_error
from tasks.inspect_model import inspect_model
from tasks.load_and_wrap import load_and_wrap
from tasks.log_mlflow import log_to_mlflow, open_mlflow_run
from tasks.prepare_inputs import prepare_inputs
from tasks.publish_registry import publish_registry
from tasks.render_report import render_report
from tasks.resolve_baseline import resolve_baseline
from tasks.resolve_source import resolve_source
from tasks.run_checks import run_checks
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


@flow(name="validate-savedmodel")
def validate_savedmodel(request: ValidationRequest) -> ValidationReport:
    """Inspect, wrap, check, benchmark and convert one TensorFlow SavedModel, and record it all in MLflow."""
    flow_run_url = flow_run.get_flow_run_ui_url()
    with ValidationRun(request) as run, shared_processes(validation_pools(request), run.sandbox):
        workdir = str(run.workdir)
        run.stage("open-mlflow-run", open_mlflow_run, request, workdir, flow_run_url)
        source = run.stage("resolve-source", resolve_source, request, workdir)
        baseline = run.stage("resolve-baseline", resolve_baseline, request, source, workdir)
        inspection = run.stage("inspect", inspect_model, source.model_dir, workdir, request.model_version)
        choice = run.stage("select-signature", select_signature, inspection, request.signature, request.tags)
        run.stage("check-signature", check_signature, choice, request, baseline)
        cleared = run.stage("scan-ops", scan_ops, choice, request.allow_ops)
        inputs = run.stage("prepare-inputs", prepare_inputs, choice, request, workdir)
        run.stage("load-and-wrap", load_and_wrap, choice, inputs, cleared, request, workdir)
        reference = run.stage("run-checks", run_checks, choice, inputs, cleared, request, workdir)
        run.stage("compare-baseline", compare_baseline, choice, baseline, inputs, cleared, request, workdir)
        run.stage("benchmark", benchmark, choice, inputs, cleared, request, workdir)
        if request.export_onnx:
            exported = run.stage("export-onnx", export_onnx, choice, cleared, request, workdir, on_error=record_onnx_error)
            run.stage("compare-onnx", compare_onnx, choice, exported, inputs, reference, request, workdir, on_error=record_onnx_error)
            run.stage("benchmark-onnx", benchmark_onnx, choice, exported, inputs, request, workdir)
        else:
            run.report.onnx.message = "not asked (--no-onnx)"
        run.stage("benchmark-report", benchmark_report, run.report, workdir)
        run.conclude()
        run.stage("render-report", render_report, run.report, workdir, flow_run_url)
        if run.report.mlflow.run_id:
            run.stage("log-mlflow", log_to_mlflow, run.report)
            if is_registry_uri(request.source) or request.register_as:
                run.conclude()
                run.stage("publish-registry", publish_registry, run.report, source, request, flow_run_url)
        return run.close()

"""The validation flow: composes the stages; each stage's numerics live in tasks/ and modelgate/."""

from prefect import flow
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import Failed, State

from modelgate.execution.pools import begin_target_stages, validation_pools
from modelgate.execution.sandbox import shared_processes
from modelgate.report import ValidationReport
from modelgate.reporting.recorder import Missing, ValidationRun
from modelgate.request import ValidationRequest
from modelgate.targets import target, target_stage
from modelgate.tracking.registry import is_registry_uri
from tasks.benchmark import benchmark
from tasks.benchmark_report import benchmark_report
from tasks.benchmark_target import benchmark_target
from tasks.check_contract import check_signature
from tasks.compare_baseline import compare_baseline
from tasks.compare_target import compare_target
from tasks.derive_saved_model import derive_saved_model
from tasks.export_target import export_target, record_target_error
from tasks.inspect_model import inspect_model
from tasks.load_and_wrap import load_and_wrap
from tasks.log_mlflow import log_to_mlflow, open_mlflow_run
from tasks.plan_targets import plan_targets
from tasks.prepare_inputs import prepare_inputs
from tasks.probe_batch import probe_batch
from tasks.publish_registry import publish_registry
from tasks.reference_batches import reference_batches
from tasks.render_report import render_report
from tasks.resolve_baseline import resolve_baseline
from tasks.resolve_source import resolve_source
from tasks.run_checks import run_checks
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


def flow_run_ui_url() -> str | None:
    """This flow run's page in Prefect's UI; None without a UI (a CLI run on an ephemeral server), where
    Prefect would still give 'None/flow-runs/...'."""
    return flow_run.get_flow_run_ui_url() if PREFECT_UI_URL.value() else None


TARGET_TASKS = {"export": export_target, "compare": compare_target, "benchmark": benchmark_target}


def run_target_stage(run: ValidationRun, kind: str, name: str, *args, after: tuple):
    """One stage of one target, as a Prefect task run named after it (export-onnx, compare-litert, ...)."""
    stage = target_stage(kind, name)
    on_error = record_target_error(name, rejections_only=kind == "benchmark")
    return run.stage(TARGET_TASKS[kind].with_options(name=stage), name, *args, on_error=on_error, after=after)


@flow(name="validate-savedmodel")
def validate_savedmodel(request: ValidationRequest) -> ValidationReport | State:
    """Inspect, wrap, check, benchmark and convert one TensorFlow SavedModel, and record it all in MLflow.

    The flow run ends Completed only when the model passed; a rejected model or a validation that could not
    judge ends Failed with the verdict as its message (the report is its result either way), so Prefect's
    UI, notifications and automations see what the report, MLflow and the registry say."""
    flow_run_url = flow_run_ui_url()
    with ValidationRun(request) as run, shared_processes(validation_pools(request), run.sandbox):
        workdir = str(run.workdir)
        run.stage(open_mlflow_run, request, workdir, flow_run_url)
        plan = run.stage(plan_targets, request)
        source = run.stage(resolve_source, request, workdir)
        model = source
        if source.keras_file:  # a Missing source's is Missing, and truthy: the stage is recorded as skipped
            model = run.stage(derive_saved_model, source, request, workdir)
        baseline = run.stage(resolve_baseline, request, source, workdir)
        inspection = run.stage(inspect_model, model.model_dir, request, workdir)
        choice = run.stage(select_signature, inspection, request.model.signature, request.model.tags, request.atol, request.rtol,
        )
        run.stage(check_signature, choice, request, baseline, workdir)
        cleared = run.stage(scan_ops, choice, request.checks.allow_ops)
        # Inputs, runtimes and converters all need to know what the tensors hold.
        prepared = run.stage(prepare_inputs, choice, request, workdir, after=(run.passed("tensor_dtypes"),))
        inputs = run.stage(probe_batch, choice, prepared, request, workdir, after=(cleared,))
        run.stage(load_and_wrap, choice, inputs, request, workdir, after=(cleared,))
        reference = run.stage(run_checks, choice, inputs, request, workdir, after=(cleared,))
        run.stage(compare_baseline, choice, baseline, inputs, request, workdir, after=(cleared,))
        run.stage(benchmark, choice, inputs, request, workdir, after=(cleared,))
        runnable = [] if isinstance(plan, Missing) else plan.runnable
        if runnable:
            batches = run.stage(reference_batches, choice, inputs, reference, request, workdir)
        begin_target_stages()
        loaded = run.passed("model_loads")
        artifacts = {}
        for name in runnable:
            parent = artifacts[target(name).parent] if target(name).parent else None
            artifacts[name] = run_target_stage(
                # Calibration data only: a conversion needs no probed batch size, so a failed probe leaves it be.
                run, "export", name, choice, parent, prepared, request, workdir, after=(cleared, loaded)
            )
            run_target_stage(run, "compare", name, choice, artifacts[name], batches, request, workdir, after=())
            run_target_stage(run, "benchmark", name, choice, artifacts[name], inputs, request, workdir, after=())
        run.stage(benchmark_report, run.report, workdir)
        run.conclude()
        run.stage(render_report, run.report, workdir, flow_run_url)
        if run.report.mlflow.run_id:
            run.stage(log_to_mlflow, run.report)
            if is_registry_uri(request.source) or request.mlflow.register_as:
                run.conclude()
                run.stage(publish_registry, run.report, source, request, flow_run_url)
        report = run.close()
        return report if report.status == "passed" else Failed(message=report.verdict_line(), data=report)


def validate(request: ValidationRequest) -> ValidationReport:
    """Run the flow in this process and hand back its report, whatever the verdict."""
    state = validate_savedmodel(request, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result

"""The validation flow: composes the stages; each stage's numerics live in tasks/ and modelgate/."""

import warnings
from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import Failed, State

from modelgate.execution.pools import begin_target_stages, end_target_stages, validation_pools
from modelgate.execution.sandbox import shared_processes
from modelgate.report import ValidationReport
from modelgate.reporting.recorder import Missing, ValidationRun, known, run_logger
from modelgate.request import ValidationRequest
from modelgate.targets import DIAGNOSTIC_STAGE_KINDS, target, target_stage
from modelgate.tracking.registry import MODELS_URI, is_registry_uri
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
from tasks.localise_target import localisation_wanted, localise_target
from tasks.log_mlflow import log_to_mlflow, open_mlflow_run
from tasks.plan_targets import plan_targets
from tasks.prepare_inputs import prepare_inputs
from tasks.probe_batch import probe_batch
from tasks.publish_registry import publish_registry
from tasks.reference_batches import reference_batches
from tasks.remediate_target import remediate_target, remediation_wanted, served_artifact
from tasks.render_report import link_registry_version, render_report
from tasks.resolve_baseline import resolve_baseline
from tasks.resolve_source import resolve_source
from tasks.run_checks import run_checks
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


def flow_run_ui_url() -> str | None:
    """This flow run's page in Prefect's UI; None without a UI (a CLI run on an ephemeral server), where
    Prefect would still give 'None/flow-runs/...'."""
    return flow_run.get_flow_run_ui_url() if PREFECT_UI_URL.value() else None


def validated_model(request: ValidationRequest) -> tuple[str, str | None]:
    """The model's name and version as people call them: a registry model's name and its version or alias, a
    folder's name and the TF Serving version folder asked, if any."""
    if match := MODELS_URI.match(request.source):
        return match["name"], match["version"] or match["alias"]
    folder = Path(request.source)
    version = request.model.version_number
    return folder.name or folder.resolve().name or request.source, None if version is None else str(version)


def validation_name(request: ValidationRequest, version: str | None = None) -> str:
    """`<model>@<version>` (a registry source, a TF Serving version) or the folder's name, and the signature
    asked, if one is: what the runs list shows instead of Prefect's random pair of words."""
    name, asked = validated_model(request)
    version = version or asked
    title = f"{name}@{version}" if version else name
    return f"{title} ({request.model.signature})" if request.model.signature else title


def name_flow_run() -> str:
    """The flow run's name, which Prefect asks for as the run starts (a run started from the UI's form or a schedule
    has its parameters as JSON)."""
    try:
        request = FlowRunContext.get().parameters["request"]
        if not isinstance(request, ValidationRequest):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the flow itself warns of a request's deprecated keys
                request = ValidationRequest.model_validate(request)
        return validation_name(request)
    except Exception:  # noqa: BLE001 - a run is never refused over its name
        return "validate-savedmodel"


def _update_flow_run(**fields) -> None:
    """Name or tag this flow run on the Prefect server; a failure is logged and the validation goes on."""
    context = FlowRunContext.get()
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(context.flow_run.id, **fields)
        for key, value in fields.items():
            setattr(context.flow_run, key, value)
    except Exception as exc:  # noqa: BLE001 - a name or a tag is no part of the verdict
        run_logger().warning("could not update the flow run's %s: %s", ", ".join(fields), exc)


def tag_flow_run(request: ValidationRequest) -> None:
    """The run's tags name the model (`model:<name>`), so that the runs list filters by it."""
    tag = f"model:{validated_model(request)[0]}"
    tags = list(FlowRunContext.get().flow_run.tags)
    if tag not in tags:
        _update_flow_run(tags=[*tags, tag])


def name_resolved_alias(request: ValidationRequest, source) -> None:
    """A run named `<model>@<alias>` takes the version the alias resolved to."""
    match = MODELS_URI.match(request.source)
    version = None if isinstance(source, Missing) else source.registry_version
    if match and match["alias"] and version:
        _update_flow_run(name=validation_name(request, version=version))


TARGET_TASKS = {"export": export_target, "compare": compare_target, "localise": localise_target,
                "remediate": remediate_target, "benchmark": benchmark_target}


def run_target_stage(run: ValidationRun, kind: str, name: str, *args, after: tuple):
    """One stage of one target, as a Prefect task run named after it (export-onnx, compare-litert, ...)."""
    stage = target_stage(kind, name)
    # A diagnostic stage that could not run is said in its own record: the target's outcome stands as it was.
    on_error = None if kind in DIAGNOSTIC_STAGE_KINDS else record_target_error(name, rejections_only=kind == "benchmark")
    return run.stage(TARGET_TASKS[kind].with_options(name=stage), name, *args, on_error=on_error, after=after)


@flow(name="validate-savedmodel", flow_run_name=name_flow_run)
def validate_savedmodel(request: ValidationRequest) -> ValidationReport | State:
    """Inspect, wrap, check, benchmark and convert one TensorFlow SavedModel, and record it all in MLflow.

    The flow run ends Completed only when the model passed; a rejected model or a validation that could not
    judge ends Failed with the verdict as its message (the report is its result either way), so Prefect's
    UI, notifications and automations see what the report, MLflow and the registry say."""
    flow_run_url = flow_run_ui_url()
    tag_flow_run(request)
    with ValidationRun(request) as run, shared_processes(validation_pools(request), run.sandbox):
        workdir = str(run.workdir)
        run.stage(open_mlflow_run, request, workdir, flow_run_url)
        plan = run.stage(plan_targets, request)
        source = run.stage(resolve_source, request, workdir)
        name_resolved_alias(request, source)
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
            localised = None
            artifacts[name] = run_target_stage(
                # Calibration data only: a conversion needs no probed batch size, so a failed probe leaves it be.
                run, "export", name, choice, parent, prepared, request, workdir, after=(cleared, loaded)
            )
            comparison = run_target_stage(run, "compare", name, choice, artifacts[name], batches, request, workdir,
                                          after=())
            if localisation_wanted(comparison, request):
                localised = run_target_stage(run, "localise", name, choice, artifacts[name], batches, comparison,
                                             request, workdir, after=())
            if remediation_wanted(comparison, request):
                remedy = run_target_stage(run, "remediate", name, choice, parent, prepared, batches, comparison,
                                          known(localised), request, workdir, after=())
                artifacts[name] = served_artifact(remedy, artifacts[name])
            run_target_stage(run, "benchmark", name, choice, artifacts[name], inputs, request, workdir, after=())
        end_target_stages(request)
        run.stage(benchmark_report, run.report, workdir)
        run.conclude()
        run.stage(render_report, run.report, workdir, flow_run_url)
        if run.report.mlflow.run_id:
            run.stage(log_to_mlflow, run.report)
            if is_registry_uri(request.source) or request.mlflow.register_as:
                run.conclude()
                run.stage(publish_registry, run.report, source, request, flow_run_url)
                link_registry_version(run.report)
        report = run.close()
        return report if report.status == "passed" else Failed(message=report.verdict_line(), data=report)


def validate(request: ValidationRequest) -> ValidationReport:
    """Run the flow in this process and hand back its report, whatever the verdict."""
    state = validate_savedmodel(request, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result

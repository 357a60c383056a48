"""The child processes of one validation, each warmed up (frameworks imported) before its first job.

TensorFlow and each runtime a target needs get separate shared children: each keeps its own thread pools,
and a model loaded by one does not count against another's memory limit. A converter that declares a warm-up
gets a single-use child: a conversion may change its framework's global state, so nothing runs after it in
that interpreter. Converters without one get a fresh child per conversion.

A target that converts in the reference process (Target.converts_in_reference_process: tf2onnx) needs what
TensorFlow's child has imported already. When it is the first to convert, its conversion is that child's last
job: at begin_target_stages() the child drops nothing yet, becomes single-use and closes after the conversion,
which drops the loaded model first (modelgate.execution.target_jobs.conversion_job), so that the model and the
conversion's copies of its weights do not add up. One TensorFlow-sized import fewer per validation. Later, or
with variables of its own (process_environment: tf2onnx's large-model path), it gets a fresh child of
TensorFlow's kind.

TensorFlow's child and the warm converters' start with the flow, so that their imports overlap the inspection.
At begin_target_stages() TensorFlow's, which holds the loaded model, closes (or serves the first conversion,
above), and the runtimes' start, warming up while the first conversion runs. At end_target_stages() the
runtimes' close, and the child that logs the targets' MLflow models starts warming up while the report is drawn.
"""

from __future__ import annotations

from modelgate.execution.sandbox import (
    SharedProcess,
    release_shared_process,
    start_deferred_processes,
    start_shared_process,
)
from modelgate.model.op_allowlist import op_library_environment
from modelgate.numerics.benchmark_plan import thread_environment
from modelgate.request import ValidationRequest
from modelgate.runtimes import SAVEDMODEL, runtimes_for
from modelgate.runtimes.tensorflow import RUNTIME as TENSORFLOW_RUNTIME
from modelgate.targets import Target, in_conversion_order

# TensorFlow's pool: the runtimes that run the SavedModel itself share it, and the model it loaded.
TENSORFLOW = TENSORFLOW_RUNTIME.pool


def import_tensorflow_stack() -> None:
    """The warm-up of each runtime of TensorFlow's pool: TensorFlow and the op libraries, then Keras."""
    for savedmodel_runtime in runtimes_for(SAVEDMODEL):
        savedmodel_runtime.implementation().warm_up()


def conversion_pool(target: Target) -> str:
    """The pool a target's conversion runs in: TensorFlow's for a target that converts in the reference process."""
    return TENSORFLOW if target.converts_in_reference_process else f"convert-{target.name}"


def asked_targets(request: ValidationRequest) -> list[Target]:
    """The targets to convert, parents first; those missing a package are reported, not converted."""
    return in_conversion_order(request.conversion_targets())


def validation_pools(request: ValidationRequest) -> dict[str, SharedProcess]:
    """TensorFlow starts with the request's thread counts (it reads them once); the other runtimes take theirs
    per session. Only the pools the asked targets use open. Whatever loads the TensorFlow model imports the
    request's op libraries first."""
    op_libraries = op_library_environment(request.model.op_libraries)
    convertible = [target for target in asked_targets(request) if not target.missing_packages()]
    pools = {TENSORFLOW: SharedProcess(
        environment={**thread_environment(request), **op_libraries}, warm_up=import_tensorflow_stack,
        serves_one_more_job=bool(convertible) and convertible[0].converts_in_reference_process,
    )}
    for target in convertible:
        warm_up = getattr(target.implementation(), "warm_up", None)
        if warm_up is not None and not target.converts_in_reference_process:
            pools[conversion_pool(target)] = SharedProcess(environment=op_libraries, warm_up=warm_up, single_use=True)
        for runtime in target.runtimes():
            if runtime.pool not in pools and not runtime.missing_packages():
                pools[runtime.pool] = SharedProcess(
                    warm_up=runtime.implementation().warm_up, sandboxed=runtime.sandboxed, deferred=True,
                )
    if any(target.logs_model for target in convertible):
        # Imported here: the model processes import this module (for TENSORFLOW), and MLflow and Prefect with it
        # would cost each of them seconds and, inside the OS sandbox, Prefect's plugin start-up fails loudly.
        from modelgate.tracking.mlflow_store import LOGGING_POOL, logging_pool

        pools[LOGGING_POOL] = logging_pool(request)
    return pools


def begin_target_stages() -> None:
    """The model's own stages are done (reference-batches was TensorFlow's last job but, where the first target
    converts in the reference process, its conversion); the targets' begin."""
    release_shared_process(TENSORFLOW)
    start_deferred_processes()


def end_target_stages(request: ValidationRequest) -> None:
    """The targets' stages are done: the runtimes' children close (each holds a loaded artifact), and the child
    that logs the targets' models to MLflow starts importing MLflow and opening the store while the report is
    drawn (seconds that log-mlflow would otherwise wait)."""
    for target in asked_targets(request):
        for runtime in target.runtimes():
            release_shared_process(runtime.pool)
    from modelgate.tracking.mlflow_store import LOGGING_POOL

    start_shared_process(LOGGING_POOL)

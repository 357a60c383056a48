from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.jobs import tensorflow_benchmark_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.numerics.benchmark_plan import benchmark_framework, not_measured
from modelgate.report import Check
from modelgate.reporting.environment import gpu_present
from modelgate.request import ValidationRequest
from modelgate.runtimes import Runtime, serving
from modelgate.runtimes.keras_wrapper import RUNTIME as KERAS
from modelgate.runtimes.keras_wrapper import UNBUILT
from modelgate.runtimes.tensorflow import RUNTIME as TENSORFLOW
from modelgate.stages import BenchmarkRun, PreparedInputs, SignatureChoice


def asked(request: ValidationRequest, runtime: Runtime) -> bool:
    """A request names the reference runtime 'tensorflow', whichever the model's format has (a TF1 graph's is
    its Session), and every other runtime by its name."""
    return request.benchmarks_runtime(TENSORFLOW.name if runtime.reference else runtime.name)


@task(name="benchmark", cache_policy=NO_CACHE)
def benchmark(
    choice: SignatureChoice, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> BenchmarkRun:
    """Latency and throughput of the runtimes that run the SavedModel itself (the raw TF signature or a TF1
    graph's Session, and the Keras wrapper), per device and batch size."""
    runtimes = [runtime.name for runtime in serving(choice.model_format) if asked(request, runtime)]
    if skipped := not_measured(inputs, bool(runtimes), "benchmark"):
        return skipped
    measured = benchmark_framework(
        request, choice.signature, inputs, TENSORFLOW.name, workdir,
        lambda device, plan, intra, inter: run_isolated(
            tensorflow_benchmark_job, choice.model_dir, choice.tags, choice.model_format, choice.signature,
            inputs.path, plan, runtimes, device, intra, inter, request.model.op_libraries,
            limits=limits_of(request), label=f"benchmark ({device})", log_path=Path(workdir) / "benchmark.log",
            # Without a GPU, the shared TensorFlow process (started with the request's threads) measures on CPU;
            # with one, each device needs a process of its own to set TensorFlow's device visibility.
            share=not gpu_present(),
        ).value,
    )
    if KERAS.name in runtimes and not any(result.runtime == KERAS.name for result in measured.results):
        measured.checks.append(Check(name=f"benchmark_{KERAS.name}", status="skipped", message=UNBUILT))
    return measured

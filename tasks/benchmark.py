from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.jobs import tensorflow_benchmark_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.numerics.benchmark_plan import benchmark_framework, not_measured
from modelgate.report import Check
from modelgate.reporting.environment import gpu_present
from modelgate.request import ValidationRequest
from modelgate.stages import BenchmarkRun, PreparedInputs, SignatureChoice

TENSORFLOW_RUNTIMES = ("tensorflow", "keras")


@task(name="benchmark", cache_policy=NO_CACHE)
def benchmark(
    choice: SignatureChoice, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> BenchmarkRun:
    """Latency and throughput of the raw TF signature and the Keras wrapper, per device and batch size."""
    runtimes = [name for name in TENSORFLOW_RUNTIMES if request.benchmarks_runtime(name)]
    if skipped := not_measured(inputs, bool(runtimes), "benchmark"):
        return skipped
    measured = benchmark_framework(
        request, choice.signature, inputs, "tensorflow", workdir,
        lambda device, plan, intra, inter: run_isolated(
            tensorflow_benchmark_job, choice.model_dir, choice.tags, choice.model_format, choice.signature,
            inputs.path, plan, runtimes, device, intra, inter, request.op_libraries,
            limits=limits_of(request), label=f"benchmark ({device})", log_path=Path(workdir) / "benchmark.log",
            # Without a GPU, the shared TensorFlow process (started with the request's threads) measures on CPU;
            # with one, each device needs a process of its own to set TensorFlow's device visibility.
            share=not gpu_present(),
        ).value,
    )
    if "keras" in runtimes and not any(result.runtime == "keras" for result in measured.results):
        measured.checks.append(Check(name="benchmark_keras", status="skipped",
                                     message="the Keras wrapper could not be built (see keras_wrapper_built)"))
    return measured

import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.jobs import tensorflow_benchmark_job
from modelgate.plots import latency_distribution
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import BenchmarkRun, Check, CheckList, PreparedInputs, SignatureChoice, ValidationRequest
from modelgate.timing import MeasurementPlan


def fixed_batch_size(choice: SignatureChoice) -> int | None:
    """A model whose inputs fix the batch dimension can only be measured at that size."""
    sizes = {spec.shape[0] for spec in choice.signature.inputs.values() if spec.shape and spec.shape[0] is not None}
    return sizes.pop() if len(sizes) == 1 else None


@task(name="benchmark", cache_policy=NO_CACHE)
def benchmark(
    choice: SignatureChoice, inputs: PreparedInputs, cleared: CheckList, request: ValidationRequest, workdir: str
) -> BenchmarkRun:
    """CPU latency of the raw TensorFlow signature per batch size, with a latency distribution plot."""
    if inputs.path is None:
        return BenchmarkRun(results=[], checks=[Check(name="benchmark", status="skipped", message=inputs.section.message)])
    if not request.benchmark_batch_sizes:
        return BenchmarkRun(results=[], checks=[Check(name="benchmark", status="skipped", message="no batch sizes asked")])
    batch_sizes = request.benchmark_batch_sizes
    fixed = fixed_batch_size(choice)
    if fixed is not None:
        batch_sizes = [fixed]
    plan = MeasurementPlan(
        warmup=request.benchmark_warmup, window=request.benchmark_window, max_windows=request.benchmark_max_windows
    )
    threads = os.cpu_count() or 1
    measured = run_isolated(
        tensorflow_benchmark_job, choice.model_dir, choice.tags, choice.signature, inputs.path,
        batch_sizes, plan, threads, 1,
        limits=limits_of(request), label="benchmark", log_path=Path(workdir) / "benchmark.log",
    ).value
    plot = latency_distribution(
        {f"{r.runtime}/{r.device}/bs{r.batch_size}": samples for r, samples in measured},
        Path(workdir) / "latency.png",
    )
    results = [result for result, _ in measured]
    unstable = [f"bs{r.batch_size}" for r in results if not r.stable]
    checks = [
        Check(
            name="benchmark_stability",
            status="warning" if unstable else "passed",
            message=(f"window means did not settle within 10 % for {', '.join(unstable)}; figures reported as unstable"
                     if unstable else "every measurement settled within 10 % over its last 3 windows")
            + (f"; batch dimension fixed at {fixed}" if fixed is not None else ""),
        )
    ]
    return BenchmarkRun(results=results, checks=checks, artifacts={"latency.png": str(plot)})

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelRejected, RuntimeRefused
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.execution.target_jobs import benchmark_job
from modelgate.numerics.benchmark_plan import benchmark_framework, not_measured
from modelgate.request import ValidationRequest
from modelgate.stages import BenchmarkRun, PreparedInputs, SignatureChoice, TargetArtifact
from modelgate.targets import target


@task(name="benchmark-target", cache_policy=NO_CACHE)
def benchmark_target(
    name: str, choice: SignatureChoice, artifact: TargetArtifact, inputs: PreparedInputs, request: ValidationRequest,
    workdir: str,
) -> BenchmarkRun:
    """Latency and throughput of the target's artifact in each runtime of its format, per device and batch size."""
    runs = []
    for runtime in target(name).runtimes():
        label = f"{name}_{runtime.name}"
        if runtime.missing_packages():
            continue  # compare-<target> says which package is missing
        if skipped := not_measured(inputs, request.benchmarks_runtime(runtime.name), f"benchmark_{label}"):
            runs.append(skipped)
            continue
        try:
            measured = benchmark_framework(
                request, choice.signature, inputs, label, workdir,
                lambda device, plan, intra, inter, runtime=runtime: run_isolated(
                    benchmark_job, runtime.name, artifact.path, inputs.path, plan, device, intra, inter,
                    limits=limits_of(request), label=f"benchmark-{name} ({runtime.name}/{device})",
                    log_path=Path(workdir) / name / "benchmark.log", pool=runtime.pool, raises=(RuntimeRefused,),
                ).value,
                devices=runtime.devices, gpu_missing=runtime.gpu_missing,
            )
        except RuntimeRefused as exc:
            # The file fails where the model serves: judged, by the target's requirement.
            severity = request.severity_of(name)
            raise ModelRejected(f"benchmark_{label}", f"{name}: {exc}", severity) from None
        for result in measured.results:
            result.target = name
        for item in measured.unmeasured:
            item.target = name
        runs.append(measured)
    return BenchmarkRun.merged(runs)

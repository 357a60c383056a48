from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.benchmark_plan import benchmark_framework, not_measured
from modelgate.jobs import onnxruntime_benchmark_job
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import BenchmarkRun, OnnxExport, PreparedInputs, SignatureChoice, ValidationRequest


@task(name="benchmark-onnx", cache_policy=NO_CACHE)
def benchmark_onnx(
    choice: SignatureChoice, exported: OnnxExport, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> BenchmarkRun:
    """Latency and throughput of the converted model in ONNX Runtime: CPU, and CUDA where it is present."""
    asked = request.benchmark and "onnxruntime" in request.benchmark_runtimes
    if skipped := not_measured(inputs, asked, "benchmark_onnx"):
        return skipped
    return benchmark_framework(
        request, choice.signature, inputs, "onnxruntime", workdir,
        lambda device, plan, intra, inter: run_isolated(
            onnxruntime_benchmark_job, exported.path, inputs.path, plan, device, intra, inter,
            limits=limits_of(request), label=f"benchmark-onnx ({device})",
            log_path=Path(workdir) / "benchmark-onnx.log",
        ).value,
    )

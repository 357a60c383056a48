"""From a validation request to benchmark runs: batch sweep, threads, devices; and their results' files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from modelgate.description import SignatureSpec
from modelgate.errors import ModelRunError
from modelgate.execution.sandbox import limits_of, settle_shared_processes
from modelgate.numerics.benchmark import Measured, SweepPlan
from modelgate.numerics.inputs import no_batch_dimension
from modelgate.numerics.timing import MeasurementPlan
from modelgate.report import Check, UnmeasuredBenchmark
from modelgate.reporting.environment import gpu_present
from modelgate.request import ValidationRequest
from modelgate.stages import BenchmarkRun, PreparedInputs

SAMPLES_PREFIX = "latency-samples-"


def fixed_batch_size(signature: SignatureSpec) -> int | None:
    """A model whose inputs fix the batch dimension can only be measured at that size."""
    sizes = {spec.shape[0] for spec in signature.inputs.values() if spec.shape and spec.shape[0] is not None}
    return sizes.pop() if len(sizes) == 1 else None


def sweep_plan(request: ValidationRequest, fixed: int | None, declared_shapes: bool = False) -> SweepPlan:
    settings = request.benchmark
    return SweepPlan(
        measurement=MeasurementPlan(warmup=settings.warmup, window=settings.window, max_windows=settings.max_windows),
        batch_sizes=settings.batch_sizes or None,  # none asked: the sweep
        max_batch_size=settings.max_batch_size,
        fixed_batch_size=fixed,
        budget_s=settings.budget_s,
        declared_shapes=declared_shapes,
    )


def thread_counts(request: ValidationRequest) -> tuple[int, int]:
    return request.benchmark.intra_op_threads or os.cpu_count() or 1, request.benchmark.inter_op_threads


def thread_environment(request: ValidationRequest) -> dict[str, str]:
    """Environment for a model process, so TensorFlow starts with the request's thread counts."""
    intra, inter = thread_counts(request)
    return {"TF_NUM_INTRAOP_THREADS": str(intra), "TF_NUM_INTEROP_THREADS": str(inter)}


def devices_to_measure(
    request: ValidationRequest, framework: str, devices: tuple[str, ...] = ("cpu", "gpu"),
    gpu_missing: Callable[[], str | None] = lambda: None,
) -> tuple[list[str], list[Check]]:
    """CPU always; the GPU where asked, present, among the runtime's devices and ready for it (gpu_missing
    says what it lacks, a provider say)."""
    name = f"benchmark_gpu_{framework}"
    if not request.benchmark.gpu:
        return ["cpu"], [Check(name=name, status="skipped", message="GPU benchmark not asked")]
    if not gpu_present():
        return ["cpu"], [Check(name=name, status="skipped", message="no NVIDIA GPU on this machine (nvidia-smi)")]
    if "gpu" not in devices:
        return ["cpu"], [Check(name=name, status="skipped", message=f"{framework} runs on {', '.join(devices)} only")]
    if missing := gpu_missing():
        return ["cpu"], [Check(name=name, status="warning", message=f"a GPU is present but {missing}")]
    return ["cpu", "gpu"], []


def measure_on_devices(
    devices: list[str], framework: str, measure_on: Callable[[str], list[Measured | UnmeasuredBenchmark]]
) -> tuple[list[Measured | UnmeasuredBenchmark], list[Check]]:
    """CPU failures stop the stage; a GPU failure (a provider falling back to CPU, say) is a failed check
    beside the CPU figures, never a CPU figure labelled GPU."""
    measured: list[Measured | UnmeasuredBenchmark] = []
    checks: list[Check] = []
    for device in devices:
        if device == "cpu":
            measured += measure_on(device)
            continue
        try:
            measured += measure_on(device)
        except ModelRunError as exc:
            checks.append(Check(name=f"benchmark_gpu_{framework}", status="failed", message=str(exc)))
        else:
            checks.append(Check(name=f"benchmark_gpu_{framework}", status="passed", message="measured on the GPU"))
    return measured, checks


def samples_label(measured: Measured) -> str:
    r = measured.result
    return f"{r.runtime}/{r.device}/bs{r.batch_size}"


def save_samples(measured: list[Measured], workdir: str, framework: str) -> str:
    """Every latency sample behind the figures, so a reviewer can recompute any of them."""
    path = Path(workdir) / f"{SAMPLES_PREFIX}{framework}.json"
    path.write_text(json.dumps({samples_label(m): m.samples_ms for m in measured}))
    return str(path)


def load_samples(workdir: str) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for path in sorted(Path(workdir).glob(f"{SAMPLES_PREFIX}*.json")):
        samples.update(json.loads(path.read_text()))
    return samples


def summarize(
    outcomes: list[Measured | UnmeasuredBenchmark], checks: list[Check], samples_path: str, framework: str
) -> BenchmarkRun:
    measured = [m for m in outcomes if isinstance(m, Measured)]
    unmeasured = [u for u in outcomes if isinstance(u, UnmeasuredBenchmark)]
    results = [m.result for m in measured]
    unstable = [samples_label(m) for m in measured if not m.result.stable]
    stability = Check(
        name=f"benchmark_stability_{framework}",
        status="warning" if unstable else "passed",
        message=(
            f"window means did not settle within 10 % for {', '.join(unstable)}; their figures are marked unstable"
            if unstable
            else f"all {len(results)} measurements settled: last 3 window means within 10 % of their mean"
        ),
    )
    budget = []
    if unmeasured or any(r.cut_by_budget for r in results):
        left = "; ".join(f"{u.runtime}/{u.device} bs{u.batch_size}" for u in unmeasured) or "none"
        cut = ", ".join(samples_label(m) for m in measured if m.result.cut_by_budget) or "none"
        budget = [Check(
            name=f"benchmark_budget_{framework}", status="warning",
            message=f"the time budget ended the sweep: not measured: {left}; stopped after their fewest whole "
            f"windows: {cut}" + (f" ({unmeasured[0].reason})" if unmeasured else ""),
        )]
    return BenchmarkRun(results=results, unmeasured=unmeasured, checks=[stability, *budget, *checks],
                        artifacts={Path(samples_path).name: samples_path})


def not_measured(inputs: PreparedInputs, asked: bool, check_name: str) -> BenchmarkRun | None:
    """The skipped result of a benchmark stage with no inputs to time, or not asked for; None when it runs."""
    if inputs.path is not None and asked:
        return None
    reason = inputs.section.message if inputs.path is None else "not asked"
    return BenchmarkRun(results=[], checks=[Check(name=check_name, status="skipped", message=reason)])


def benchmark_framework(
    request: ValidationRequest, signature: SignatureSpec, inputs: PreparedInputs, framework: str, workdir: str,
    measure_on: Callable[[str, SweepPlan, int, int], list[Measured]], devices: tuple[str, ...] = ("cpu", "gpu"),
    gpu_missing: Callable[[], str | None] = lambda: None,
) -> BenchmarkRun:
    """Plan the sweep and threads once, measure on each device (measure_on(device, plan, intra, inter)),
    keep the samples, and summarise. A model whose dynamic batch fails above a working size is measured at it;
    one without a batch dimension at its declared shapes, once."""
    settle_shared_processes(limits_of(request))  # a child still importing its frameworks would skew the figures
    unbatched = no_batch_dimension(signature)
    plan = sweep_plan(request, inputs.section.working_batch_size or fixed_batch_size(signature), bool(unbatched))
    sweep_checks = [Check(name=f"benchmark_sweep_{framework}", status="skipped",
                          message=f"{unbatched}: measured at the declared shapes only")] if unbatched else []
    intra, inter = thread_counts(request)
    devices, device_checks = devices_to_measure(request, framework, devices, gpu_missing)
    outcomes, gpu_checks = measure_on_devices(devices, framework, lambda device: measure_on(device, plan, intra, inter))
    samples = save_samples([m for m in outcomes if isinstance(m, Measured)], workdir, framework)
    return summarize(outcomes, sweep_checks + device_checks + gpu_checks, samples, framework)

"""The work of every target's comparison and benchmark, inside the child process of the runtime that runs
its artifact (see modelgate.execution.jobs for the conventions). One job each serves every runtime: the runtime is named,
and the registry loads it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from modelgate.criteria import Criteria
from modelgate.errors import RuntimeRefused
from modelgate.model.savedmodel import first_meaningful_line
from modelgate.numerics.benchmark import Measured, SweepPlan, sweep
from modelgate.numerics.compare import compare_stacked, errors, judged, stack_batches, tolerance_for
from modelgate.numerics.inputs import Feeds, read_npz
from modelgate.report import ConversionRecord, RuntimeComparison
from modelgate.runtimes import CPU, runtime
from modelgate.runtimes.tensorflow import drop_loaded_models
from modelgate.targets import ConversionSource, target

UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

Batch = tuple[str, str]  # (inputs .npz, TensorFlow reference outputs .npz)


def artifact_size(path: str) -> int:
    """The artifact and the files that go with it, which share its stem (model.onnx.data, model.bin)."""
    artifact = Path(path)
    if artifact.is_dir():
        return sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file())
    return sum(f.stat().st_size for f in artifact.parent.glob(f"{artifact.stem}.*") if f.is_file())


def conversion_job(target_name: str, source: ConversionSource) -> ConversionRecord:
    """The target's converter, in the bounded, sandboxed child this runs in; timed, its artifact measured. In
    TensorFlow's child (a target that converts in the reference process) the loaded model goes first."""
    drop_loaded_models()
    started = time.perf_counter()
    record = target(target_name).implementation().convert(source)
    record.duration_s = round(time.perf_counter() - started, 3)
    if record.path and Path(record.path).exists():
        record.size_bytes = artifact_size(record.path)
    return record


def comparison_job(
    runtime_name: str, artifact: str, device: str, batches: list[Batch], criteria: Criteria, histogram_dir: str,
    label: str,
) -> RuntimeComparison:
    """The runtime on every batch against TensorFlow's outputs, judged by the target's criteria (atol and
    rtol resolved), with a histogram of absolute errors per numeric output."""
    from modelgate.reporting.plots import error_histogram

    runner = runtime(runtime_name).load(artifact, device, 0, 0)
    references = [read_npz(reference_path) for _, reference_path in batches]
    candidates = [runner(read_npz(inputs_path)) for inputs_path, _ in batches]
    stacked, problems = stack_batches(references, candidates)
    outputs = {
        name: judged(name, result, criteria)
        for name, result in compare_stacked(stacked, problems, references, candidates, criteria.atol, criteria.rtol).items()
    }
    histograms = {}
    for name, (reference, candidate) in stacked.items():
        if reference.dtype.kind not in "fciub":
            continue
        path = Path(histogram_dir) / f"abs_error_{label}_{UNSAFE_FILE_CHARS.sub('_', name)}.png"
        histograms[name] = str(error_histogram(
            errors(reference, candidate)[0], tolerance_for(criteria.atol, name), path,
            f"{name}: {runtime_name} ({', '.join(runner.placement)}) vs TensorFlow, {len(batches)} batches",
        ))
    return RuntimeComparison(
        runtime=runtime_name, device=device, providers=list(runner.placement),
        graph_optimization_level=getattr(runner, "graph_optimization_level", ""),
        outputs=outputs, batches=len(batches), histograms=histograms,
    )


def benchmark_job(
    runtime_name: str, artifact: str, inputs_path: str, plan: SweepPlan, device: str, intra_op_threads: int,
    inter_op_threads: int,
) -> list[Measured]:
    runner = runtime(runtime_name).load(artifact, device, intra_op_threads, inter_op_threads)

    def infer(feeds: Feeds) -> dict:
        try:
            return runner.infer(feeds)
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own kind; a limit kills the child instead
            if device != CPU or isinstance(exc, MemoryError):
                raise  # a device's memory or driver is no verdict on the file: the benchmark could not run
            sizes = sorted({int(np.shape(value)[0]) for value in feeds.values() if np.ndim(value)})
            batch = f"a batch of {', '.join(map(str, sizes))}" if sizes else "its inputs"
            raise RuntimeRefused(f"{runtime_name} ({device}) fails on {batch}, which the signature accepts: "
                                 f"{first_meaningful_line(str(exc))}") from None

    return sweep(infer, read_npz(inputs_path), plan, runtime_name=runtime_name, device=device,
                 intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, providers=list(runner.placement))

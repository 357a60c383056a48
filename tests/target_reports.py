"""Reports with conversion targets and benchmarks filled by hand, from real comparisons (compare_arrays on
outputs a target would have given), for the tests of what is made of them: the matrix, report.html, the
console, MLflow and the registry. No flow stage runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.numerics.compare import compare_arrays
from modelgate.report import BenchmarkResult, Check, ConversionRecord, RuntimeComparison, TargetSection, ValidationReport
from modelgate.request import ValidationRequest

REFERENCE = {
    "logits": np.random.default_rng(0).standard_normal((32, 10)).astype(np.float32),
    "embedding": np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32),
}
SIGNATURE = SignatureSpec(
    key="serving_default", method_name="tensorflow/serving/predict",
    inputs={"x": TensorSpec(dtype="float32", shape=[None, 4])},
    outputs={name: TensorSpec(dtype="float32", shape=[None, value.shape[1]]) for name, value in REFERENCE.items()},
)


def comparison(runtime: str, device: str, noise: float, atol: float, rtol: float, seed: int = 2) -> RuntimeComparison:
    """The reference outputs against themselves plus noise of this size, as a runtime with that error would give."""
    rng = np.random.default_rng(seed)
    outputs = {
        name: compare_arrays(value, value + rng.normal(0, noise, value.shape).astype(np.float32), atol, rtol)
        for name, value in REFERENCE.items()
    }
    return RuntimeComparison(runtime=runtime, device=device, providers=[f"{runtime}:{device}"], outputs=outputs,
                             batches=4)


def bench(target: str, runtime: str, device: str, batch_size: int, p50_ms: float, stable: bool = True) -> BenchmarkResult:
    return BenchmarkResult(
        target=target, runtime=runtime, device=device, batch_size=batch_size, p50_ms=p50_ms, p90_ms=p50_ms * 1.1,
        p95_ms=p50_ms * 1.15, p99_ms=p50_ms * 1.3, mean_ms=p50_ms * 1.05, std_ms=p50_ms * 0.05, min_ms=p50_ms * 0.9,
        max_ms=p50_ms * 1.5, throughput=batch_size * 1000 / (p50_ms * 1.05), iterations=75, windows=3, stable=stable,
        intra_op_threads=2, inter_op_threads=1,
    )


def _file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return str(path)


def targets_report(workdir: Path, tracking_uri: str = "sqlite:///unused.db", onnx_model: str | None = None) -> ValidationReport:
    """Five targets as a validation on a CPU machine leaves them:

    - onnx: passes on CPU; the GPU is not compared (no CUDA provider); benchmarked at batch sizes 1 and 8;
    - onnx-fp16 (optional): passes within float16 tolerances, fastest of the passing at batch size 8;
    - onnx-int8: fastest of all, but its outputs miss its tolerances;
    - litert: its conversion failed;
    - openvino: passes, its .xml with its .bin beside it, never benchmarked.
    """
    request = ValidationRequest(source=str(workdir / "model"), tracking_uri=tracking_uri)
    targets = {
        "onnx": TargetSection(
            name="onnx", artifact_format="onnx", status="passed", message="every output within atol and rtol",
            conversion=ConversionRecord(
                path=onnx_model or _file(workdir / "onnx" / "model.onnx", 2048), size_bytes=2048, duration_s=1.25,
                checks=[Check(name="onnx_checker", status="passed", message="the ONNX checker accepts the model")],
                details={"opset": 18, "external_data": False},
                artifacts={"onnx/conversion.json": _file(workdir / "onnx" / "conversion.json", 10)},
            ),
            batches=4,
            comparisons={"onnxruntime/cpu": comparison("onnxruntime", "cpu", 1e-6, 1e-4, 1e-3)},
            not_compared={"onnxruntime/gpu": "no CUDA provider on this machine"},
        ),
        "onnx-fp16": TargetSection(
            name="onnx-fp16", artifact_format="onnx", parent="onnx", requirement="optional", status="passed",
            message="every output within float16 tolerances",
            conversion=ConversionRecord(path=_file(workdir / "onnx-fp16" / "model.onnx", 1024), size_bytes=1024,
                                        duration_s=0.5, details={"precision": "float16"}),
            comparisons={"onnxruntime/cpu": comparison("onnxruntime", "cpu", 1e-3, 1e-2, 1e-2)},
        ),
        "onnx-int8": TargetSection(
            name="onnx-int8", artifact_format="onnx", parent="onnx", status="failed",
            message="outputs logits, embedding miss the criteria",
            conversion=ConversionRecord(path=_file(workdir / "onnx-int8" / "model.onnx", 512), size_bytes=512,
                                        duration_s=3.0),
            comparisons={"onnxruntime/cpu": comparison("onnxruntime", "cpu", 0.3, 1e-2, 1e-2)},
        ),
        "litert": TargetSection(
            name="litert", artifact_format="tflite", status="failed",
            message="conversion failed: op ParseExampleV2 has no TFLite kernel",
            conversion=ConversionRecord(
                path=None, duration_s=0.75, failure="op ParseExampleV2 has no TFLite kernel",
                checks=[Check(name="litert_conversion", status="failed", message="ParseExampleV2 has no TFLite kernel")],
            ),
        ),
        "openvino": TargetSection(
            name="openvino", artifact_format="openvino", status="passed", message="every output within atol and rtol",
            conversion=ConversionRecord(path=_file(workdir / "openvino" / "model.xml", 300), size_bytes=300 + 4096,
                                        duration_s=2.0),
            comparisons={"openvino/cpu": comparison("openvino", "cpu", 1e-6, 1e-4, 1e-3, seed=3)},
        ),
    }
    _file(workdir / "openvino" / "model.bin", 4096)
    benchmarks = [
        bench("savedmodel", "tensorflow", "cpu", 1, 2.0), bench("savedmodel", "tensorflow", "cpu", 8, 8.0),
        bench("savedmodel", "keras", "cpu", 1, 2.5),
        bench("onnx", "onnxruntime", "cpu", 1, 1.0), bench("onnx", "onnxruntime", "cpu", 8, 4.0),
        bench("onnx-fp16", "onnxruntime", "cpu", 1, 1.2), bench("onnx-fp16", "onnxruntime", "cpu", 8, 3.2, stable=False),
        bench("onnx-int8", "onnxruntime", "cpu", 1, 0.5), bench("onnx-int8", "onnxruntime", "cpu", 8, 1.0),
    ]
    return ValidationReport(
        status="passed", source=request.source, signature="serving_default", tags=["serve"],
        signatures={"serving_default": SIGNATURE}, targets=targets, benchmarks=benchmarks, request=request,
        workdir=str(workdir), artifacts={"litert/converter.log": _file(workdir / "litert" / "converter.log", 20)},
    )

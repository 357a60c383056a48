from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.jobs import onnx_compare_job
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import OnnxComparison, OnnxExport, PreparedInputs, ReferenceOutputs, ValidationRequest


@task(name="compare-onnx", cache_policy=NO_CACHE)
def compare_onnx(
    exported: OnnxExport, inputs: PreparedInputs, reference: ReferenceOutputs, request: ValidationRequest, workdir: str
) -> OnnxComparison:
    """ONNX Runtime (CPU) against TensorFlow's outputs on the same inputs, by output name, with atol and rtol."""
    if inputs.path is None or reference.path is None:
        return OnnxComparison(
            outputs={}, atol=request.atol, rtol=request.rtol, providers=[], graph_optimization_level="",
            skipped_reason=inputs.section.message or "no TensorFlow reference outputs",
        )
    outputs, providers, level = run_isolated(
        onnx_compare_job, exported.path, inputs.path, reference.path, request.atol, request.rtol,
        limits=limits_of(request), label="compare-onnx", log_path=Path(workdir) / "compare-onnx.log",
    ).value
    return OnnxComparison(
        outputs=outputs, atol=request.atol, rtol=request.rtol, providers=providers, graph_optimization_level=level
    )

"""The work each model-running stage does inside its sandboxed child process.

Each job is a module-level function (spawned children import it by name) that takes paths and plain
values, loads what it needs itself, and returns plain picklable results. Arrays travel as .npz files.
"""

from __future__ import annotations

from modelgate import checks
from modelgate.compare import compare_outputs, exactly_equal
from modelgate.inputs import batch_of, read_npz, save_npz
from modelgate.runners import KerasModelRunner, OnnxRuntimeRunner, TFSignatureRunner, configure_tensorflow_threads
from modelgate.schemas import BenchmarkResult, Check, OutputComparison, SignatureSpec
from modelgate.timing import MeasurementPlan, measure


def wrapper_parity_job(model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str | None) -> list[Check]:
    """Build the Keras wrapper and prove it gives exactly the raw signature's outputs."""
    raw = TFSignatureRunner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path) if inputs_path else None
    unwrappable = checks.unwrappable(signature, feeds)
    if unwrappable:
        return checks.skipped(["keras_wrapper_built", "keras_wrapper_parity"], unwrappable)
    wrapped = KerasModelRunner(raw, signature, {name: value.ndim for name, value in (feeds or {}).items()})
    built = Check(
        name="keras_wrapper_built", status="passed",
        message=f"keras.Model with inputs {', '.join(signature.inputs)} and outputs {', '.join(signature.outputs)}",
    )
    if feeds is None:
        return [built, Check(name="keras_wrapper_parity", status="skipped", message="no inputs for this signature")]
    differing = exactly_equal(raw(feeds), wrapped(feeds))
    if differing:
        parity = Check(
            name="keras_wrapper_parity", status="failed",
            message=f"model.predict differs from the raw signature on {', '.join(differing)}",
        )
    else:
        parity = Check(
            name="keras_wrapper_parity", status="passed",
            message="model.predict gives exactly the raw signature's outputs, bit for bit",
        )
    return [built, parity]


def output_checks_job(
    model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str, outputs_path: str,
    atol: float, rtol: float,
) -> list[Check]:
    """Run the signature twice on the same inputs, then row by row; check the outputs, keep them as the reference."""
    runner = TFSignatureRunner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path)
    first = runner(feeds)
    second = runner(feeds)
    save_npz(first, outputs_path)
    return [
        *checks.output_checks(signature, first, second),
        checks.check_batch_consistency(runner, signature, feeds, first, atol, rtol),
    ]


def tensorflow_benchmark_job(
    model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str,
    batch_sizes: list[int], plan: MeasurementPlan, intra_op_threads: int, inter_op_threads: int,
) -> list[tuple[BenchmarkResult, list[float]]]:
    configure_tensorflow_threads(intra_op_threads, inter_op_threads)
    runner = TFSignatureRunner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path)
    results = []
    for batch_size in batch_sizes:
        batch = batch_of(feeds, batch_size)
        stats = measure(lambda: runner(batch), plan)
        result = BenchmarkResult(
            runtime="tensorflow", device="cpu", batch_size=batch_size,
            intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, **stats.summary(batch_size),
        )
        results.append((result, stats.samples_ms))
    return results


def onnx_compare_job(
    onnx_path: str, inputs_path: str, reference_path: str, atol: float, rtol: float
) -> tuple[dict[str, OutputComparison], list[str], str]:
    runner = OnnxRuntimeRunner(onnx_path)
    comparisons = compare_outputs(read_npz(reference_path), runner(read_npz(inputs_path)), atol, rtol)
    return comparisons, runner.providers, runner.graph_optimization_level

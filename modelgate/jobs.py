"""The work each model-running stage does inside its sandboxed child process.

Each job is a module-level function (spawned children import it by name) that takes paths and plain
values, loads what it needs itself, and returns plain picklable results. Arrays travel as .npz files.
"""

from __future__ import annotations

import os

from modelgate import checks
from modelgate.benchmark import Measured, SweepPlan, sweep
from modelgate.compare import exactly_equal
from modelgate.inputs import read_npz, save_npz
from modelgate.op_allowlist import import_op_libraries
from modelgate.quiet import import_tensorflow
from modelgate.runners import KerasModelRunner, OnnxRuntimeRunner, configure_tensorflow_threads, load_signature_runner
from modelgate.pools import ONNXRUNTIME, TENSORFLOW
from modelgate.sandbox import shares_process
from modelgate.schemas import Check, SignatureSpec, Tolerance


@shares_process(TENSORFLOW)
def wrapper_parity_job(model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str | None) -> list[Check]:
    """Build the Keras wrapper and prove it gives exactly the raw signature's outputs."""
    raw = load_signature_runner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path) if inputs_path else None
    unwrappable = checks.unwrappable(signature, feeds)
    if unwrappable:
        return checks.skipped(["keras_wrapper_built", "keras_wrapper_parity"], unwrappable)
    wrapped = KerasModelRunner(raw, signature, feeds)
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


@shares_process(TENSORFLOW)
def output_checks_job(
    model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str, outputs_path: str,
    atol: Tolerance, rtol: Tolerance,
) -> list[Check]:
    """Run the signature twice on the same inputs, then row by row; check the outputs, keep them as the reference."""
    runner = load_signature_runner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path)
    first = runner(feeds)
    second = runner(feeds)
    save_npz(first, outputs_path)
    return [
        *checks.output_checks(signature, first, second),
        checks.check_batch_consistency(runner, signature, feeds, first, atol, rtol),
    ]


def _hide_gpus_unless(device: str) -> None:
    # Device visibility is fixed when TensorFlow or ONNX Runtime initialise: set it before either loads.
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"


@shares_process(TENSORFLOW)
def tensorflow_benchmark_job(
    model_dir: str, tags: list[str], signature: SignatureSpec, inputs_path: str, plan: SweepPlan,
    runtimes: list[str], device: str, intra_op_threads: int, inter_op_threads: int, op_libraries: list[str] = (),
) -> list[Measured]:
    """The raw signature and the Keras wrapper, in a process of their own: thread counts and device
    visibility can only be set before TensorFlow runs its first op. A fresh process (one per device) gets
    the request's op libraries from here, not from its pool."""
    _hide_gpus_unless(device)
    configure_tensorflow_threads(intra_op_threads, inter_op_threads)
    import_op_libraries(list(op_libraries))
    if device == "gpu" and not import_tensorflow().config.list_physical_devices("GPU"):
        raise RuntimeError("TensorFlow sees no GPU (is the gpu extra, tensorflow[and-cuda], installed?)")
    raw = load_signature_runner(model_dir, tags, signature.key)
    feeds = read_npz(inputs_path)
    by_name = {"tensorflow": raw}
    if "keras" in runtimes:
        by_name["keras"] = KerasModelRunner(raw, signature, feeds).infer
    measured = []
    for name in runtimes:
        measured += sweep(by_name[name], feeds, plan, runtime_name=name, device=device,
                          intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    return measured


@shares_process(ONNXRUNTIME)
def onnxruntime_benchmark_job(
    onnx_path: str, inputs_path: str, plan: SweepPlan, device: str, intra_op_threads: int, inter_op_threads: int,
) -> list[Measured]:
    provider = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}[device]
    runner = OnnxRuntimeRunner(onnx_path, providers=[provider], intra_op_threads=intra_op_threads,
                               inter_op_threads=inter_op_threads)
    if runner.providers[0] != provider:
        # ONNX Runtime falls back to CPU silently; a CPU figure labelled GPU would be a lie.
        raise RuntimeError(f"ONNX Runtime fell back from {provider} to {', '.join(runner.providers)}")
    return sweep(runner, read_npz(inputs_path), plan, runtime_name="onnxruntime", device=device,
                 intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, providers=runner.providers)


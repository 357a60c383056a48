"""The work stages do inside sandboxed child processes: whatever runs model code, and the static reading that
needs TensorFlow (protobufs, the op registry, TFRecords), so that the flow's own process never imports it.

Each job is a module-level function (spawned children import it by name) that takes paths and plain
values, loads what it needs itself, and returns plain picklable results. Arrays travel as .npz files.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelgate.criteria import Tolerance
from modelgate.description import MetaGraphInfo, SignatureSpec
from modelgate.errors import ModelRejected, SignatureFailed
from modelgate.execution.os_sandbox import DENIED
from modelgate.execution.pools import TENSORFLOW
from modelgate.execution.quiet import import_tensorflow
from modelgate.execution.sandbox import shares_process
from modelgate.model.graph_inputs import with_input_facts
from modelgate.model.model_source import resolve_model_source
from modelgate.model.op_allowlist import import_op_libraries
from modelgate.model.savedmodel import (
    TF1_GRAPH,
    describe_meta_graph,
    find_saved_model_file,
    first_meaningful_line,
    inspect_saved_model,
    model_format,
    read_saved_model_proto,
    reference_outputs,
    write_loadable_copy,
)
from modelgate.model.variables_check import verify_variables
from modelgate.numerics import checks
from modelgate.numerics.benchmark import Measured, SweepPlan, sweep
from modelgate.numerics.inputs import Feeds, batch_of, load_inputs_file, read_npz, save_npz
from modelgate.report import Check
from modelgate.runtimes import CPU, Runner, Signature
from modelgate.runtimes.keras_wrapper import RUNTIME as KERAS
from modelgate.runtimes.keras_wrapper import KerasModelRunner
from modelgate.runtimes.tensorflow import configure_tensorflow_threads, load_reference_runner
from modelgate.stages import Inspection

# The static jobs below run in the TensorFlow pool's child before the op scan has cleared the model, which is
# fine: they parse its protobufs, consult the op registry and read files, and nothing of the model executes.


@shares_process(TENSORFLOW)
def inspection_job(
    model_dir: str, workdir: str, version: int | None = None, op_libraries: list[str] = (),
) -> Inspection:
    """Read saved_model.pb as a protobuf: tag-sets, signatures and ops, what each entry point can execute
    (the op scan), and check that variables/ holds what the graph restores, without running any graph. A TF
    Serving base path resolves to its version folder. The op libraries are imported first, so that their
    ops are known. A loadable copy, when one is needed, goes under workdir, the validation's own folder."""
    source = resolve_model_source(model_dir, version)
    import_op_libraries(list(op_libraries))
    saved_model = read_saved_model_proto(source.model_dir)
    verify_variables(source.model_dir, saved_model)
    meta_graphs = [
        with_input_facts(describe_meta_graph(meta_graph, source.model_dir, op_libraries), meta_graph, source.model_dir)
        for meta_graph in saved_model.meta_graphs
    ]
    loadable, checks = source.model_dir, []
    references = reference_outputs(saved_model)
    if references:
        loadable = write_loadable_copy(source.model_dir, saved_model, Path(workdir) / "loadable_model")
        checks.append(Check(
            name="reference_dtypes", status="passed", severity="info",
            message=f"outputs {', '.join(references)} are TF1 reference types (e.g. float32_ref), reported by "
            f"their value dtype; TF2 loads them only through a read, so model stages load a copy that adds an "
            f"Identity per such output ({loadable})",
        ))
    return Inspection(
        model_dir=str(loadable), resolved_model_dir=str(source.model_dir), model_version=source.version,
        model_format=model_format(source.model_dir, saved_model),
        saved_model_file=str(find_saved_model_file(source.model_dir)), meta_graphs=meta_graphs, checks=checks,
    )


@shares_process(TENSORFLOW)
def meta_graphs_job(model_dir: str, op_libraries: list[str] = ()) -> list[MetaGraphInfo]:
    """Another version's MetaGraphs (a baseline's), read as inspection_job reads the model's."""
    return inspect_saved_model(model_dir, op_libraries)


@shares_process(TENSORFLOW)
def loadable_baseline_job(baseline_dir: str, target: str) -> tuple[str, str]:
    """The baseline's format and the directory TF2 loads it from: as for the model validated (see
    inspection_job), a copy at target that reads its reference-typed signature tensors, where it has some."""
    saved_model = read_saved_model_proto(baseline_dir)
    loadable = Path(baseline_dir)
    if reference_outputs(saved_model):
        loadable = write_loadable_copy(loadable, saved_model, Path(target))
    return str(loadable), model_format(loadable, saved_model)


@shares_process(TENSORFLOW)
def inputs_file_job(path: str, signature: SignatureSpec, unknown_dim_size: int, seed: int, destination: str) -> str:
    """The user's inputs file (a .npz, or a TFRecord of tf.Examples, which only TensorFlow's reader reads)
    checked against the signature and saved at destination for the stages."""
    return str(save_npz(load_inputs_file(path, signature, unknown_dim_size, seed), destination))


def _keras_wrapper(
    model_dir: str, tags: list[str], model_format: str, signature: SignatureSpec, feeds: Feeds | None,
    device: str = CPU,
) -> KerasModelRunner | str:
    """The Keras wrapper, or why none can stand for this signature. It calls the function TF2's loader
    makes, which refuses some TF1 graphs a Session serves: for those the wrapper is not built, the rest goes on."""
    reason = checks.unwrappable(signature, feeds)
    if reason:
        return reason
    try:
        return KERAS.load(model_dir, device, 0, 0, Signature(tuple(tags), signature.key, signature, feeds))
    except ModelRejected as exc:
        if model_format != TF1_GRAPH:
            raise
        return f"the wrapper calls the signature through tf.saved_model.load, which refuses this TF1 graph: {exc}"


@shares_process(TENSORFLOW)
def wrapper_parity_job(
    model_dir: str, tags: list[str], model_format: str, signature: SignatureSpec, inputs_path: str | None,
    rtol: Tolerance, no_inputs_reason: str = "no inputs for this signature",
) -> list[Check]:
    """Build the Keras wrapper and prove it gives the reference runtime's outputs (without inputs, the parity
    check is skipped with `no_inputs_reason`)."""
    raw = load_reference_runner(model_dir, tags, signature.key, model_format)
    feeds = read_npz(inputs_path) if inputs_path else None
    wrapped = _keras_wrapper(model_dir, tags, model_format, signature, feeds)
    if isinstance(wrapped, str):
        return checks.skipped(["keras_wrapper_built", "keras_wrapper_parity"], wrapped)
    built = Check(
        name="keras_wrapper_built", status="passed",
        message=f"keras.Model with inputs {', '.join(signature.inputs)} and outputs {', '.join(signature.outputs)}",
    )
    if feeds is None:
        return [built, Check(name="keras_wrapper_parity", status="skipped", message=no_inputs_reason)]
    return [built, checks.check_wrapper_parity(raw(feeds), wrapped(feeds), rtol, raw.name, wrapped.call_form(feeds))]


@shares_process(TENSORFLOW)
def output_checks_job(
    model_dir: str, tags: list[str], model_format: str, signature: SignatureSpec, inputs_path: str,
    outputs_path: str, atol: Tolerance, rtol: Tolerance,
) -> list[Check]:
    """Run the signature twice on the same inputs, then row by row; check the outputs, keep them as the reference."""
    runner = load_reference_runner(model_dir, tags, signature.key, model_format)
    feeds = read_npz(inputs_path)
    first = runner(feeds)
    second = runner(feeds)
    save_npz(first, outputs_path)
    return [
        *checks.output_checks(signature, first, second),
        checks.check_batch_consistency(runner, signature, feeds, first, atol, rtol),
    ]


@shares_process(TENSORFLOW)
def batch_sizes_job(
    model_dir: str, tags: list[str], model_format: str, key: str, inputs_path: str, sizes: list[int],
) -> list[tuple[int, str | None]]:
    """The signature on the inputs' first rows at each size in turn, until one runs: each size tried, with
    TensorFlow's reason where it failed."""
    runner = load_reference_runner(model_dir, tags, key, model_format)
    feeds = read_npz(inputs_path)
    tried: list[tuple[int, str | None]] = []
    for size in sizes:
        try:
            runner(batch_of(feeds, size))
        except SignatureFailed as exc:
            if DENIED in exc.reason:
                raise  # the OS sandbox stopped the model, at any batch size: a verdict of its own (os_sandbox)
            tried.append((size, exc.reason))
        else:
            tried.append((size, None))
            break
    return tried


def _hide_gpus_unless(device: str) -> None:
    # Device visibility is fixed when TensorFlow or ONNX Runtime initialise: set it before either loads.
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"


@shares_process(TENSORFLOW)
def tensorflow_benchmark_job(
    model_dir: str, tags: list[str], model_format: str, signature: SignatureSpec, inputs_path: str,
    plan: SweepPlan, runtimes: list[str], device: str, intra_op_threads: int, inter_op_threads: int,
    op_libraries: list[str] = (),
) -> list[Measured]:
    """The runtimes named that run the SavedModel itself (modelgate.runtimes.serving: the reference runtime of
    the model's format, the Keras wrapper), in a process of their own: thread counts and device visibility can
    only be set before TensorFlow runs its first op. A fresh process (one per device) gets the request's op
    libraries from here, not from its pool."""
    _hide_gpus_unless(device)
    configure_tensorflow_threads(intra_op_threads, inter_op_threads)
    import_op_libraries(list(op_libraries))
    if device == "gpu" and not import_tensorflow().config.list_physical_devices("GPU"):
        raise RuntimeError("TensorFlow sees no GPU (is the gpu extra, tensorflow[and-cuda], installed?)")
    reference = load_reference_runner(model_dir, tags, signature.key, model_format, device)
    feeds = read_npz(inputs_path)
    runners: dict[str, Runner] = {reference.name: reference}
    if KERAS.name in runtimes:
        wrapped = _keras_wrapper(model_dir, tags, model_format, signature, feeds, device)
        if not isinstance(wrapped, str):  # the benchmark stage says it went unmeasured; load-and-wrap says why
            runners[KERAS.name] = wrapped
    measured = []
    for runner in (runners[name] for name in runtimes if name in runners):
        measured += sweep(runner.infer, feeds, plan, runtime_name=runner.name, device=device,
                          intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    return measured


@shares_process(TENSORFLOW)
def tensorflow_references_job(
    model_dir: str, tags: list[str], model_format: str, signature_key: str, batches: list[tuple[str, str]],
) -> None:
    """The reference runtime's outputs for the extra comparison batches (inputs .npz, outputs .npz), from the
    model the validation's process already loaded."""
    runner = load_reference_runner(model_dir, tags, signature_key, model_format)
    for inputs_path, reference_path in batches:
        save_npz(runner(read_npz(inputs_path)), reference_path)


def keras_export_job(keras_file: str, export_dir: str) -> str:
    """Load a Keras file with safe_mode=True and export its SavedModel; returns the Keras version that did both.

    A process of its own, not a shared one: loading builds the model's layers in Keras's global state."""
    import keras

    name = Path(keras_file).name
    try:
        model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - whatever Keras refuses, the model cannot be served
        raise ModelRejected("model_loads", f"Keras cannot load {name} with safe_mode=True: "
                                           f"{first_meaningful_line(str(exc))}") from None
    try:
        model.export(export_dir, format="tf_saved_model", verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelRejected("saved_model_export", f"Keras cannot export {name} as a SavedModel: "
                                                  f"{first_meaningful_line(str(exc))}") from None
    return keras.__version__

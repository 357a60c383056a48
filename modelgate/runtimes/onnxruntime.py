"""ONNX Runtime: CPU, and CUDA where this ONNX Runtime has the provider (the gpu extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.runtimes import CPU, GPU, DeviceUnavailable, Runner, Runtime, Signature, decoded, encoded

RUNTIME = Runtime(
    name="onnxruntime", artifact_format="onnx", devices=(CPU, GPU), packages=("onnxruntime",), module=__name__,
    sandboxed=False,
)
PROVIDERS = {CPU: ["CPUExecutionProvider"], GPU: ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def warm_up() -> None:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401


def gpu_missing() -> str | None:
    from modelgate.reporting.environment import cuda_provider_available

    return None if cuda_provider_available() else "ONNX Runtime has no CUDA provider: install the gpu extra"


class OnnxRuntimeRunner(Runner):
    name = RUNTIME.name

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 inter_op_threads: int = 0):
        super().__init__()
        self.onnx_path, self.wanted_providers = onnx_path, providers or PROVIDERS[CPU]
        self.intra_op_threads, self.inter_op_threads = intra_op_threads, inter_op_threads

    def activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=self.wanted_providers)
        self.providers = self.placement = self.session.get_providers()
        self.graph_optimization_level = str(options.graph_optimization_level).rsplit(".", 1)[-1]
        self._output_names = [o.name for o in self.session.get_outputs()]

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # ONNX Runtime holds strings as text: fed bytes, it runs, and every value misses a string lookup
        # table's vocabulary (each becomes the table's default).
        text_feeds = {name: decoded(value, name) for name, value in feeds.items()}
        outputs = self.session.run(self._output_names, text_feeds)
        return {name: encoded(value) for name, value in zip(self._output_names, outputs)}


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> OnnxRuntimeRunner:
    """The converted file holds one signature: `signature` is not needed."""
    import onnxruntime as ort

    wanted = PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        raise DeviceUnavailable(f"this ONNX Runtime has no {wanted} (the gpu extra brings it)")
    runner = OnnxRuntimeRunner(artifact, PROVIDERS[device], intra_op_threads, inter_op_threads).activate()
    if runner.providers[0] != wanted:
        # ONNX Runtime falls back to CPU silently; a CPU figure labelled GPU would be a lie.
        raise DeviceUnavailable(f"ONNX Runtime fell back from {wanted} to {', '.join(runner.providers)}")
    return runner


# ONNX's float element types (TensorProto.DataType): FLOAT, FLOAT16, DOUBLE, BFLOAT16.
FLOAT_TYPES = {1, 10, 11, 16}
# A model larger than this goes to ONNX Runtime through a file with external data: a protobuf ends at 2 GiB.
INLINE_TRACE_BYTES = 1536 * 2**20


def quantized_copies(nodes) -> dict[str, str]:
    """Each tensor a QuantizeLinear -> DequantizeLinear pair follows (a QDQ int8 file), with the pair's output:
    what its consumers read, the tensor as int8 holds it. ONNX Runtime's quantizer may also fold an activation
    into the quantization (a Conv's Relu: the range starts at 0), so the tensor itself can be the value before it."""
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    copies = {}
    for node in nodes:
        if node.op_type == "QuantizeLinear":
            dequantized = [r for r in readers.get(node.output[0], []) if r.op_type == "DequantizeLinear"]
            if dequantized:
                copies[node.input[0]] = dequantized[0].output[0]
    return copies


def trace(artifact: str, feeds: dict[str, np.ndarray], max_bytes: int):
    """Every float tensor a node computes from the graph's inputs (what only initializers feed is left out: a
    weight's dequantization), read back by marking each a graph output (types from ONNX shape inference), in
    the graph's node order (topological, as ONNX requires), until max_bytes.

    A tensor read back is in the type the file declares: in a float16 file, float16. ONNX Runtime's CPU computes
    ops it has no float16 kernel for (MatMul, Conv, Add...) in float32 between casts, and drops a cast pair where
    two such ops meet, so a value between them may never be rounded to float16 in a plain run; read back, it is,
    as any float16 consumer (a Reshape, another runtime) would take it. In a QDQ int8 file a quantized tensor is
    read as its dequantized copy (quantized_copies), the value the next op reads."""
    import onnx
    import onnxruntime as ort

    from modelgate.numerics.divergence import TargetTensor, Trace, kept_within

    model = onnx.load(artifact)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without inference, the types the file declares itself
        inferred = model
    graph = inferred.graph
    types = {info.name: info.type.tensor_type.elem_type for info in [*graph.value_info, *graph.output, *graph.input]}
    declared = {output.name for output in model.graph.output}
    live = {i.name for i in model.graph.input} - {init.name for init in model.graph.initializer}
    copies = quantized_copies(model.graph.node)
    copy_outputs = {copy: tensor for tensor, copy in copies.items()}
    tensors, read = [], []
    for node in model.graph.node:
        if not any(name in live for name in node.input):
            continue
        live.update(name for name in node.output if name)
        for name in node.output:
            if not name or types.get(name) not in FLOAT_TYPES:
                continue
            read.append(name)
            if name not in copy_outputs:
                tensors.append(TargetTensor(name, node.name or name, node.op_type,
                                            tuple(copy_outputs.get(i, i) for i in node.input if i), (name,)))
            if name not in declared:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    written = []
    if model.ByteSize() > INLINE_TRACE_BYTES:
        written = [Path(artifact).with_name("trace_model.onnx"), Path(artifact).with_name("trace_model.onnx.data")]
        onnx.save_model(model, str(written[0]), save_as_external_data=True, location=written[1].name)
        source = str(written[0])
    else:
        source = model.SerializeToString()
    del model, inferred
    try:
        session = ort.InferenceSession(source, providers=PROVIDERS[CPU])
        wanted = {i.name for i in session.get_inputs()}
        values = dict(zip(read, session.run(read, {n: decoded(v, n) for n, v in feeds.items() if n in wanted})))
    finally:
        for path in written:  # a copy of the weights: not left beside the artifact
            path.unlink(missing_ok=True)
    ordered = ((t.name, values[copies[t.name]] if copies.get(t.name) in values else values[t.name]) for t in tensors)
    kept, left_out = kept_within(ordered, max_bytes)
    return Trace(tensors=tensors, values=kept, left_out=left_out)

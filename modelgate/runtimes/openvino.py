"""OpenVINO: the IR (.xml + .bin) on CPU, and on GPU where OpenVINO finds its GPU plugin's device (Intel GPUs)."""

from __future__ import annotations

import re
import sys

import numpy as np

from modelgate.runtimes import CPU, GPU, DeviceUnavailable, Runner, Runtime, Signature

RUNTIME = Runtime(
    name="openvino", artifact_format="openvino", devices=(CPU, GPU), packages=("openvino",), module=__name__,
)
DEVICES = {CPU: "CPU", GPU: "GPU"}
# A friendly name OpenVINO made up (its op type and a counter), not one the model gave.
GENERATED_NAME = re.compile(r"[A-Z][A-Za-z]*_\d+")


def import_openvino():
    """openvino, with its telemetry left out. `import openvino` imports its converter, which sends a Google
    Analytics event at once, and every convert_model sends more, unless a consent file in $HOME says no (CI=true
    too): telemetry is on when no file exists. Model processes must reach no network whatever $HOME holds, so
    openvino_telemetry is made unimportable, and OpenVINO falls back to its own stub, which sends nothing."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def warm_up() -> None:
    import_openvino()


class OpenVinoRunner(Runner):
    name = RUNTIME.name

    def __init__(self, xml_path: str, device_name: str, intra_op_threads: int = 0, core=None):
        super().__init__()
        self.xml_path, self.device_name, self.intra_op_threads = xml_path, device_name, intra_op_threads
        self.core = core  # an openvino.Core to compile with; None: a new one

    def activate_impl(self) -> None:
        openvino = import_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = self.core or openvino.Core()
        # Some CPUs (AMX, AVX512-BF16) default to bf16 and GPUs to f16: against TensorFlow's float32 outputs the
        # comparison would then measure the precision hint, not the conversion.
        config = {hints.inference_precision(): openvino.Type.f32}
        if self.intra_op_threads > 0:
            config[props.inference_num_threads()] = self.intra_op_threads
        self.compiled = compiled = core.compile_model(core.read_model(self.xml_path), self.device_name, config)
        full_device_name = core.get_property(self.device_name, props.device.full_name())
        precision = compiled.get_property(hints.inference_precision()).get_type_name()
        self.placement = [f"{self.device_name}: {full_device_name}", f"precision {precision}"]
        # The converter leaves each port one name, the signature's (OpenVINO's TF frontend names ports after it).
        self._outputs = [(port, port.get_any_name()) for port in compiled.outputs]

    def deactivate_impl(self) -> None:
        self.compiled = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.compiled(feeds)
        return {name: np.asarray(results[port]) for port, name in self._outputs}


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> OpenVinoRunner:
    """inter_op_threads has no OpenVINO counterpart: its CPU plugin splits work into streams, of which a
    latency-bound caller gets one. The converted IR holds one signature: `signature` is not needed."""
    core = import_openvino().Core()
    device_name = DEVICES[device]
    # Several GPUs are listed as GPU.0, GPU.1; "GPU" is the first.
    if device_name not in {found.split(".")[0] for found in core.available_devices}:
        found = ", ".join(core.available_devices) or "none"
        raise DeviceUnavailable(f"OpenVINO finds no {device_name} device (its devices: {found})")
    return OpenVinoRunner(artifact, device_name, intra_op_threads, core).activate()


def _port_name(port) -> str:
    names = sorted(port.get_names())
    return names[0] if names else f"{port.get_node().get_friendly_name()}:{port.get_index()}"


def trace(artifact: str, feeds: dict[str, np.ndarray], max_bytes: int):
    """Every real-valued output of every op of the IR (but constants and their conversions), added as model
    outputs and compiled for the CPU at f32, in the model's topological order. Candidate names: the op's
    friendly name and its output's tensor names. OpenVINO's TensorFlow frontend renames most ops of a
    SavedModel as its transformations fuse and move them (a transpose sunk past an op renames it), so few
    match TensorFlow's names: the report says how few, and lists the rest."""
    openvino = import_openvino()
    import openvino.properties.hint as hints

    from modelgate.numerics.divergence import TargetTensor, Trace, kept_within

    core = openvino.Core()
    model = core.read_model(artifact)
    skipped = {"Constant", "Parameter", "Result"}
    constant = set()
    ports, tensors = [], []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        sources = [i.get_source_output().get_node() for i in op.inputs()]
        if kind == "Constant" or (sources and all(s.get_friendly_name() in constant for s in sources)):
            constant.add(op.get_friendly_name())
        if kind in skipped or op.get_friendly_name() in constant:
            continue
        for port in op.outputs():
            if not port.get_element_type().is_real():
                continue
            ports.append(port)
            tensors.append(TargetTensor(
                _port_name(port), op.get_friendly_name(), kind,
                tuple(_port_name(i.get_source_output()) for i in op.inputs()),
                (op.get_friendly_name(), *sorted(port.get_names())),
            ))
    added = model.add_outputs(ports) if ports else []
    compiled = core.compile_model(model, DEVICES[CPU], {hints.inference_precision(): openvino.Type.f32})
    results = compiled(feeds)
    by_port = {id_: results[compiled.outputs[len(compiled.outputs) - len(added) + k]] for k, id_ in enumerate(
        t.name for t in tensors)}
    kept, left_out = kept_within(((name, np.asarray(value)) for name, value in by_port.items()), max_bytes)
    generated = [t.node for t in tensors if GENERATED_NAME.fullmatch(t.node)]
    note = (f"OpenVINO's transformations rename the ops they fuse or move (a transposed layout sunk past an op "
            f"renames it): {len(generated)} of its {len(tensors)} ops carry a generated name such as {generated[0]}"
            if generated else "")
    return Trace(tensors=tensors, values=kept, left_out=left_out, note=note)

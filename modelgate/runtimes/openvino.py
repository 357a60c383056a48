"""OpenVINO: the IR (.xml + .bin) on CPU, and on GPU where OpenVINO finds its GPU plugin's device (Intel GPUs)."""

from __future__ import annotations

import sys

import numpy as np

from modelgate.runtimes import CPU, GPU, DeviceUnavailable, Runner, Runtime, Signature

RUNTIME = Runtime(
    name="openvino", artifact_format="openvino", devices=(CPU, GPU), packages=("openvino",), module=__name__,
)
DEVICES = {CPU: "CPU", GPU: "GPU"}


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

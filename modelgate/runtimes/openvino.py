"""OpenVINO: the IR (.xml + .bin) on CPU, and on GPU where OpenVINO finds its GPU plugin's device (Intel GPUs)."""

from __future__ import annotations

import sys

import numpy as np

from modelgate.runtimes import CPU, GPU, DeviceUnavailable, Runtime

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


class OpenVinoRunner:
    name = "openvino"

    def __init__(self, compiled, device_name: str, full_device_name: str):
        import openvino.properties.hint as hints

        self.compiled = compiled
        precision = compiled.get_property(hints.inference_precision()).get_type_name()
        self.placement = [f"{device_name}: {full_device_name}", f"precision {precision}"]
        # The converter leaves each port one name, the signature's (OpenVINO's TF frontend names ports after it).
        self._outputs = [(port, port.get_any_name()) for port in compiled.outputs]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.compiled(feeds)
        return {name: np.asarray(results[port]) for port, name in self._outputs}


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int) -> OpenVinoRunner:
    """inter_op_threads has no OpenVINO counterpart: its CPU plugin splits work into streams, of which a
    latency-bound caller gets one."""
    openvino = import_openvino()
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = openvino.Core()
    device_name = DEVICES[device]
    # Several GPUs are listed as GPU.0, GPU.1; "GPU" is the first.
    if device_name not in {found.split(".")[0] for found in core.available_devices}:
        found = ", ".join(core.available_devices) or "none"
        raise DeviceUnavailable(f"OpenVINO finds no {device_name} device (its devices: {found})")
    # Some CPUs (AMX, AVX512-BF16) default to bf16 and GPUs to f16: against TensorFlow's float32 outputs the
    # comparison would then measure the precision hint, not the conversion.
    config = {hints.inference_precision(): openvino.Type.f32}
    if intra_op_threads > 0:
        config[props.inference_num_threads()] = intra_op_threads
    compiled = core.compile_model(core.read_model(artifact), device_name, config)
    return OpenVinoRunner(compiled, device_name, core.get_property(device_name, props.device.full_name()))

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

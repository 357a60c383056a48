"""ONNX in int8: the float32 ONNX target's file quantized by ONNX Runtime.

Which quantization, measured on ONNX Runtime 1.32's CPU kernels (one thread): dynamic quantization turns
every Conv into ConvInteger, which ran a MobileNetV2 (96x96) 8x slower than float32 (93 ms against 12 ms a
batch of 4; 4x on a small CNN); static quantization in QDQ format, calibrated on the validation's inputs, ran
it at 8.5 ms. So a graph with Conv and calibration inputs is quantized statically; anything else (MatMul,
Gemm, attention: what dynamic quantization is made for) dynamically, weights int8 either way.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from modelgate.criteria import Criteria
from modelgate.report import ConversionRecord
from modelgate.targets import ConversionSource, Target
from modelgate.targets.onnx.conversion import FILE_CHECKS
from modelgate.targets.onnx.reduced_precision import MODEL_FILE, checked, failed, refused_by_sandbox, reproduce

TARGET = Target(
    name="onnx-int8", artifact_format="onnx", parent="onnx", packages=("onnxruntime",), module=__name__,
    file_checks=tuple(FILE_CHECKS),
    description="The ONNX file quantized to int8 by ONNX Runtime: static (QDQ, calibrated on the validation's "
    "inputs) for graphs with Conv, dynamic (weights int8, activations quantized at run time) otherwise.",
    criteria=Criteria(
        elementwise=False,
        # Measured 0.99998 (Keras CNN logits) and 0.992 (MobileNetV2 96x96, untrained); one weight tensor
        # reversed falls to 0.51.
        min_cosine_similarity=0.98,
        # Measured 1.0 (CNN) and 0.875 (MobileNetV2: untrained, its logits nearly tied): int8 flips near-ties.
        min_top1_agreement=0.8,
        # Unjudged: int8 steps are coarse next to outputs near zero, so a correct file's 99th-percentile relative
        # error reaches 1 (measured 1.04 on MobileNetV2; 0.40 on the CNN's logits) and says nothing about breakage.
        max_p99_rel_diff=None,
    ),
)

CONV_OPS = {"Conv", "ConvTranspose"}


class NpzBatches:
    """The validation's input batches (.npz by input name) for ONNX Runtime's calibration."""

    def __init__(self, paths: list[str], input_names: list[str]):
        self.paths, self.input_names = paths, input_names
        self.batches = iter(paths)

    def get_next(self) -> dict | None:
        from modelgate.numerics.inputs import read_npz

        path = next(self.batches, None)
        if path is None:
            return None
        feeds = read_npz(path)
        return {name: feeds[name] for name in self.input_names}

    def __len__(self) -> int:
        return len(self.paths)


def quantize(parent_artifact: str, output_path: str, calibration_inputs: list[str]) -> dict:
    """Writes the int8 file; returns what was chosen, as the ConversionRecord's details."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="modelgate-int8-") as scratch:
        prepared = str(Path(scratch) / "prepared.onnx")
        # ORT's recommended first step: its graph optimizations (folding BatchNorm into Conv, fusing) and shape
        # inference, so that the quantizer sees fused ops and every tensor's type. Symbolic shape inference is
        # left out: it matters for transformer shapes, not for what ONNX's own shape inference already resolves.
        quant_pre_process(parent_artifact, prepared, skip_symbolic_shape=True)
        model = onnx.load(prepared, load_external_data=False)
        has_conv = any(node.op_type in CONV_OPS for node in model.graph.node)
        details = {"quantization": "dynamic", "weight_type": "int8", "calibration_batches": 0}
        if has_conv and calibration_inputs:
            outputs = {output.name for output in model.graph.output}
            initializers = {init.name for init in model.graph.initializer}
            reader = NpzBatches(calibration_inputs, [i.name for i in model.graph.input if i.name not in initializers])
            quantize_static(
                prepared, output_path, reader, quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                # The nodes that make the graph's outputs stay float: quantized, a softmax's small probabilities
                # rounded to 0 (99th-percentile relative error 1.0 on the CNN, 0.19 with them float).
                nodes_to_exclude=[node.name for node in model.graph.node if outputs & set(node.output)],
            )
            details.update(quantization="static", calibration_batches=len(calibration_inputs))
        else:
            quantize_dynamic(prepared, output_path, weight_type=QuantType.QInt8)
    return details


def convert(source: ConversionSource) -> ConversionRecord:
    started = time.monotonic()
    output = Path(source.output_dir) / MODEL_FILE
    command = reproduce(f"from modelgate.targets.onnx_int8 import quantize; quantize({source.parent_artifact!r}, "
                        f"{str(output)!r}, {list(source.calibration_inputs)!r})")
    try:
        details = quantize(source.parent_artifact, str(output), list(source.calibration_inputs))
    except Exception as exc:  # noqa: BLE001 - the quantizer raises what onnx, its own checks and ORT raise
        if refused_by_sandbox(exc):
            raise
        return failed(f"ONNX Runtime cannot quantize the model to int8: {type(exc).__name__}: {exc}", started,
                      {"weight_type": "int8"}, command)
    return checked(output, source, started, details, command)

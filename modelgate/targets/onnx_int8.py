"""ONNX in int8: the float32 ONNX target's file quantized by ONNX Runtime.

Which quantization, measured on ONNX Runtime 1.32's CPU kernels (one thread): dynamic quantization turns
every Conv into ConvInteger, which ran a MobileNetV2 (96x96) 8x slower than float32 (93 ms against 12 ms a
batch of 4; 4x on a small CNN); static quantization in QDQ format, calibrated on the validation's inputs, ran
it at 8.5 ms. So a graph with Conv and calibration inputs is quantized statically; anything else (MatMul,
Gemm, attention: what dynamic quantization is made for) dynamically, weights int8 either way.

Its remediation variants, in the order the issue names them: the diverging nodes (a localisation's first op and
the ops it reads) excluded from quantization, so that one layer's wide, outlier-heavy range no longer sets a
scale that rounds its small values away; without a localisation, or after it, the activations measured lossy as
it converts (exclude_lossy) excluded the same way; weights quantized per channel; calibration on the comparison
batches' inputs beside the validation's (the search hands them over: calibrating on the batches the file is
then judged on favours it, which the variant's reason says).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from modelgate.criteria import Criteria
from modelgate.report import ConversionRecord, Localisation
from modelgate.targets import ConversionSource, Target, TargetOptions, Variant
from modelgate.targets.onnx.conversion import FILE_CHECKS
from modelgate.targets.onnx.reduced_precision import (
    MODEL_FILE,
    activations,
    checked,
    failed,
    refused_by_sandbox,
    reproduce,
)


class Int8Options(TargetOptions):
    nodes_to_exclude: list[str] = Field(
        default=[], title="Nodes kept float",
        description="ONNX nodes left out of static quantization by name (ONNX Runtime's nodes_to_exclude), beside "
        "the nodes that make the outputs. A name of a tensor, or of a QuantizeLinear/DequantizeLinear node the int8 "
        "file added for one, excludes the node that writes that tensor and the nodes that read it.",
    )
    per_channel: bool = Field(
        default=False, title="Per-channel weights",
        description="Quantize each weight's output channels with scales of their own, not one scale per tensor.",
    )
    exclude_lossy: bool = Field(
        default=False, title="Keep lossy activations float",
        description="Also leave out of quantization the writer and readers of every activation that one int8 scale "
        "cannot hold: where the scale its widest values set on the calibration inputs rounds away most of some "
        "channel (an outlier-heavy range).",
    )
    extra_calibration_batches: int = Field(
        default=0, ge=0, title="Extra calibration batches",
        description="How many of the comparison batches' inputs calibrate static quantization beside the "
        "validation's inputs, where the remediation search hands them over (a validation's own conversion has "
        "none): the batches the file is then judged on.",
    )


TARGET = Target(
    name="onnx-int8", artifact_format="onnx", parent="onnx", packages=("onnxruntime",), module=__name__,
    options=Int8Options, file_checks=tuple(FILE_CHECKS),
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


QDQ_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear", "_QuantizeLinear_Output", "_DequantizeLinear_Output")


def excluded_nodes(model, names: list[str]) -> list[str]:
    """The nodes the names stand for (see Int8Options.nodes_to_exclude), by name, as the graph has them."""
    nodes = {node.name for node in model.graph.node}
    chosen = set()
    for name in names:
        if name in nodes:
            chosen.add(name)
            continue
        tensor = next((name.removesuffix(suffix) for suffix in QDQ_SUFFIXES if name.endswith(suffix)), name)
        chosen |= {node.name for node in model.graph.node if tensor in node.output or tensor in node.input}
    return sorted(chosen)


# The comparison batches' inputs the calibration variant adds: checks.comparison_batches' default.
MORE_CALIBRATION = 8
# A channel whose values lose more than this share of their magnitude (root mean square) in int8 is lost.
LOSSY_CHANNEL = 0.5


def _quantized(value, low: float, high: float):
    """value through ONNX Runtime's int8 activation quantization (MinMax, asymmetric) of the range [low, high]."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.round(-128 - low / scale)
    return (np.clip(np.round(value / scale) + zero, -128, 127) - zero) * scale


def lossy_tensors(model, feed_paths: list[str]) -> list[str]:
    """The activations whose int8 copy loses most of some channel (axis 1, and the last axis), on these inputs."""
    ranges: dict[str, tuple[float, float]] = {}
    for values in activations(model, feed_paths):
        for name, value in values.items():
            if value.size and np.isfinite(value).all():
                low, high = ranges.get(name, (np.inf, -np.inf))
                ranges[name] = (min(low, float(value.min())), max(high, float(value.max())))
    lost: dict[str, dict[int, np.ndarray]] = {}
    kept: dict[str, dict[int, np.ndarray]] = {}
    for values in activations(model, feed_paths):
        for name, value in values.items():
            if name not in ranges or value.ndim < 2:
                continue
            error = (value - _quantized(value, *ranges[name])) ** 2
            for axis in {1, value.ndim - 1}:
                others = tuple(a for a in range(value.ndim) if a != axis)
                lost.setdefault(name, {})[axis] = lost.get(name, {}).get(axis, 0) + error.sum(axis=others)
                kept.setdefault(name, {})[axis] = kept.get(name, {}).get(axis, 0) + (value ** 2).sum(axis=others)
    return sorted(name for name in lost if any(
        (np.sqrt(lost[name][axis][kept[name][axis] > 0] / kept[name][axis][kept[name][axis] > 0]) > LOSSY_CHANNEL).any()
        for axis in lost[name]))


def quantize(parent_artifact: str, output_path: str, calibration_inputs: list[str],
             nodes_to_exclude: list[str] = (), per_channel: bool = False, exclude_lossy: bool = False) -> dict:
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
            lossy = lossy_tensors(model, calibration_inputs) if exclude_lossy else []
            excluded = excluded_nodes(model, [*nodes_to_exclude, *lossy])
            quantize_static(
                prepared, output_path, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                # The nodes that make the graph's outputs stay float: quantized, a softmax's small probabilities
                # rounded to 0 (99th-percentile relative error 1.0 on the CNN, 0.19 with them float).
                nodes_to_exclude=sorted({*excluded, *(node.name for node in model.graph.node
                                                      if outputs & set(node.output))}),
            )
            details.update(quantization="static", calibration_batches=len(calibration_inputs))
        else:  # activations are quantized as it runs: nothing calibrated to measure as lossy
            excluded = excluded_nodes(model, list(nodes_to_exclude))
            quantize_dynamic(prepared, output_path, weight_type=QuantType.QInt8, per_channel=per_channel,
                             nodes_to_exclude=excluded)
        if per_channel:
            details["per_channel"] = True
        if excluded:  # beside, in static quantization, the nodes that make the outputs
            details.update(nodes_excluded=len(excluded), excluded_nodes=", ".join(excluded))
        if missing := [name for name in nodes_to_exclude if not excluded_nodes(model, [name])]:
            # ORT's optimizations rename what they fuse (MatMul and Add into Gemm, say)
            details["nodes_not_found"] = ", ".join(missing)
    return details


def convert(source: ConversionSource) -> ConversionRecord:
    started = time.monotonic()
    output = Path(source.output_dir) / MODEL_FILE
    options = TARGET.options_for(source)
    calibration = [*source.calibration_inputs, *source.extra_calibration_inputs[:options.extra_calibration_batches]]
    arguments = (source.parent_artifact, str(output), calibration, list(options.nodes_to_exclude), options.per_channel,
                 options.exclude_lossy)
    command = reproduce(f"from modelgate.targets.onnx_int8 import quantize; quantize{arguments!r}")
    try:
        details = quantize(*arguments)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises what onnx, its own checks and ORT raise
        if refused_by_sandbox(exc):
            raise
        return failed(f"ONNX Runtime cannot quantize the model to int8: {type(exc).__name__}: {exc}", started,
                      {"weight_type": "int8"}, command)
    return checked(output, source, started, details, command)


def variants(options: Int8Options, localisation: Localisation | None) -> list[Variant]:
    """Nodes kept float (the localisation's diverging ones, then those measured lossy), then per-channel weights,
    then calibration on the comparison batches too."""
    found = []
    if localisation is not None and localisation.first is not None:
        diverging = [t.target_node for t in (localisation.first, *localisation.upstream) if t.target_node]
        chosen = sorted({*options.nodes_to_exclude, *diverging})
        if diverging and chosen != sorted(options.nodes_to_exclude):
            found.append(Variant(
                f"{len(diverging)} diverging ops kept float", options.model_copy(update={"nodes_to_exclude": chosen}),
                f"the first op whose output leaves the criteria ({localisation.first.tensorflow_name}) and the ops it "
                "reads are left out of quantization, so their range sets no int8 scale"))
    if not options.exclude_lossy:
        found.append(Variant("lossy activations kept float", options.model_copy(update={"exclude_lossy": True}),
                             "the activations whose one int8 scale rounds away most of some channel (an "
                             "outlier-heavy range), measured as it converts, are left out of quantization"))
    if not options.per_channel:
        found.append(Variant("per-channel weights", options.model_copy(update={"per_channel": True}),
                             "each output channel of a weight gets its own scale"))
    if not options.extra_calibration_batches:
        found.append(Variant(
            "calibrated on the comparison batches too",
            options.model_copy(update={"extra_calibration_batches": MORE_CALIBRATION}),
            "calibration sees the comparison batches' inputs too (as many as there are, up to "
            f"{MORE_CALIBRATION}): a range the validation's inputs alone miss, on the batches it is judged on"))
    return found

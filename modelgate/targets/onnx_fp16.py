"""ONNX in float16: the float32 ONNX target's file with weights and activations in half precision
(onnxconverter-common), inputs and outputs kept float32 so that callers feed and read it as before."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from modelgate.criteria import Criteria
from modelgate.report import ConversionRecord
from modelgate.targets import ConversionSource, Target, TargetOptions
from modelgate.targets.onnx.conversion import FILE_CHECKS
from modelgate.targets.onnx.reduced_precision import MODEL_FILE, checked, failed, refused_by_sandbox, reproduce


class Float16Options(TargetOptions):
    op_block_list: list[str] = Field(
        default=[], title="Ops kept in float32",
        description="ONNX op types kept in float32 beside onnxconverter-common's own list (ops without float16 "
        "kernels), for a model whose float16 run misbehaves in them.",
    )


TARGET = Target(
    name="onnx-fp16", artifact_format="onnx", parent="onnx", packages=("onnxconverter_common", "onnx"),
    module=__name__, options=Float16Options, file_checks=tuple(FILE_CHECKS),
    description="The ONNX file converted to float16 (onnxconverter-common, float32 inputs and outputs kept); "
    "ops without float16 kernels stay float32 between casts.",
    criteria=Criteria(
        elementwise=False,
        # Measured 1 - 1.4e-8 (Keras CNN logits) and above 0.9999995 (MobileNetV2 96x96); one weight tensor
        # reversed falls to 0.51: a correct float16 file passes with room, a broken one is nowhere near.
        min_cosine_similarity=0.999,
        # Measured 1.0 on both; one near-tie flipping in a handful of rows must not fail a correct file.
        min_top1_agreement=0.95,
        # Measured 0.021 (CNN logits, inflated by values near zero), 0.003 (CNN softmax), 0.006 (MobileNetV2).
        max_p99_rel_diff=0.1,
    ),
)


def _outputs_read_inside(model) -> None:
    """A graph output that another node also reads gets an Identity of its own. With keep_io_types,
    onnxconverter-common 1.16 casts such an output back to float32 in place, and its float16 reader then
    gets float32: ONNX Runtime refuses the file (a Keras softmax after its logits output is enough)."""
    from onnx import helper

    read = {name for node in model.graph.node for name in node.input}
    shared = {output.name for output in model.graph.output} & read
    for node in list(model.graph.node):
        for index, name in enumerate(node.input):
            if name in shared:
                node.input[index] = f"{name}__inner"
        for index, name in enumerate(node.output):
            if name in shared:
                node.output[index] = f"{name}__inner"
                model.graph.node.append(helper.make_node("Identity", [f"{name}__inner"], [name], name=f"{name}__output"))


def to_float16(parent_artifact: str, output_path: str, op_block_list: list[str]) -> int:
    """Writes the float16 file; returns how many nodes stay float32 (their ops are in op_block_list)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(parent_artifact)
    _outputs_read_inside(model)
    kept = sum(node.op_type in op_block_list for node in model.graph.node)
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block_list), output_path)
    return kept


def convert(source: ConversionSource) -> ConversionRecord:
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    started = time.monotonic()
    output = Path(source.output_dir) / MODEL_FILE
    # onnxconverter-common's list of ops that have no float16 kernel in ONNX Runtime (ML ops, TopK, Resize,
    # Range, CumSum, Min, Max, ...), and any the request adds for a model whose float16 run misbehaves.
    op_block_list = sorted({*DEFAULT_OP_BLOCK_LIST, *TARGET.options_for(source).op_block_list})
    command = reproduce(f"from modelgate.targets.onnx_fp16 import to_float16; "
                        f"to_float16({source.parent_artifact!r}, {str(output)!r}, {op_block_list!r})")
    details = {"precision": "float16", "keep_io_types": True, "nodes_kept_float32": None}
    try:
        details["nodes_kept_float32"] = to_float16(source.parent_artifact, str(output), op_block_list)
    except Exception as exc:  # noqa: BLE001 - onnxconverter-common raises what onnx and its own checks raise
        if refused_by_sandbox(exc):
            raise
        return failed(f"onnxconverter-common cannot convert the model to float16: {type(exc).__name__}: {exc}",
                      started, details, command)
    return checked(output, source, started, details, command)

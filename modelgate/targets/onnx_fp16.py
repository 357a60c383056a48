"""ONNX in float16: the float32 ONNX target's file with weights and activations in half precision
(onnxconverter-common), inputs and outputs kept float32 so that callers feed and read it as before.

Its remediation variants (tried when the file misses its criteria) keep parts of the graph in float32, with the
nodes between and reading them, fewest first: the nodes whose TensorFlow tensors pass float16's range (the
localisation's reference_max_abs), then the first diverging node, then it and its path to the outputs; then,
localisation or not, the nodes whose float32 outputs pass float16's range on the validation's inputs (measured as
it converts), and the op types that overflow float16 in common models (Exp, Pow, reductions)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field

from modelgate.criteria import Criteria
from modelgate.report import ConversionRecord, Localisation, TensorDivergence
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

FLOAT16_MAX = 65504.0


class Float16Options(TargetOptions):
    op_block_list: list[str] = Field(
        default=[], title="Ops kept in float32",
        description="ONNX op types kept in float32 beside onnxconverter-common's own list (ops without float16 "
        "kernels), for a model whose float16 run misbehaves in them.",
    )
    node_block_list: list[str] = Field(
        default=[], title="Nodes kept in float32",
        description="ONNX nodes kept in float32 by name (as the float32 ONNX file names them: a localisation's "
        "target_node), with every node on a path between two of them and the nodes that read what they write, so "
        "that a value kept float32 for its range or precision is not cast straight back to float16.",
    )
    keep_out_of_range: bool = Field(
        default=False, title="Keep what passes float16's range",
        description="Also keep float32 the nodes whose outputs, run in float32 on the validation's inputs, pass "
        "float16's largest value (65504), as node_block_list keeps its nodes.",
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


def blocked_nodes(model, names: list[str]) -> list[str]:
    """The named nodes, every node on a path between two of them (a localisation lists matched tensors only,
    and thins a long path), and the nodes that read what they write: by name. A name no node has is left out."""
    nodes = model.graph.node
    writer = {output: index for index, node in enumerate(nodes) for output in node.output}
    named = {index for index, node in enumerate(nodes) if node.name in set(names)}
    inputs_of = [{writer[name] for name in node.input if name in writer} for node in nodes]
    below, above = set(named), set(named)  # the graph is topologically sorted: one pass each way
    for index in range(len(nodes)):
        if inputs_of[index] & below:
            below.add(index)
    for index in reversed(range(len(nodes))):
        if index in above:
            above |= inputs_of[index]
    readers = {index for index in range(len(nodes)) if inputs_of[index] & (named | (below & above))}
    return sorted({nodes[index].name for index in named | (below & above) | readers})


def out_of_range_nodes(model, feed_paths: list[str]) -> list[str]:
    """The nodes that write a value past float16's range, run in float32 on these inputs."""
    beyond = set()
    for values in activations(model, feed_paths):
        beyond |= {name for name, value in values.items() if value.size and np.nanmax(np.abs(value)) > FLOAT16_MAX}
    return [node.name for node in model.graph.node if beyond & set(node.output)]


def to_float16(parent_artifact: str, output_path: str, op_block_list: list[str],
               node_block_list: list[str] = (), out_of_range_inputs: list[str] = ()) -> int:
    """Writes the float16 file; returns how many nodes stay float32 (their ops are in op_block_list, or they are
    in node_block_list, or write values past float16's range on out_of_range_inputs, or lie between or read
    what such nodes write)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(parent_artifact)
    _outputs_read_inside(model)
    measured = out_of_range_nodes(model, list(out_of_range_inputs)) if out_of_range_inputs else []
    nodes = blocked_nodes(model, [*node_block_list, *measured])
    kept = sum(node.op_type in op_block_list or node.name in nodes for node in model.graph.node)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block_list,
                                                 node_block_list=nodes)
    _float32_outputs(converted, {o.name for o in model.graph.output if o.type.tensor_type.elem_type == FLOAT})
    onnx.save(converted, output_path)
    return kept


FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto's element types


def _float32_outputs(model, names: set[str]) -> None:
    """keep_io_types, where onnxconverter-common 1.16 misses it: a float32 output whose node is kept float32 gets
    a Cast to float16 after it (as if a float16 node read it), and the file's output turns float16."""
    for node in model.graph.node:
        if node.op_type == "Cast" and names & set(node.output):
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == FLOAT16:
                    attribute.i = FLOAT
    for output in model.graph.output:
        if output.name in names:
            output.type.tensor_type.elem_type = FLOAT


def convert(source: ConversionSource) -> ConversionRecord:
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    started = time.monotonic()
    output = Path(source.output_dir) / MODEL_FILE
    # onnxconverter-common's list of ops that have no float16 kernel in ONNX Runtime (ML ops, TopK, Resize,
    # Range, CumSum, Min, Max, ...), and any the request adds for a model whose float16 run misbehaves.
    options = TARGET.options_for(source)
    op_block_list = sorted({*DEFAULT_OP_BLOCK_LIST, *options.op_block_list})
    measured_on = list(source.calibration_inputs) if options.keep_out_of_range else []
    arguments = (source.parent_artifact, str(output), op_block_list, list(options.node_block_list), measured_on)
    command = reproduce(f"from modelgate.targets.onnx_fp16 import to_float16; to_float16{arguments!r}")
    details = {"precision": "float16", "keep_io_types": True, "nodes_kept_float32": None}
    if options.keep_out_of_range and not measured_on:
        return failed("keep_out_of_range needs the validation's inputs, and there are none", started, details, command)
    try:
        details["nodes_kept_float32"] = to_float16(*arguments)
    except Exception as exc:  # noqa: BLE001 - onnxconverter-common raises what onnx and its own checks raise
        if refused_by_sandbox(exc):
            raise
        return failed(f"onnxconverter-common cannot convert the model to float16: {type(exc).__name__}: {exc}",
                      started, details, command)
    return checked(output, source, started, details, command)


# ONNX ops whose float16 results overflow in common models (a softmax's or a norm's exponent or sum of squares),
# kept float32 when no localisation says where the error starts.
OVERFLOW_PRONE_OPS = ["Exp", "Pow", "ReduceSum", "ReduceSumSquare", "ReduceMean", "ReduceL2", "ReduceLogSumExp",
                      "Softmax", "LogSoftmax", "LayerNormalization"]


def _nodes(tensors: list[TensorDivergence]) -> list[str]:
    return list(dict.fromkeys(tensor.target_node for tensor in tensors if tensor.target_node))


def variants(options: Float16Options, localisation: Localisation | None) -> list[Variant]:
    """More of the graph kept float32 at each step: what passes float16's range, the first diverging node, it and
    its path to the outputs; without a localisation, the op types prone to overflow."""
    found: list[Variant] = []

    def keep_nodes(nodes: list[str], label: str, why: str) -> None:
        chosen = sorted({*options.node_block_list, *nodes})
        if nodes and chosen != sorted(options.node_block_list) and all(
                v.options.node_block_list != chosen for v in found):
            found.append(Variant(label, options.model_copy(update={"node_block_list": chosen}), why))

    if localisation is not None and localisation.first is not None:
        first = localisation.first
        tensors = [*localisation.upstream, first, *localisation.downstream]
        overflowing = _nodes([t for t in tensors if (t.reference_max_abs or 0.0) > FLOAT16_MAX])
        keep_nodes(overflowing, f"{len(overflowing)} overflowing ops and readers kept in float32",
                   "TensorFlow's values there pass float16's largest value (65504): those nodes and their readers "
                   "stay float32")
        keep_nodes(_nodes([first]), "the diverging op and readers kept in float32",
                   f"the first op whose output leaves the criteria ({first.tensorflow_name}) and its readers stay float32")
        path = _nodes([first, *localisation.downstream])
        keep_nodes(path, f"{len(path)} ops from the divergence on kept in float32",
                   "the first diverging op and every matched op after it on the way to the outputs stay float32")
    if not options.keep_out_of_range:
        found.append(Variant(
            "ops past float16's range kept in float32", options.model_copy(update={"keep_out_of_range": True}),
            "the nodes whose float32 outputs on the validation's inputs pass 65504, measured as it converts, and "
            "the nodes between and reading them stay float32"))
    prone = sorted(set(OVERFLOW_PRONE_OPS) - set(options.op_block_list))
    if prone:
        found.append(Variant(
            "Exp, Pow, Softmax and reductions kept in float32",
            options.model_copy(update={"op_block_list": sorted({*options.op_block_list, *prone})}),
            "the ops whose float16 results overflow in common models (exponents, sums of squares) stay float32",
        ))
    return found

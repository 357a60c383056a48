"""ONNX simplified: the float32 ONNX target's file through onnxslim, which folds constants (shape arithmetic
tf2onnx leaves for run time: Shape, Gather, Concat before a Reshape), fuses patterns (MatMul and Add into Gemm,
Conv and BatchNormalization), drops dead and duplicate nodes and ties shared weights. Still float32: judged
by the default criteria, every element within the graph's tolerances. Fewer nodes often run faster in ONNX
Runtime, which the benchmark says per model.

Its remediation variant leaves onnxslim's fusions out: a fused pattern (Conv with BatchNormalization, MatMul
with Add into Gemm) computes in another order and rounds otherwise; the other passes fold and drop, which leaves
the float32 values as they were."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from modelgate.report import ConversionRecord
from modelgate.targets import ConversionSource, Target, TargetOptions, Variant
from modelgate.targets.onnx.conversion import EXTERNAL_DATA_FILE, EXTERNAL_DATA_MIN_BYTES, FILE_CHECKS
from modelgate.targets.onnx.reduced_precision import MODEL_FILE, checked, failed, refused_by_sandbox, reproduce

# onnxslim's own names (onnxslim.core.optimization.OptimizationSettings), spelled out here: the parent reads
# this module's options before any model is inspected, without importing onnxslim.
Optimization = Literal["constant_folding", "graph_fusion", "dead_node_elimination", "subexpression_elimination",
                       "weight_tying"]


class SlimOptions(TargetOptions):
    skip_optimizations: list[Optimization] = Field(
        default=[], title="Skipped optimizations",
        description="onnxslim passes left out: constant_folding, graph_fusion, dead_node_elimination, "
        "subexpression_elimination, weight_tying. Empty: all of them run.",
    )
    skip_fusion_patterns: list[str] = Field(
        default=[], title="Skipped fusion patterns",
        description="onnxslim fusion patterns left out by name (FusionGemm, FusionConvBN, EliminationReshape, ...), "
        "for a model whose fused file misbehaves in one of them.",
    )
    size_threshold: int = Field(
        default=0, ge=0, title="Constant folding size limit",
        description="Constants larger than this many bytes are not folded (a folded constant is stored in the "
        "file). 0: every constant is folded.",
    )


TARGET = Target(
    name="onnx-slim", artifact_format="onnx", parent="onnx", module=__name__,
    packages=("onnxslim", "onnx", "onnxruntime"),  # onnxruntime: the file's checks load it
    options=SlimOptions, file_checks=tuple(FILE_CHECKS),
    description="The ONNX file simplified by onnxslim (constants folded, patterns fused, dead nodes dropped), "
    "still float32: fewer nodes, often faster in ONNX Runtime.",
)


def unknown_fusion_patterns(names: list[str]) -> list[str]:
    """onnxslim passes over a pattern it does not know without a word; modelgate says so."""
    from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

    return sorted(set(names) - set(DEFAULT_FUSION_PATTERNS))


def simplify(parent_artifact: str, output_path: str, skip_optimizations: list[str], skip_fusion_patterns: list[str],
             size_threshold: int) -> dict:
    """Writes the simplified file, with external data where the parent file has it (such a file goes to
    MLflow with the report's artifacts no more than the parent's does); returns the main graph's nodes before
    and after, as the ConversionRecord's details."""
    import onnx
    import onnxslim

    model = onnx.load(parent_artifact)  # external data is read in with the graph
    before = len(model.graph.node)
    slimmed = onnxslim.slim(model, skip_optimizations=skip_optimizations or None,
                            skip_fusion_patterns=skip_fusion_patterns or None, size_threshold=size_threshold or None)
    external = Path(parent_artifact).with_name(EXTERNAL_DATA_FILE).is_file()
    if external:  # the parent passed 2 GB, or was asked for external data: the same layout
        onnx.save_model(slimmed, output_path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA_FILE, size_threshold=EXTERNAL_DATA_MIN_BYTES)
    else:
        onnx.save_model(slimmed, output_path)
    return {"nodes_before": before, "nodes_after": len(slimmed.graph.node), "external_data": external}


def convert(source: ConversionSource) -> ConversionRecord:
    from onnxslim import __version__

    started = time.monotonic()
    output = Path(source.output_dir) / MODEL_FILE
    options = TARGET.options_for(source)
    arguments = (source.parent_artifact, str(output), list(options.skip_optimizations),
                 list(options.skip_fusion_patterns), options.size_threshold)
    command = reproduce(f"from modelgate.targets.onnx_slim import simplify; simplify{arguments!r}")
    # ConversionRecord.details holds scalars: the skipped passes as one line, empty when every pass ran.
    details = {"onnxslim": __version__, "skipped_optimizations": ", ".join(options.skip_optimizations),
               "nodes_before": None, "nodes_after": None}
    unknown = unknown_fusion_patterns(options.skip_fusion_patterns)
    if unknown:
        return failed(f"onnxslim has no fusion pattern {', '.join(unknown)} to skip", started, details, command)
    try:
        details.update(simplify(*arguments))
    except Exception as exc:  # noqa: BLE001 - onnxslim raises what onnx, graphsurgeon and its shape inference raise
        if refused_by_sandbox(exc):
            raise
        return failed(f"onnxslim cannot simplify the model: {type(exc).__name__}: {exc}", started, details, command)
    return checked(output, source, started, details, command)


def variants(options: SlimOptions, localisation=None) -> list[Variant]:
    """onnxslim's fusions left out (see the module's docstring): the only pass that changes how values round."""
    if "graph_fusion" in options.skip_optimizations:
        return []
    skipped = [*options.skip_optimizations, "graph_fusion"]
    return [Variant("fusions left out", options.model_copy(update={"skip_optimizations": skipped}),
                    "onnxslim's fused patterns compute in another order; unfused, each op runs as tf2onnx wrote it")]

"""float32 ONNX, converted by tf2onnx and judged by what the file does (modelgate.onnx_export)."""

from __future__ import annotations

from pathlib import Path

from modelgate.onnx_export import (
    PURE_PYTHON_PROTOBUF,
    ConversionPlan,
    convert_with_tf2onnx,
    default_opset,
    needs_external_data,
    needs_large_model,
)
from modelgate.schemas import ConversionRecord
from modelgate.targets import ConversionSource, Target

TARGET = Target(
    name="onnx", artifact_format="onnx", packages=("tf2onnx", "onnx", "onnxruntime"), module=__name__,
    description="float32 ONNX from tf2onnx, run with ONNX Runtime",
)


def warm_up() -> None:
    """What tf2onnx's command line imports, without importing tf2onnx.convert itself (the conversion runs
    that module as __main__): the converter's child starts with it while the parent inspects the model."""
    from modelgate.op_allowlist import import_op_libraries_from_environment
    from modelgate.quiet import import_tensorflow

    import_tensorflow()
    import_op_libraries_from_environment()
    import onnxruntime  # noqa: F401 - the converted file is loaded once to check it
    from tf2onnx import optimizer, tf_loader, tf_utils, tfonnx  # noqa: F401


def _external_data(source: ConversionSource) -> bool:
    return source.options.get("external_data") == "always" or needs_external_data(source.model_dir)


def _large_model(source: ConversionSource) -> bool:
    return _external_data(source) or needs_large_model(source.model_dir)


def plan_for(source: ConversionSource) -> ConversionPlan:
    return ConversionPlan(
        model_dir=source.model_dir,
        signature_key=source.signature.key,
        tags=source.tags,
        opset=source.options.get("opset") or default_opset(),
        output_path=str(Path(source.output_dir) / "model.onnx"),
        large_model=_large_model(source),
        external_data=_external_data(source),
    )


def process_environment(source: ConversionSource) -> dict[str, str]:
    """tf2onnx's large-model path runs with pure-Python protobuf (see onnx_export.LARGE_MODEL_ABOVE_BYTES),
    which is chosen as protobuf is first imported: in a child of its own, not the warm one."""
    return PURE_PYTHON_PROTOBUF if _large_model(source) else {}


def convert(source: ConversionSource) -> ConversionRecord:
    return convert_with_tf2onnx(plan_for(source), source.signature, source.log_path)

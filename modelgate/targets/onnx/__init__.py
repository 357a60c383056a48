"""float32 ONNX, converted by tf2onnx and judged by what the file does (modelgate.targets.onnx.conversion);
logged to MLflow as an mlflow.onnx model (modelgate.targets.onnx.logged_model), and its model.onnx registered
beside the SavedModel, named in the version's MLmodel as MLflow's onnx flavor."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import Field

from modelgate.report import ConversionRecord
from modelgate.targets import ConversionSource, LoggedModelSource, Target, TargetOptions, Variant
from modelgate.targets.onnx.conversion import (
    EXTERNAL_DATA_FILE,
    FILE_CHECKS,
    PURE_PYTHON_PROTOBUF,
    ConversionPlan,
    convert_with_tf2onnx,
    default_opset,
    needs_external_data,
    needs_large_model,
)


class OnnxOptions(TargetOptions):
    opset: int = Field(
        default=0, ge=0, title="Opset",
        description="The ONNX opset tf2onnx converts to. 0: the highest that tf2onnx and ONNX Runtime both support.",
    )
    external_data: Literal["auto", "always"] = Field(
        default="auto", title="External data",
        description="auto: weights go to model.onnx.data only when the file would pass 2 GB; always: every time.",
    )


TARGET = Target(
    name="onnx", artifact_format="onnx", packages=("tf2onnx", "onnx", "onnxruntime"), module=__name__,
    options=OnnxOptions, asked_by_default=True, converts_in_reference_process=True, traced_graph="tf2onnx",
    description="float32 ONNX from tf2onnx, run with ONNX Runtime",
    file_checks=("onnx_ops_converted", *FILE_CHECKS),
)


def _external_data(source: ConversionSource) -> bool:
    return TARGET.options_for(source).external_data == "always" or needs_external_data(source.model_dir)


def _large_model(source: ConversionSource) -> bool:
    return _external_data(source) or needs_large_model(source.model_dir)


def plan_for(source: ConversionSource) -> ConversionPlan:
    return ConversionPlan(
        model_dir=source.model_dir,
        signature_key=source.signature.key,
        tags=source.tags,
        opset=TARGET.options_for(source).opset or default_opset(),
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


def log_model(source: LoggedModelSource) -> str:
    from modelgate.targets.onnx.logged_model import log_onnx_model

    return log_onnx_model(source)


def registered_files(artifact: str) -> list[Path]:
    """model.onnx (with its external data, where it has any), beside the SavedModel of a registered version."""
    external_data = Path(artifact).with_name(EXTERNAL_DATA_FILE)
    return [Path(artifact), *([external_data] if external_data.is_file() else [])]


def mlmodel_flavor(artifact: str) -> tuple[str, dict]:
    """model.onnx as MLflow's onnx flavor in a registered version's MLmodel, as mlflow.onnx.save_model writes it:
    `mlflow.onnx.load_model("models:/NAME/N")` reads it (its external data beside it)."""
    return "onnx", {"onnx_version": metadata.version("onnx"), "data": Path(artifact).name,
                    "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "code": None}


# tf2onnx's own default opset, the one most models converted with it were: its longest-tested op mappings.
SETTLED_OPSET = 13


def variants(options: OnnxOptions, localisation=None) -> list[Variant]:
    """Another opset: tf2onnx maps some TensorFlow ops to other ONNX ops, or to other versions of one, by opset
    (a resize's rounding, a reduction's axes as an input), and ONNX Runtime runs each version's own kernel.
    The only conversion setting that changes the file's numerics."""
    if options.opset == SETTLED_OPSET:
        return [Variant("highest opset", options.model_copy(update={"opset": 0}),
                        "the highest opset tf2onnx and ONNX Runtime both support, tf2onnx's newer op mappings")]
    return [Variant(f"opset {SETTLED_OPSET}", options.model_copy(update={"opset": SETTLED_OPSET}),
                    "tf2onnx's own default opset, whose op mappings most converted models have used")]

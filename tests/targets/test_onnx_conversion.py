"""The ONNX stages on real SavedModels: tf2onnx in its child, the checks after it, ONNX Runtime against TF."""

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from benchmarks.models import dense_of_size
from modelgate.errors import ConversionFailed
from modelgate.execution.jobs import inspection_job
from modelgate.numerics.compare import UnknownOutputTolerance, tolerance_for
from modelgate.report import TargetSection, ValidationReport
from modelgate.request import ValidationRequest
from modelgate.stages import ComparisonBatches, TargetArtifact
from modelgate.targets.onnx.conversion import (
    EXTERNAL_DATA_FILE,
    EXTERNAL_DATA_MIN_BYTES,
    LARGE_MODEL_ABOVE_BYTES,
    PURE_PYTHON_PROTOBUF,
    default_opset,
    splice_constant_identities,
)
from tasks.compare_target import compare_target
from tasks.export_target import export_target, record_target_error
from tasks.prepare_inputs import prepare_inputs
from tasks.reference_batches import reference_batches
from tasks.run_checks import run_checks
from tasks.scan_ops import scan_ops
from tasks.select_signature import select_signature


class Stages:
    """The stages up to compare-onnx, called as the flow calls them, on one model."""

    def __init__(self, model_dir: Path, workdir: Path, **fields):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = str(workdir)
        self.request = ValidationRequest(source=str(model_dir), output_dir=str(workdir), **fields)
        inspection = inspection_job(str(model_dir), self.workdir)
        self.choice = select_signature.fn(inspection, None, None, self.request.atol, self.request.rtol)
        scan_ops.fn(self.choice, [])  # as the flow does: nothing runs before the op scan cleared the model
        self.inputs = prepare_inputs.fn(self.choice, self.request, self.workdir)

    def export(self) -> TargetArtifact:
        return export_target.fn("onnx", self.choice, None, self.inputs, self.request, self.workdir)

    @cached_property
    def batches(self) -> ComparisonBatches:
        """The comparison batches and TensorFlow's outputs on them: computed once, as the flow computes them once
        for every target it compares."""
        reference = run_checks.fn(self.choice, self.inputs, self.request, self.workdir)
        return reference_batches.fn(self.choice, self.inputs, reference, self.request, self.workdir)

    def compare(self, exported: TargetArtifact):
        return compare_target.fn("onnx", self.choice, exported, self.batches, self.request, self.workdir)


@pytest.fixture(scope="module")
def mixed(onnx_models, tmp_path_factory):
    """Four inputs (float32 image with dynamic spatial dims, int32, int64, bool), three outputs; converted once."""
    stages = Stages(onnx_models["mixed_inputs"], tmp_path_factory.mktemp("mixed"))
    exported = stages.export()
    return stages, exported, stages.compare(exported)


def test_mixed_dtypes_and_dynamic_dims_convert_and_every_check_passes(mixed):
    stages, exported, _ = mixed
    conversion = exported.conversion
    assert conversion.failure is None and not conversion.details["external_data"]
    assert conversion.details["opset"] == default_opset() == 18  # tf2onnx 1.17 stops at 18; onnx and ONNX Runtime go higher
    assert {check.name: check.status for check in conversion.checks} == {
        "onnx_ops_converted": "passed", "onnx_checker": "passed", "onnx_shape_inference": "passed",
        "onnx_runtime_load": "passed", "onnx_inputs": "passed", "onnx_outputs": "passed",
    }
    graph = onnx.load(conversion.path).graph
    image = next(value for value in graph.input if value.name == "image")
    assert [dim.HasField("dim_value") for dim in image.type.tensor_type.shape.dim] == [False, False, False, True]
    reproduce = (Path(stages.workdir) / "onnx" / "reproduce.sh").read_text()
    assert "python -m tf2onnx.convert --saved-model" in reproduce and "--opset 18" in reproduce
    assert json.loads((Path(stages.workdir) / "onnx" / "conversion.json").read_text())["failure"] is None
    assert conversion.size_bytes == Path(conversion.path).stat().st_size and conversion.duration_s > 0


def test_onnx_runtime_matches_tensorflow_on_eight_batches_with_outputs_that_spread(mixed):
    stages, _, comparison = mixed
    cpu = comparison.comparisons["onnxruntime/cpu"]
    assert cpu.batches == 8 and cpu.providers == ["CPUExecutionProvider"]
    assert cpu.graph_optimization_level == "ORT_ENABLE_ALL"
    assert all(result.passed for result in cpu.outputs.values()), cpu.outputs
    logits = cpu.outputs["logits"]
    assert logits.total_elements == 8 * stages.request.inputs.batch_size * 10
    assert logits.top1_agreement == 1.0 and logits.top5_agreement == 1.0
    assert logits.cosine_similarity > 0.999999
    assert cpu.outputs["kept_tokens"].max_abs_diff == 0.0  # int64, exact
    # The logits spread over tens of units: an error there cannot hide the way it would in a flat softmax.
    reference = np.load(Path(stages.workdir) / "reference_outputs.npz")["logits"]
    assert reference.std() > 10 and np.ptp(reference, axis=1).min() > 10
    assert set(cpu.histograms) == {"logits", "feature_map", "kept_tokens"}
    assert all(Path(path).stat().st_size > 0 for path in cpu.histograms.values())
    gpu = comparison.comparisons.get("onnxruntime/gpu")
    assert gpu is None or not gpu.failing()
    if gpu is None:
        assert comparison.not_compared["onnxruntime/gpu"] == "no GPU on this machine"


def test_one_edited_weight_fails_the_comparison(mixed, tmp_path):
    stages, exported, _ = mixed
    model = onnx.load(exported.path)
    head = next(init for init in model.graph.initializer if numpy_helper.to_array(init).shape in ((9, 10), (10, 9)))
    weights = numpy_helper.to_array(head).copy()
    weights.flat[0] += 0.5  # one weight of 90, by 5 % of its spread
    head.CopyFrom(numpy_helper.from_array(weights, head.name))
    broken_path = tmp_path / "broken.onnx"
    onnx.save(model, broken_path)
    broken = TargetArtifact(target="onnx", conversion=exported.conversion.model_copy(update={"path": str(broken_path)}))
    cpu = stages.compare(broken).comparisons["onnxruntime/cpu"]
    logits = cpu.outputs["logits"]
    assert not logits.passed and logits.failing_elements > 0
    assert logits.min_passing_atol > tolerance_for(stages.choice.atol, "logits")
    assert cpu.outputs["feature_map"].passed and cpu.outputs["kept_tokens"].passed


def test_forced_external_data_goes_through_checker_runtime_and_comparison(onnx_models, tmp_path):
    stages = Stages(onnx_models["keras_cnn"], tmp_path, onnx_external_data="always", onnx_batches=2)
    exported = stages.export()
    conversion = exported.conversion
    assert conversion.failure is None and conversion.details["external_data"] and conversion.details["large_model"]
    assert all(check.status == "passed" for check in conversion.checks), conversion.checks
    data_file = Path(conversion.path).parent / EXTERNAL_DATA_FILE
    assert data_file.stat().st_size > Path(conversion.path).stat().st_size
    stored = onnx.load(conversion.path, load_external_data=False)
    external = {init.name for init in stored.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL}
    big = {init.name for init in onnx.load(conversion.path).graph.initializer
           if len(init.raw_data) >= EXTERNAL_DATA_MIN_BYTES}
    assert external == big and len(big) >= 2  # the conv2 and dense kernels
    assert "onnx/model.onnx" not in conversion.artifacts  # logged as an MLflow model instead, not twice
    assert "--large_model" in (tmp_path / "onnx" / "reproduce.sh").read_text()
    comparison = stages.compare(exported)
    assert comparison.batches == 2 and not comparison.comparisons["onnxruntime/cpu"].failing()


def test_a_model_past_the_large_model_size_takes_tf2onnx_large_path_with_pure_python_protobuf(tmp_path):
    model_dir = dense_of_size(tmp_path / "dense", LARGE_MODEL_ABOVE_BYTES + 2**20)
    stages = Stages(model_dir, tmp_path / "work", onnx_batches=2)
    exported = stages.export()
    conversion = exported.conversion
    assert conversion.failure is None and conversion.details["large_model"] and not conversion.details["external_data"]
    assert all(check.status == "passed" for check in conversion.checks), conversion.checks
    folder = Path(conversion.path).parent
    assert not (folder / EXTERNAL_DATA_FILE).exists() and not Path(f"{conversion.path}.zip").exists()
    assert conversion.size_bytes > LARGE_MODEL_ABOVE_BYTES  # the weights are inside the one file
    # tf2onnx says so when protobuf is not its C implementation: the child ran with the pure-Python one.
    assert "Installed protobuf is not cpp accelerated" in (folder / "convert.log").read_text()
    reproduce = (folder / "reproduce.sh").read_text()
    environment = " ".join(f"{name}={value}" for name, value in PURE_PYTHON_PROTOBUF.items())
    assert f"{environment} python -c" in reproduce and "--large_model" in reproduce and "external_data=False" in reproduce
    comparison = stages.compare(exported)
    assert not comparison.comparisons["onnxruntime/cpu"].failing()


def _node(name: str, op: str, *inputs: str):
    from tensorflow.core.framework import node_def_pb2

    return node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))


def test_identities_that_only_pass_a_constant_on_are_spliced_out_control_edges_and_outputs_kept():
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef(node=[
        _node("x", "Placeholder"), _node("kernel", "Const"),
        _node("input/_1", "Identity", "kernel"), _node("read", "Identity", "input/_1"),
        _node("matmul", "MatMul", "x", "read"), _node("noop", "NoOp", "^read"),
        _node("gated", "Identity", "kernel", "^noop"), _node("out", "Identity", "matmul", "^noop"),
        _node("constant_out", "Identity", "kernel"),
    ])
    splice_constant_identities(graph, {"out", "constant_out"})
    nodes = {node.name: list(node.input) for node in graph.node}
    assert "input/_1" not in nodes and "read" not in nodes
    assert nodes["matmul"] == ["x", "kernel"] and nodes["noop"] == ["^kernel"]
    assert nodes["gated"] == ["kernel", "^noop"]  # an Identity with a control input keeps its order
    assert nodes["constant_out"] == ["kernel"] and nodes["out"] == ["matmul", "^noop"]


def test_unsupported_op_is_a_structured_failure_of_the_onnx_stage_only(onnx_models, tmp_path):
    stages = Stages(onnx_models["parses_examples"], tmp_path)
    with pytest.raises(ConversionFailed) as raised:
        stages.export()
    message = str(raised.value)
    assert raised.value.check == "onnx_conversion"
    assert message.startswith("onnx conversion failed: tf2onnx cannot convert ParseExampleV2 x1")
    assert "INVALID_GRAPH" in message and "\n" not in message
    report = ValidationReport(source=stages.request.source, request=stages.request, workdir=stages.workdir,
                              targets={"onnx": TargetSection(name="onnx", artifact_format="onnx")})
    record_target_error("onnx")(report, raised.value)
    onnx_section = report.targets["onnx"]
    # An impossible conversion is a verdict on the model (failed), not a stage that could not run (error).
    assert onnx_section.status == "failed" and onnx_section.conversion.details["unsupported_ops"] == {"ParseExampleV2": 1}
    assert "Unsupported ops: Counter({'ParseExampleV2': 1})" in onnx_section.conversion.converter_message
    checks = {check.name: check for check in onnx_section.checks}
    assert checks["onnx_ops_converted"].status == "failed"
    assert checks["onnx_checker"].status == "failed" and "ParseExampleV2" in checks["onnx_checker"].message
    assert checks["onnx_runtime_load"].status == "failed"
    assert {"onnx/convert.log", "onnx/reproduce.sh", "onnx/conversion.json"} <= set(report.artifacts)


def test_a_tolerance_for_an_output_the_model_lacks_is_refused(onnx_models, mixed, tmp_path):
    converted, exported, _ = mixed
    stages = Stages(onnx_models["mixed_inputs"], tmp_path, atol={"logit": 1e-2})
    stages.batches = converted.batches  # the same model's on the same inputs: a tolerance changes none of them
    with pytest.raises(UnknownOutputTolerance, match="atol names logit, which the signature lacks"):
        stages.compare(exported)


def test_a_conversion_tensorflow_refuses_says_why_and_converts_no_op(model_dirs, tmp_path):
    # tf2onnx freezes the graph with grappler, which cannot find the lookup table's init op of a TF1 model
    # (legacy_init_op); tf2onnx itself only says "check error log", so the reason comes from TensorFlow's.
    stages = Stages(model_dirs["tf1_graph"], tmp_path)
    with pytest.raises(ConversionFailed) as raised:
        stages.export()
    assert ("tf2onnx failed: TensorFlow could not import the model's graph: Init node key_value_init/"
            "LookupTableImportV2 doesn't exist in graph") in str(raised.value)
    assert "check error log" not in str(raised.value)
    conversion = json.loads((tmp_path / "onnx" / "conversion.json").read_text())
    checks = {check["name"]: check["status"] for check in conversion["checks"]}
    assert checks["onnx_ops_converted"] == "skipped"
    assert "cuInit" not in conversion["converter_message"]
    assert "LookupTableImportV2" in conversion["converter_message"]

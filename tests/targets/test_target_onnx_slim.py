"""The onnx-slim target: a real Keras model exported as a SavedModel, validated end to end with the target
asked (its parent, onnx, comes along), under a real Prefect server and MLflow store; its options, the command
that redoes it and its refusals on the file that validation left."""

import subprocess
from functools import partial
from pathlib import Path
from typing import get_args

import onnx
import pytest

from modelgate.criteria import Criteria
from modelgate.request import ValidationRequest
from modelgate.service.cli import _parser, _request_fields
from modelgate.targets import ConversionSource, in_conversion_order, registry, target
from modelgate.targets.onnx_slim import TARGET, Optimization, SlimOptions, convert
from tests.flows import run_flow

_run = partial(run_flow, benchmark={"batch_sizes": [1, 4], "max_windows": 3, "warmup": 2},
               checks={"comparison_batches": 3}, baseline="")


def sequence_scorer(directory: Path) -> Path:
    """A Keras model whose Dense reads a sequence (batch, 8, 6): tf2onnx computes the reshape around its MatMul
    from the input's shape at run time (Shape, Gather, Concat, Cast), which onnxslim folds to constants."""
    import keras

    keras.utils.set_random_seed(7)
    features = keras.Input(shape=(8, 6), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="project", bias_initializer="random_normal")(features)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    scores = keras.layers.Dense(5, name="scores", bias_initializer="random_normal")(hidden)
    keras.Model(features, {"scores": scores}).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


@pytest.fixture(scope="module")
def validated(prefect_server, tracking_uri, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_slim")
    return _run(sequence_scorer(root / "saved_model"), tracking_uri, root / "validation", targets={"onnx-slim": {}})


def nodes(path: str) -> int:
    return len(onnx.load(path).graph.node)


def test_the_registry_finds_it_as_a_float32_child_of_onnx_in_every_all():
    assert target("onnx-slim") is TARGET and registry()["onnx-slim"] is TARGET
    assert TARGET.parent == "onnx" and TARGET.artifact_format == "onnx" and TARGET.criteria == Criteria()
    assert [t.name for t in in_conversion_order(["onnx-slim"])] == ["onnx", "onnx-slim"]
    assert "onnx-slim" in [t.name for t in in_conversion_order(["all"])]
    assert [runtime.name for runtime in TARGET.runtimes()] == ["onnxruntime"] and not TARGET.missing_packages()
    assert TARGET.check_name == "onnx_slim_conversion"


def test_its_options_are_typed_with_a_default_title_and_description():
    assert SlimOptions() == SlimOptions(skip_optimizations=[], skip_fusion_patterns=[], size_threshold=0)
    for name, field in SlimOptions.model_fields.items():
        assert field.title and field.description and not field.is_required(), name
    with pytest.raises(ValueError, match="constant_folding"):
        SlimOptions(skip_optimizations=["folding"])
    with pytest.raises(ValueError, match="extra"):
        SlimOptions(no_such_option=True)


def test_the_request_and_the_command_line_carry_its_options():
    asked = ValidationRequest(source="m", targets={"onnx-slim": {"options": {
        "skip_optimizations": ["constant_folding"], "size_threshold": 1024}}})
    assert asked.options_of(TARGET) == SlimOptions(skip_optimizations=["constant_folding"], size_threshold=1024)
    args = _parser().parse_args(["validate", "m", "--targets", "onnx-slim", "--onnx-slim-skip-optimizations",
                                 "graph_fusion,weight_tying", "--onnx-slim-skip-fusion-patterns", "FusionGemm"])
    assert ValidationRequest(**_request_fields(args, "m")).options_of(TARGET) == SlimOptions(
        skip_optimizations=["graph_fusion", "weight_tying"], skip_fusion_patterns=["FusionGemm"])
    with pytest.raises(ValueError, match="skip_optimizations"):
        ValidationRequest(source="m", targets={"onnx-slim": {"options": {"skip_optimizations": ["folding"]}}})


@pytest.mark.slow
def test_the_validation_converts_compares_and_benchmarks_the_slim_file(validated):
    report = validated
    assert report.status == "passed", report.verdict_line()
    assert list(report.targets) == ["onnx", "onnx-slim"]
    section = report.targets["onnx-slim"]
    assert section.status == "passed" and section.parent == "onnx", section.message
    record = section.conversion
    assert record.failure is None and Path(record.path).parent == Path(report.workdir) / "onnx-slim"
    assert {check.name: check.status for check in record.checks} == dict.fromkeys(
        ["onnx_checker", "onnx_shape_inference", "onnx_runtime_load", "onnx_inputs", "onnx_outputs"], "passed")
    # Fewer or equal in general; on this model the run-time shape arithmetic goes (13 nodes to 8 with onnxslim 0.1.98).
    before, after = nodes(report.targets["onnx"].conversion.path), nodes(record.path)
    assert record.details["nodes_before"] == before and record.details["nodes_after"] == after
    assert after < before
    assert not {"Shape", "Gather", "Concat"} & {node.op_type for node in onnx.load(record.path).graph.node}
    assert record.details["skipped_optimizations"] == "" and record.details["external_data"] is False
    # Parity with TensorFlow under float32's criteria: every element within the graph's tolerances.
    assert section.criteria.elementwise and section.criteria.min_cosine_similarity is None
    cpu = section.comparisons["onnxruntime/cpu"]
    assert cpu.batches == 3 and cpu.outputs and all(output.passed for output in cpu.outputs.values()), cpu.outputs
    measured = {(b.runtime, b.device, b.batch_size) for b in report.benchmarks if b.target == "onnx-slim"}
    assert measured == {("onnxruntime", "cpu", 1), ("onnxruntime", "cpu", 4)}
    assert all(b.p50_ms > 0 for b in report.benchmarks if b.target == "onnx-slim")


@pytest.mark.slow
def test_the_reproduce_command_writes_the_same_file(validated):
    record = validated.targets["onnx-slim"].conversion
    script = Path(record.path).with_name("reproduce.sh")
    assert record.reproduce in script.read_text() and "simplify(" in record.reproduce
    written = Path(record.path).read_bytes()
    Path(record.path).unlink()
    subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=300)
    assert Path(record.path).read_bytes() == written


def _source(validated, output_dir: Path, parent: str | None = None, **options) -> ConversionSource:
    onnx_section = validated.targets["onnx"]
    output_dir.mkdir()
    return ConversionSource(
        model_dir=str(output_dir), tags=["serve"], signature=validated.signatures[validated.signature], model_format="tf2",
        output_dir=str(output_dir), log_path=str(output_dir / "convert.log"),
        parent_artifact=parent or onnx_section.conversion.path, options=SlimOptions(**options),
    )


@pytest.mark.slow
def test_skipping_every_optimization_leaves_the_graph_as_it_was(validated, tmp_path):
    every = list(get_args(Optimization))
    record = convert(_source(validated, tmp_path / "none", skip_optimizations=every))
    assert record.failure is None, record.failure
    assert record.details["nodes_after"] == record.details["nodes_before"] == nodes(validated.targets["onnx"].conversion.path)
    assert record.details["skipped_optimizations"] == ", ".join(every)


@pytest.mark.slow
def test_an_unknown_fusion_pattern_or_an_unreadable_parent_is_a_failed_conversion(validated, tmp_path):
    record = convert(_source(validated, tmp_path / "pattern", skip_fusion_patterns=["FusionGemm", "FusionNothing"]))
    assert record.path is None and record.failure == "onnxslim has no fusion pattern FusionNothing to skip"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    record = convert(_source(validated, tmp_path / "garbage", parent=str(garbage)))
    assert record.path is None and record.failure.startswith("onnxslim cannot simplify the model: ")
    assert "simplify(" in record.reproduce

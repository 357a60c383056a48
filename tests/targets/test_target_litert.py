"""The LiteRT target on real SavedModels: TFLiteConverter in a sandboxed child as production runs it, the file's
checks, ai-edge-litert's interpreter against TensorFlow, and the generic benchmark job on it."""

from pathlib import Path

import numpy as np
import pytest

from modelgate.description import TensorSpec
from modelgate.execution import os_sandbox
from modelgate.execution.sandbox import Limits, run_isolated, shared_processes
from modelgate.execution.target_jobs import benchmark_job
from modelgate.model.savedmodel import choose_meta_graph, choose_signature, inspect_saved_model
from modelgate.numerics.benchmark import SweepPlan
from modelgate.numerics.compare import compare_arrays, judged, tolerance_for
from modelgate.numerics.precision import effective_tolerances
from modelgate.numerics.timing import MeasurementPlan
from modelgate.runtimes import runtime
from modelgate.targets import ConversionSource, target
from modelgate.targets.litert import _io_check, convert
from tests.models import tf

LIMITS = Limits(timeout_s=600, memory_limit_mb=8000)


def _source(model_dir: Path, workdir: Path, model_format: str) -> ConversionSource:
    meta_graph = choose_meta_graph(inspect_saved_model(model_dir), None)
    signature, _ = choose_signature(meta_graph, None)
    return ConversionSource(
        model_dir=str(model_dir), tags=meta_graph.tags, signature=signature, model_format=model_format,
        output_dir=str(workdir / "litert"), log_path=str(workdir / "litert.log"),
    )


def _convert_in_sandbox(model_dir: Path, workdir: Path, model_format: str = "tf2"):
    """As the flow runs a target: a bounded child confined to reading the model and writing the workdir."""
    source = _source(model_dir, workdir, model_format)
    with shared_processes({}, os_sandbox.for_validation([str(model_dir)], workdir, False)):
        record = run_isolated(convert, source, limits=LIMITS, label="export-litert", log_path=source.log_path).value
    return source, record


def _tensorflow(model_dir: Path, key: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    function = tf.saved_model.load(str(model_dir)).signatures[key]
    return {name: value.numpy() for name, value in function(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


@pytest.fixture(scope="module")
def cnn(zoo, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("litert-cnn")
    source, record = _convert_in_sandbox(zoo["keras_cnn"], workdir)
    return zoo["keras_cnn"], workdir, source, record


@pytest.mark.slow
def test_a_keras_cnn_converts_and_every_file_check_passes(cnn):
    _, _, source, record = cnn
    assert record.failure is None, record.failure
    assert record.path == str(Path(source.output_dir) / "model.tflite") and Path(record.path).is_file()
    assert record.size_bytes == Path(record.path).stat().st_size
    assert {check.name: check.status for check in record.checks} == {
        "litert_interpreter_load": "passed", "litert_inputs": "passed", "litert_outputs": "passed",
    }
    assert record.details["flex_ops"] == 0 and record.details["op_types"]["CONV_2D"] == 2
    assert record.details["ops"] == sum(record.details["op_types"].values())
    assert "TFLiteConverter.from_saved_model" in record.reproduce and source.model_dir in record.reproduce


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 4])
def test_litert_matches_tensorflow_within_the_targets_criteria(cnn, batch_size):
    model_dir, _, source, record = cnn
    criteria = target("litert").criteria
    atol, rtol, _ = effective_tolerances(criteria.atol, criteria.rtol, "float32")
    # Inputs spread over several units, and logits over tens: an error cannot hide in a flat softmax.
    feeds = {"image": (3 * np.random.default_rng(batch_size).standard_normal((batch_size, 16, 16, 3))).astype("float32")}
    runner = runtime("litert").load(record.path, "cpu", 1, 1)
    candidate = runner(feeds)
    reference = _tensorflow(model_dir, source.signature.key, feeds)
    assert set(candidate) == set(reference) == {"logits", "probabilities"}
    for name in reference:
        result = judged(name, compare_arrays(reference[name], candidate[name], tolerance_for(atol, name),
                                             tolerance_for(rtol, name)), criteria)
        print(f"{name} batch {batch_size}: max abs {result.max_abs_diff:.3g}, max rel {result.max_rel_diff:.3g}")
        assert candidate[name].shape[0] == batch_size and result.passed, result.message
    assert np.ptp(reference["logits"]) > 10
    assert any("XNNPACK" in where for where in runner.placement)


@pytest.mark.slow
def test_the_benchmark_job_sweeps_litert_in_a_sandboxed_child(cnn):
    _, workdir, _, record = cnn
    inputs_path = workdir / "inputs.npz"
    np.savez(inputs_path, image=np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32"))
    plan = SweepPlan(MeasurementPlan(warmup=2, window=5, min_windows=2, max_windows=3), batch_sizes=[1, 4])
    with shared_processes({}, os_sandbox.for_validation([], workdir, False)):
        measured = run_isolated(benchmark_job, "litert", record.path, str(inputs_path), plan, "cpu", 1, 1,
                                limits=LIMITS, label="benchmark-litert").value
    assert [m.result.batch_size for m in measured] == [1, 4]
    for m in measured:
        assert m.result.runtime == "litert" and m.result.device == "cpu" and m.result.intra_op_threads == 1
        assert any("XNNPACK" in where for where in m.result.providers) and m.result.p50_ms > 0


@pytest.mark.slow
def test_outputs_tflite_reorders_are_mapped_back_by_name(zoo, tmp_path):
    # TFLite sorts this signature's outputs (auxiliary_output before output) and renames its tensors.
    model_dir = zoo["custom_signature"]
    source, record = _convert_in_sandbox(model_dir, tmp_path)
    assert record.failure is None and all(check.status == "passed" for check in record.checks)
    rng = np.random.default_rng(4)
    feeds = {"input1": rng.standard_normal((3, 4)).astype("float32"), "input2": rng.standard_normal((3, 1)).astype("float32")}
    candidate = runtime("litert").load(record.path, "cpu", 0, 0)(feeds)
    reference = _tensorflow(model_dir, "my_custom_signature", feeds)
    assert set(candidate) == {"output", "auxiliary_output"}
    for name in reference:
        assert candidate[name].shape == reference[name].shape
        np.testing.assert_allclose(candidate[name], reference[name], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_string_op_fails_the_conversion_naming_the_op(zoo, tmp_path):
    source, record = _convert_in_sandbox(zoo["string_input"], tmp_path)
    assert record.path is None and not (Path(source.output_dir) / "model.tflite").exists()
    assert "StringLength" in record.failure and "Flex" in record.failure and "\n" not in record.failure
    assert record.details["unconvertible_flex_ops"] == {"StringLength": 1}
    assert "StringLength" in record.converter_message
    assert {check.status for check in record.checks} == {"skipped"}


def test_the_io_checks_say_what_was_expected_and_what_was_found():
    expected = {"logits": TensorSpec(dtype="float32", shape=[None, 10]), "ids": TensorSpec(dtype="int64", shape=[None])}
    assert _io_check("litert_outputs", "output", expected, {"logits": {"dtype": np.float32},
                                                            "ids": {"dtype": np.int64}}).status == "passed"
    check = _io_check("litert_outputs", "output", expected, {"Identity": {"dtype": np.float32}, "ids": {"dtype": np.int32}})
    assert check.status == "failed"
    assert "expected ids (int64), logits (float32)" in check.message and "found Identity (float32), ids (int32)" in check.message


@pytest.mark.slow
def test_a_tf1_graph_the_tf2_loader_refuses_fails_the_conversion_saying_so(zoo, tmp_path):
    _, record = _convert_in_sandbox(zoo["tf1_graph"], tmp_path, "tf1-graph")
    assert record.path is None and "float_ref" in record.failure and "SavedModel loader" in record.failure

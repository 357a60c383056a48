"""The OpenVINO target on real SavedModels: convert_model in a bounded, sandboxed child as production runs it,
the IR's checks, OpenVINO's CPU plugin against TensorFlow, and its benchmark through the generic job."""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from modelgate.execution import os_sandbox
from modelgate.execution.jobs import inspection_job
from modelgate.execution.sandbox import Limits, run_isolated, shared_processes
from modelgate.execution.target_jobs import benchmark_job
from modelgate.numerics.benchmark import Measured, SweepPlan
from modelgate.numerics.compare import compare_arrays, judged, tolerance_for
from modelgate.numerics.inputs import save_npz
from modelgate.numerics.precision import effective_tolerances
from modelgate.numerics.timing import MeasurementPlan
from modelgate.runtimes import DeviceUnavailable, runtime
from modelgate.targets import ConversionSource, target
from modelgate.targets.openvino import TARGET, conversion_failure, convert, frontend_cannot_read
from tasks.select_signature import select_signature

pytestmark = pytest.mark.slow

def source_for(model_dir: Path, workdir: Path, key: str | None = None, tags: list[str] | None = None) -> ConversionSource:
    workdir.mkdir(parents=True, exist_ok=True)
    choice = select_signature.fn(inspection_job(str(model_dir), str(workdir)), key, tags)
    return ConversionSource(
        model_dir=choice.model_dir, tags=choice.tags, signature=choice.signature, model_format=choice.model_format,
        output_dir=str(workdir / "openvino"), log_path=str(workdir / "openvino.log"),
    )


def convert_sandboxed(source: ConversionSource, model_dir: Path, workdir: Path):
    """The sandbox reads the model as the request names it: a TF1 model's loadable copy in the workdir links
    its variables there."""
    sandbox = os_sandbox.for_validation([str(model_dir)], workdir, False)
    with shared_processes({}, sandbox):
        return run_isolated(convert, source, limits=Limits(timeout_s=600, memory_limit_mb=8000),
                            label="export-openvino", log_path=source.log_path).value


def tensorflow_outputs(model_dir: Path, key: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    function = tf.saved_model.load(str(model_dir), tags=["serve"]).signatures[key]
    return {name: value.numpy() for name, value in function(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


@pytest.fixture(scope="module")
def cnn(zoo, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("openvino_cnn")
    source = source_for(zoo["keras_cnn"], workdir)
    return zoo["keras_cnn"], workdir, source, convert_sandboxed(source, zoo["keras_cnn"], workdir)


def test_the_registries_find_the_target_and_its_runtime():
    assert target("openvino") is TARGET and [r.name for r in TARGET.runtimes()] == ["openvino"]
    assert runtime("openvino").devices == ("cpu", "gpu") and not TARGET.missing_packages()


def test_the_keras_cnn_converts_in_the_sandbox_to_a_float32_ir_whose_checks_pass(cnn):
    _, _, source, record = cnn
    assert record.failure is None, record.failure
    assert {check.name: check.status for check in record.checks} == {
        "openvino_compile": "passed", "openvino_inputs": "passed", "openvino_outputs": "passed",
    }
    xml = Path(record.path)
    weights = xml.with_suffix(".bin")
    assert xml.parent == Path(source.output_dir) and record.size_bytes == xml.stat().st_size + weights.stat().st_size
    constants = [layer.find("data") for layer in ElementTree.parse(xml).getroot().iter("layer")
                 if layer.get("type") == "Const"]
    # The kernels (the zero biases fold away); the integer constants are shapes and axes.
    assert {data.get("element_type") for data in constants if data.get("element_type").startswith(("f", "bf"))} == {"f32"}
    assert record.details["compress_to_fp16"] is False and record.details["ir_version"] == 11
    assert record.details["ops"] == sum(record.details["opsets"].values()) > 10
    assert "CPU: " in record.checks[0].message and "precision f32" in record.checks[0].message


def test_the_reproduce_command_writes_the_same_ir(cnn):
    _, _, _, record = cnn
    xml = Path(record.path)
    written = xml.read_bytes(), xml.with_suffix(".bin").read_bytes()
    subprocess.run(["bash", "-c", record.reproduce], check=True, capture_output=True, timeout=300)
    assert (xml.read_bytes(), xml.with_suffix(".bin").read_bytes()) == written


@pytest.mark.parametrize("batch_size", [1, 4])
def test_openvino_matches_tensorflow_within_the_target_criteria(cnn, batch_size):
    model_dir, _, _, record = cnn
    feeds = {"image": np.random.default_rng(batch_size).standard_normal((batch_size, 16, 16, 3)).astype("float32")}
    runner = runtime("openvino").load(record.path, "cpu", 0, 0)
    assert runner.placement[0].startswith("CPU: ") and runner.placement[1] == "precision f32"
    candidate = runner(feeds)
    reference = tensorflow_outputs(model_dir, "serving_default", feeds)
    assert sorted(candidate) == sorted(reference) == ["logits", "probabilities"]
    atol, rtol, _ = effective_tolerances(TARGET.criteria.atol, TARGET.criteria.rtol, "float32")
    for name in reference:
        assert candidate[name].shape == reference[name].shape == (batch_size, 10)
        result = judged(name, compare_arrays(reference[name], candidate[name], tolerance_for(atol, name),
                                             tolerance_for(rtol, name)), TARGET.criteria)
        assert result.passed, (name, result.message, result.max_abs_diff, result.max_rel_diff)
    # The logits spread over units, so an error cannot hide in them as it could in a flat softmax.
    assert np.ptp(reference["logits"]) > 1.0


def test_the_generic_benchmark_job_sweeps_openvino(cnn):
    _, workdir, _, record = cnn
    inputs = save_npz({"image": np.random.default_rng(0).random((1, 16, 16, 3), dtype="float32")},
                      workdir / "benchmark_inputs.npz")
    plan = SweepPlan(MeasurementPlan(warmup=2, window=5, min_windows=1, max_windows=2), batch_sizes=[1, 2])
    measured = benchmark_job("openvino", record.path, str(inputs), plan, "cpu", 1, 1)
    assert [m.result.batch_size for m in measured] == [1, 2] and all(isinstance(m, Measured) for m in measured)
    assert all(m.result.runtime == "openvino" and m.result.providers[1] == "precision f32" for m in measured)
    assert all(m.result.p50_ms > 0 for m in measured)


def test_a_gpu_is_refused_where_openvino_has_none(cnn):
    import openvino

    if "GPU" in {device.split(".")[0] for device in openvino.Core().available_devices}:
        pytest.skip("this machine has a GPU OpenVINO can use")
    with pytest.raises(DeviceUnavailable, match="no GPU device"):
        runtime("openvino").load(cnn[3].path, "gpu", 0, 0)


def test_a_string_model_fails_naming_the_op_openvino_lacks(zoo, tmp_path):
    source = source_for(zoo["string_input"], tmp_path)
    record = convert_sandboxed(source, zoo["string_input"], tmp_path)
    assert record.path is None
    assert record.failure == "OpenVINO cannot convert the model's ops: no conversion rule for StringLength"
    assert "StringLength" in record.converter_message
    assert {check.status for check in record.checks} == {"skipped"}


def test_the_converter_refusal_names_missing_and_failed_ops_in_one_line():
    said = (
        "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:\n"
        "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted. Failed operations detailed log:\n"
        "-- HashTableV2 with a message:\nVariable or resource `hash_table` is not initialized, model is inconsistent\n"
        "Summary:\n-- No conversion rule found for operations: RaggedTensorToTensor, StringLower\n"
        "-- Conversion is failed for: HashTableV2, LookupTableFindV2\n"
    )
    assert conversion_failure(said) == (
        "OpenVINO cannot convert the model's ops: no conversion rule for RaggedTensorToTensor, StringLower; "
        "its conversion failed for HashTableV2, LookupTableFindV2"
    )
    assert conversion_failure(
        "Check 'false' failed at src/frontends/tensorflow/src/graph_iterator_saved_model.hpp:129:\n"
        "FrontEnd API failed with GeneralFailure:\n[TensorFlow Frontend] Saved Model cannot be parsed\n"
    ) == "OpenVINO cannot convert the model: [TensorFlow Frontend] Saved Model cannot be parsed"


def test_a_tf1_graph_converts_its_serving_default_and_matches_tensorflow(zoo, tmp_path):
    source = source_for(zoo["tf1_graph"], tmp_path)
    record = convert_sandboxed(source, zoo["tf1_graph"], tmp_path)
    assert source.model_dir != str(zoo["tf1_graph"])  # the copy that reads its reference-typed outputs
    assert record.failure is None and all(check.status == "passed" for check in record.checks), record.checks
    x = np.random.default_rng(1).standard_normal((4, 3)).astype("float32")
    candidate = runtime("openvino").load(record.path, "cpu", 0, 0)({"x": x})
    weight = np.arange(6, dtype="float32").reshape(3, 2) / 6
    np.testing.assert_allclose(candidate["y"], x @ weight, rtol=1e-5, atol=1e-6)


def test_a_tf1_signature_or_tag_set_the_frontend_does_not_read_fails_by_name(zoo, tmp_path):
    regress = source_for(zoo["tf1_graph"], tmp_path / "regress", key="regress")
    assert frontend_cannot_read(regress) == (
        "OpenVINO's TensorFlow frontend converts a SavedModel's serving_default signature only; the validation "
        "chose regress"
    )
    gpu = source_for(zoo["tf1_graph"], tmp_path / "gpu", tags=["serve", "gpu"])
    assert "reads only the MetaGraph tagged serve; the validation chose the one tagged gpu,serve" in (
        frontend_cannot_read(gpu))
    record = convert(regress)
    assert record.path is None and record.failure == frontend_cannot_read(regress)


def test_without_serving_default_the_chosen_signature_keeps_only_its_own_names(zoo, tmp_path):
    """two_candidates' predict and embed share a tensor, whose port the frontend names after both."""
    source = source_for(zoo["two_candidates"], tmp_path, key="predict")
    record = convert(source)
    assert record.failure is None, (record.failure, record.checks)
    feeds = {"input1": np.ones((2, 4), "float32"), "input2": np.full((2, 1), 2.0, "float32")}
    candidate = runtime("openvino").load(record.path, "cpu", 0, 0)(feeds)
    reference = tensorflow_outputs(zoo["two_candidates"], "predict", feeds)
    assert sorted(candidate) == ["auxiliary_output", "output"]
    for name, value in reference.items():
        np.testing.assert_allclose(candidate[name], value, rtol=1e-5, atol=1e-5)


def test_importing_openvino_through_the_runtime_leaves_its_telemetry_out():
    script = ("import sys; from modelgate.runtimes.openvino import import_openvino; import_openvino(); "
              "import openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__)")
    said = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert said.stdout.strip() == "openvino.tools.ovc.telemetry_stub"

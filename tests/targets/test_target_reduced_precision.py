"""The float16 and int8 ONNX targets on a real Keras CNN: converted from its tf2onnx file in a bounded,
Landlock-sandboxed child as production converts, then run by ONNX Runtime against TensorFlow."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.errors import ModelRejected
from modelgate.execution import os_sandbox
from modelgate.execution.sandbox import Limits, run_isolated, shared_processes
from modelgate.execution.target_jobs import benchmark_job, comparison_job
from modelgate.numerics.benchmark import Measured, SweepPlan
from modelgate.numerics.inputs import save_npz
from modelgate.numerics.timing import MeasurementPlan
from modelgate.targets import ConversionSource, onnx_fp16, onnx_int8, target
from tests import models

pytestmark = pytest.mark.slow

BATCHES, BATCH_SIZE = 4, 16
SIGNATURE = SignatureSpec(
    key="serving_default", method_name="tensorflow/serving/predict",
    inputs={"image": TensorSpec(dtype="float32", shape=[None, 16, 16, 3])},
    outputs={name: TensorSpec(dtype="float32", shape=[None, 10]) for name in ("logits", "probabilities")},
)


class Cnn:
    """tests/models.py's keras_cnn, its tf2onnx file, and seeded batches with TensorFlow's outputs."""

    def __init__(self, root: Path):
        import tensorflow as tf

        self.saved_model = models.keras_cnn(root / "saved_model")
        self.onnx_dir = root / "onnx"
        self.onnx_dir.mkdir()
        self.parent = self.onnx_dir / "model.onnx"
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(self.saved_model),
                        "--opset", "18", "--output", str(self.parent)], check=True, capture_output=True)
        serving = tf.saved_model.load(str(self.saved_model)).signatures["serving_default"]
        self.batches = []
        for index in range(BATCHES):
            feeds = {"image": np.random.default_rng(index).standard_normal((BATCH_SIZE, 16, 16, 3)).astype("float32")}
            reference = {name: value.numpy() for name, value in serving(**feeds).items()}
            self.batches.append((str(save_npz(feeds, root / "inputs" / f"batch_{index}.npz")),
                                 str(save_npz(reference, root / "reference" / f"batch_{index}.npz"))))

    def convert(self, module, workdir: Path, calibrate: bool = True, parent: Path | None = None,
                output_dir: Path | None = None):
        """module.convert in a sandboxed child that may read the parent's folder and write only the workdir."""
        parent = parent or self.parent
        output_dir = output_dir or workdir / module.TARGET.name
        output_dir.mkdir(parents=True)
        calibration = []
        if calibrate:  # production hands the validation's inputs over from inside its workdir
            calibration = [str(save_npz(dict(np.load(inputs)), workdir / "inputs" / Path(inputs).name))
                           for inputs, _ in self.batches]
        source = ConversionSource(
            model_dir=str(self.saved_model), tags=["serve"], signature=SIGNATURE, model_format="tf2",
            output_dir=str(output_dir), log_path=str(workdir / "convert.log"),
            parent_artifact=str(parent), calibration_inputs=calibration,
        )
        sandbox = os_sandbox.for_validation([str(parent.parent)], workdir, False)
        with shared_processes({}, sandbox):
            return run_isolated(module.convert, source, limits=Limits(timeout_s=600, memory_limit_mb=8000),
                                label=f"export-{module.TARGET.name}", log_path=str(workdir / "x.log")).value

    def compare(self, artifact: str, module, workdir: Path):
        criteria = module.TARGET.criteria.model_copy(update={"atol": 1e-5, "rtol": 1e-5})
        return comparison_job("onnxruntime", artifact, "cpu", self.batches, criteria, str(workdir), module.TARGET.name)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return Cnn(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def fp16(cnn, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fp16_workdir")
    return workdir, cnn.convert(onnx_fp16, workdir)


@pytest.fixture(scope="module")
def int8(cnn, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("int8_workdir")
    return workdir, cnn.convert(onnx_int8, workdir)


def _corrupted(artifact: str, destination: Path) -> str:
    """The file with its largest weight reversed: loads and runs like the real one, computes something else."""
    model = onnx.load(artifact)
    largest = max(model.graph.initializer, key=lambda init: numpy_helper.to_array(init).size)
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest).ravel()[::-1].reshape(largest.dims).copy(),
                                             largest.name))
    onnx.save(model, destination)
    return str(destination)


def test_both_targets_register_as_children_of_the_float32_onnx_target():
    for name in ("onnx-fp16", "onnx-int8"):
        assert target(name).parent == "onnx" and target(name).artifact_format == "onnx"
        assert not target(name).criteria.elementwise
        assert target(name).check_name == f"{name.replace('-', '_')}_conversion"


def test_float16_converts_in_the_sandbox_and_matches_tensorflow(cnn, fp16):
    workdir, record = fp16
    # Its softmax reads the logits output: without an Identity between them, onnxconverter-common's file is one
    # ONNX Runtime refuses.
    assert record.failure is None, record
    assert {check.name: check.status for check in record.checks} == dict.fromkeys(
        ["onnx_checker", "onnx_shape_inference", "onnx_runtime_load", "onnx_inputs", "onnx_outputs"], "passed")
    assert record.details == {"precision": "float16", "keep_io_types": True, "nodes_kept_float32": 0}
    assert record.path == str(workdir / "onnx-fp16" / "model.onnx")
    assert record.size_bytes < cnn.parent.stat().st_size
    assert "to_float16(" in record.reproduce and record.reproduce.startswith("python -c ")
    graph = onnx.load(record.path).graph
    weight_types = {init.data_type for init in graph.initializer} - {onnx.TensorProto.INT64}  # ReduceMean's axes
    assert weight_types == {onnx.TensorProto.FLOAT16}
    comparison = cnn.compare(record.path, onnx_fp16, workdir)
    assert all(result.passed for result in comparison.outputs.values()), comparison.outputs
    logits = comparison.outputs["logits"]
    assert logits.top1_agreement == 1.0 and logits.max_abs_diff > 0  # half precision, not the float32 file


def test_int8_quantizes_statically_with_calibration_and_matches_tensorflow(cnn, int8):
    workdir, record = int8
    assert record.failure is None, record
    assert record.details == {"quantization": "static", "weight_type": "int8", "calibration_batches": BATCHES}
    ops = {node.op_type for node in onnx.load(record.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    comparison = cnn.compare(record.path, onnx_int8, workdir)
    assert all(result.passed for result in comparison.outputs.values()), comparison.outputs
    # The quantizer's scratch files went to the sandbox's tmp dir, and nothing of them is left in the target's.
    assert sorted(path.name for path in (workdir / "onnx-int8").iterdir()) == ["model.onnx"]


def test_int8_without_calibration_inputs_quantizes_dynamically(cnn, tmp_path):
    record = cnn.convert(onnx_int8, tmp_path, calibrate=False)
    assert record.failure is None, record
    assert record.details == {"quantization": "dynamic", "weight_type": "int8", "calibration_batches": 0}
    assert "ConvInteger" in {node.op_type for node in onnx.load(record.path).graph.node}


@pytest.mark.parametrize("module", [onnx_fp16, onnx_int8], ids=["fp16", "int8"])
def test_a_corrupted_weight_fails_the_criteria_by_name(cnn, fp16, int8, module, tmp_path):
    _, record = {onnx_fp16: fp16, onnx_int8: int8}[module]
    comparison = cnn.compare(_corrupted(record.path, tmp_path / "broken.onnx"), module, tmp_path)
    logits = comparison.outputs["logits"]
    assert not logits.passed and "cosine_similarity" in logits.message and "top1_agreement" in logits.message


def test_a_model_already_in_float16_is_a_failed_conversion_not_an_exception(cnn, fp16, tmp_path):
    _, record = fp16
    again = cnn.convert(onnx_fp16, tmp_path, parent=Path(record.path))
    assert again.path is None and again.failure.startswith("onnxconverter-common cannot convert")
    assert "already converted to float16" in again.failure


@pytest.mark.parametrize("module", [onnx_fp16, onnx_int8], ids=["fp16", "int8"])
def test_a_write_the_sandbox_refuses_is_its_verdict_not_a_failed_conversion(cnn, module, tmp_path):
    with pytest.raises(ModelRejected, match="Permission denied") as raised:
        cnn.convert(module, tmp_path / "workdir", output_dir=tmp_path / "outside")
    assert raised.value.check == "os_sandbox"


def test_the_int8_file_benchmarks_on_onnx_runtime(cnn, int8):
    _, record = int8
    plan = SweepPlan(MeasurementPlan(warmup=1, window=3, min_windows=2, max_windows=2), batch_sizes=[1, 4])
    measured = benchmark_job("onnxruntime", record.path, cnn.batches[0][0], plan, "cpu", 1, 1)
    assert [m.result.batch_size for m in measured if isinstance(m, Measured)] == [1, 4]
    assert all(m.result.runtime == "onnxruntime" and m.result.p50_ms > 0 for m in measured)

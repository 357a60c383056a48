"""First divergence through the real flow: a float16 overflow in one layer, an error spread over a deep chain, a NaN
made by one op, and MobileNetV2 localised in every format (tests/divergence_models.py builds the first three)."""

from functools import partial
from pathlib import Path

import pytest

from modelgate.numerics.divergence import normalised
from tests import benign_models, divergence_models
from tests.flows import run_flow

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

# One small batch: a localisation needs its first rows only. No remediation: its stage is another test's.
_run = partial(run_flow, benchmark_batch_sizes=[1], benchmark_max_windows=3, benchmark_warmup=1, baseline=None,
               onnx_batches=1)


def checks(localise: bool) -> dict:
    return {"localise": localise, "remediation_budget_s": 0}


def test_a_float16_overflow_is_traced_to_the_layer_that_overflows(tmp_path, tracking_uri, workdir):
    model = divergence_models.float16_overflow(tmp_path / "overflow")
    report = _run(model, tracking_uri, workdir, targets={"onnx-fp16": {}}, checks=checks(False))
    section = report.targets["onnx-fp16"]
    assert section.status == "failed", section.message
    assert report.targets["onnx"].localisation is None  # it passed, and --localise was not asked
    found = section.localisation
    assert found is not None and found.runtime == "onnxruntime" and found.rows >= 1
    assert found.verdict == "nonfinite", found.summary
    assert found.nonfinite_origin.side == "target"
    assert "amplify" in found.nonfinite_origin.name and found.nonfinite_origin.op_type == "MatMul"
    assert found.first is not None and "/amplify" in found.first.tensorflow_name
    assert found.first.op_type == "MatMul" and found.first.nonfinite == "target"
    assert found.first.reference_max_abs > divergence_models.FLOAT16_MAX
    assert [normalised(u.tensorflow_name).rsplit("/", 2)[-2] for u in found.upstream] == ["entry_1"]
    assert all(u.passed for u in found.upstream)
    assert found.downstream[0] == found.first and found.downstream[-1].target_name == "scores"
    assert len(found.downstream) >= 4 and not any(d.passed for d in found.downstream)
    assert "amplify" in found.summary and "(MatMul)" in found.summary and "past float16's largest, 65504" in found.summary
    assert Path(found.plot).is_file() and Path(found.plot).parent == Path(report.workdir) / "onnx-fp16"
    assert f"onnx-fp16/{Path(found.plot).name}" in report.artifacts
    stage = next(s for s in report.stages if s.name == "localise-onnx-fp16")
    assert stage.status == "ok"


def test_an_error_spread_over_a_deep_chain_has_no_single_first_op(tmp_path, tracking_uri, workdir):
    model = divergence_models.spread_drift(tmp_path / "drift")
    # Float16 keeps cosine 1 - 1e-7 after the first layers and 1 - 3.4e-6 at the output: a bound between the two.
    criteria = {"elementwise": False, "min_cosine_similarity": 0.999999}
    report = _run(model, tracking_uri, workdir, targets={"onnx-fp16": {"criteria": criteria}}, checks=checks(False))
    assert report.targets["onnx-fp16"].status == "failed"  # its outputs miss the bound: localised unasked
    found = report.targets["onnx-fp16"].localisation
    assert found.verdict == "spread", found.summary
    assert found.summary.startswith("No single first op: the error accumulates")
    assert found.first is not None and found.first.position > 10  # far from the inputs
    assert found.upstream and max(u.relative_error for u in found.upstream) * 10 > found.first.relative_error
    errors = [d.relative_error for d in found.downstream]
    assert errors[-1] > errors[0] / 2 and len(found.downstream) > 5
    assert found.matched >= 70


def test_a_nan_made_by_one_op_of_tensorflow_is_named(tmp_path, tracking_uri, workdir):
    model = divergence_models.nan_op(tmp_path / "nan_op")
    report = _run(model, tracking_uri, workdir, targets={"onnx": {}}, checks=checks(False))
    assert report.targets["onnx"].status == "failed"  # tf2onnx's select lets the NaN through
    found = report.targets["onnx"].localisation
    assert found.verdict == "nonfinite", found.summary
    origin = found.nonfinite_origin
    assert origin.side == "tensorflow" and origin.op_type == "Sqrt" and "/root" in origin.name
    assert found.first.op_type == "SelectV2" and found.first.nonfinite == "target"
    assert any(u.op_type == "Sqrt" and u.passed and u.nonfinite == "both" for u in found.upstream)
    assert found.summary.startswith("TensorFlow itself makes NaN or infinity from finite inputs at "
                                    "nan_op_1/root_1/Sqrt (Sqrt); the first tensor to miss the criteria is "
                                    "nan_op_1/root_1/SelectV2 (SelectV2)"), found.summary


@pytest.fixture(scope="module")
def mobilenet_report(tmp_path_factory, tracking_uri, prefect_server):
    model = benign_models.mobilenet_v2(tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2")
    workdir = tmp_path_factory.mktemp("mobilenet_run")
    return _run(model, tracking_uri, workdir, targets={"onnx": {}, "litert": {}, "openvino": {}},
                checks=checks(True))


@pytest.mark.parametrize("name, runtime", [("onnx", "onnxruntime"), ("litert", "litert")])
def test_mobilenet_v2_is_localised_end_to_end(mobilenet_report, name, runtime):
    section = mobilenet_report.targets[name]
    assert section.status == "passed", section.message
    found = section.localisation
    assert found is not None and found.runtime == runtime, found
    print(f"{name}: {found.matched} of {found.target_tensors} tensors matched ({found.reference_tensors} "
          f"TensorFlow's): {found.summary}")
    assert found.matched >= 0.5 * found.target_tensors, (found.matched, found.target_tensors, found.unmatched[:10])
    assert found.verdict == "agrees", found.summary
    assert found.summary.startswith(f"All {found.matched} matched tensors are within the criteria")
    assert Path(found.plot).is_file()


def test_openvino_says_its_names_are_lost_instead_of_guessing(mobilenet_report):
    """OpenVINO's TensorFlow frontend sinks MobileNetV2's NHWC transposes through the graph and renames every op
    it moves (Transpose_1160): its IR keeps TensorFlow's name on the input and output only."""
    section = mobilenet_report.targets["openvino"]
    assert section.status == "passed", section.message
    found = section.localisation
    print(f"openvino: {found.matched} of {found.target_tensors} tensors matched: {found.summary}")
    assert found.runtime == "openvino" and found.verdict == "unmatched" and found.first is None
    assert found.target_tensors > 50 and found.matched < 0.1 * found.target_tensors
    assert "OpenVINO's transformations rename the ops they fuse or move" in found.summary
    assert len(found.unmatched) == 50 and any(u.startswith("Transpose_") for u in found.unmatched)

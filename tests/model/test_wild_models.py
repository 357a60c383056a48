"""SavedModels nobody here wrote, each built the way its own tools build it (tests/wild_models.py), get the right
verdict with the default settings: its class, its exit code and the check that names it. And the rule under all
of them: a failed verdict always names a failed check."""

import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from modelgate.criteria import Criteria
from modelgate.numerics.compare import compare_arrays
from modelgate.report import Check, RuntimeComparison, TargetSection, ValidationReport
from modelgate.request import ValidationRequest
from modelgate.runtimes.onnxruntime import OnnxRuntimeRunner
from modelgate.service.cli import EXIT_CODES
from modelgate.stages import TargetComparison
from tests import wild_models
from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
_run = partial(run_flow, benchmark_batch_sizes=[1, 4], benchmark_max_windows=3, benchmark_warmup=2)


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild")

    class Built(dict):
        def __missing__(self, name: str) -> Path:
            self[name] = getattr(wild_models, name)(root / name)
            return self[name]

    return Built()


def _checks(report) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


# --- every failed verdict names its check ---

def _report(tmp_path: Path, **targets: str) -> ValidationReport:
    request = ValidationRequest(source=str(tmp_path), targets={name: {"requirement": r} for name, r in targets.items()})
    sections = {name: TargetSection(name=name, artifact_format="onnx", requirement=requirement)
                for name, requirement in targets.items()}
    return ValidationReport(source=str(tmp_path), request=request, workdir=str(tmp_path), targets=sections)


def _comparison(target: str, noise: float) -> TargetComparison:
    reference = np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4)
    outputs = {"logits": compare_arrays(reference, reference + noise, 1e-4, 1e-3)}
    run = RuntimeComparison(runtime="onnxruntime", device="cpu", providers=["CPUExecutionProvider"], outputs=outputs,
                            batches=1)
    return TargetComparison(target=target, criteria=Criteria(atol=1e-4, rtol=1e-3), batches=1,
                            comparisons={"onnxruntime/cpu": run})


def test_a_required_target_missing_its_criteria_fails_its_parity_check_naming_the_output(tmp_path):
    report = _report(tmp_path, onnx="required", **{"onnx-fp16": "optional"})
    failure = _comparison("onnx", 0.5).apply_to(report)
    assert failure == "outputs logits (max abs diff 0.5) miss atol=0.0001 and rtol=0.001"
    assert _comparison("onnx-fp16", 0.5).apply_to(report)  # optional: reported, never deciding
    checks = _checks(report)
    assert (checks["onnx_parity"].status, checks["onnx_parity"].severity) == ("failed", "error")
    assert (checks["onnx_fp16_parity"].status, checks["onnx_fp16_parity"].severity) == ("warning", "warning")
    assert "logits (max abs diff 0.5)" in checks["onnx_parity"].message
    report.conclude()
    assert report.status == "failed"
    assert report.verdict_line().startswith("failed: onnx_parity: onnx: outputs logits")


def test_a_target_within_its_criteria_passes_its_parity_check(tmp_path):
    report = _report(tmp_path, onnx="required")
    assert _comparison("onnx", 0.0).apply_to(report) is None
    assert _checks(report)["onnx_parity"].status == "passed"
    report.conclude()
    assert report.status == "passed"


def test_a_report_refuses_a_failed_verdict_without_a_failed_check(tmp_path):
    with pytest.raises(ValidationError, match="a failed verdict names the check that failed"):
        ValidationReport(status="failed", source="m", request=ValidationRequest(source="m"), workdir=str(tmp_path))
    report = _report(tmp_path, onnx="required")
    report.targets["onnx"].status = "failed"  # a path that forgot its check: a defect, never a verdict
    with pytest.raises(AssertionError, match="target onnx failed without a failed check"):
        report.conclude()


# --- 1. string ids, fed to ONNX Runtime as the text it holds ---

def test_string_ids_pass_onnx_with_runtime_outputs_equal_to_tensorflow_s(wild, tracking_uri, workdir):
    report = _run(wild["string_id_ranking"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 0, report.verdict_line()
    onnx = report.targets["onnx"]
    assert onnx.status == "passed" and _checks(report)["onnx_parity"].status == "passed"
    assert onnx.comparisons["onnxruntime/cpu"].outputs["rating"].max_abs_diff < 1e-5
    samples = {name: set(strings) for name, strings in report.inputs.samples.items()}
    # the synthetic ids hit the vocabulary, so a runtime that missed it would differ from TensorFlow
    assert samples["user_id"] & set(wild_models.USER_IDS) and samples["item_id"] & set(wild_models.ITEM_IDS)


def test_litert_matches_tensorflow_on_string_ids_and_fails_by_name_at_a_batch_its_file_baked_in(
    wild, tracking_uri, workdir
):
    report = _run(wild["string_id_ranking"], tracking_uri, workdir, targets=["litert"])
    litert = report.targets["litert"]
    assert litert.comparisons["litert/cpu"].outputs["rating"].max_abs_diff < 1e-5  # LiteRT holds strings as bytes
    # its converter fixed a reshape at the comparison's batch: the file refuses a batch of 1, which TF serves
    assert EXIT_CODES[report.status] == 1 and [c.name for c in report.failed_checks()] == ["benchmark_litert_litert"]
    assert "litert (cpu) fails on a batch of 1, which the signature accepts" in report.failed_checks()[0].message
    assert litert.status == "failed" and not any(stage.status == "error" for stage in report.stages)


def test_onnx_runtime_takes_tensorflow_s_bytes_as_text_and_gives_bytes_back(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    keys, values = ["user_1", "user_2"], [7, 9]
    lookup = helper.make_node("LabelEncoder", ["ids"], ["index"], domain="ai.onnx.ml", keys_strings=keys,
                              values_int64s=values, default_int64=-1)
    echo = helper.make_node("Identity", ["ids"], ["same"])
    graph = helper.make_graph(
        [lookup, echo], "ids", [helper.make_tensor_value_info("ids", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("index", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("same", TensorProto.STRING, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.save(model, tmp_path / "ids.onnx")
    ids = np.array([b"user_2", b"user_1", b"nobody"], dtype=object)
    outputs = OnnxRuntimeRunner(tmp_path / "ids.onnx")({"ids": ids})
    assert outputs["index"].tolist() == [9, 7, -1]
    assert outputs["same"].tolist() == [b"user_2", b"user_1", b"nobody"]


# --- 3. nothing to serve; 8. a chunked SavedModel ---

@pytest.mark.parametrize("kind, found", [
    ("tf1_custom_tags_only", "(tag-sets: custom,train); it holds no saved functions either"),
    ("tf2_no_signatures", "(tag-sets: serve); its only functions are tf.functions without a signature: predict"),
])
def test_a_savedmodel_without_signatures_fails_signature_selection_naming_what_it_holds(
    wild, tracking_uri, workdir, kind, found
):
    report = _run(wild[kind], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 1 and [c.name for c in report.failed_checks()] == ["signature_selection"]
    assert "nothing in the SavedModel can be served: no signature under any tag-set " + found in report.verdict_line()
    assert {stage.name: stage.status for stage in report.stages}["export-onnx"] == "skipped"


def test_a_chunked_savedmodel_is_refused_in_one_line_saying_what_to_do(wild, tracking_uri, workdir):
    report = _run(wild["chunked"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 2
    reason = report.first_error()
    assert "a chunked SavedModel (saved_model.cpb" in reason and "this TensorFlow cannot load" in reason
    assert "re-export the model without chunking" in reason and "\n" not in reason


def test_a_chunked_savedmodel_inside_a_registry_version_gets_the_same_refusal(wild, tmp_path):
    from modelgate.errors import NotASavedModel
    from modelgate.tracking.registry import find_saved_model_dir

    version_files = tmp_path / "version"
    shutil.copytree(wild["chunked"], version_files / "saved_model")
    with pytest.raises(NotASavedModel, match="a chunked SavedModel .saved_model.cpb"):
        find_saved_model_dir(version_files)


# --- 5. a signature without inputs; 6. undeclared dtypes; 7. a graph pinned to a GPU; 9. a failed load ---

def test_a_signature_without_inputs_passes_and_its_onnx_model_is_logged_without_an_input_schema(
    wild, tracking_uri, workdir
):
    import mlflow

    report = _run(wild["no_inputs"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 0, report.verdict_line()
    mlflow.set_tracking_uri(tracking_uri)
    signature = mlflow.models.get_model_info(report.targets["onnx"].mlflow_model_uri).signature
    assert signature.inputs is None and signature.outputs.input_names() == ["version"]


def test_undeclared_dtypes_fail_tensor_dtypes_and_skip_every_stage_that_needs_them(wild, tracking_uri, workdir):
    report = _run(wild["undeclared_dtypes"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 1 and [c.name for c in report.failed_checks()] == ["tensor_dtypes"]
    stages = {stage.name: stage for stage in report.stages}
    assert stages["prepare-inputs"].message == "needs a model that passes tensor_dtypes, which failed"
    for name in ("prepare-inputs", "load-and-wrap", "run-checks", "benchmark", "export-onnx"):
        assert stages[name].status == "skipped", name
    assert not any(stage.status == "error" for stage in report.stages)


def test_a_graph_pinned_to_a_gpu_loads_with_soft_placement_as_tf_serving_does(wild, tracking_uri, workdir):
    report = _run(wild["gpu_pinned"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 0, report.verdict_line()
    placement = _checks(report)["device_placement"]
    assert "pins ops to /device:GPU:0" in placement.message and "soft placement" in placement.message
    assert report.targets["onnx"].status == "passed"


def test_a_model_tensorflow_cannot_load_fails_model_loads_once_and_is_not_converted(wild, tracking_uri, workdir):
    report = _run(wild["wrong_checkpoint"], tracking_uri, workdir)
    assert EXIT_CODES[report.status] == 1 and [c.name for c in report.failed_checks()] == ["model_loads"]
    assert report.failed_checks()[0].message.endswith("Original error: Key bias not found in checkpoint")
    export = next(stage for stage in report.stages if stage.name == "export-onnx")
    assert (export.status, export.message) == ("skipped", "needs a model that passes model_loads, which failed")

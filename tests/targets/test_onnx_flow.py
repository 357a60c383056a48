"""The ONNX stages inside the whole flow, under a real Prefect server, recorded in a real MLflow store."""

import json
from functools import partial

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


_run = partial(run_flow, benchmark=False)


def test_keras_cnn_end_to_end_with_per_output_tolerances_and_a_logged_onnx_model(onnx_models, tracking_uri, workdir):
    report = _run(onnx_models["keras_cnn"], tracking_uri, workdir, atol={"": 1e-4, "probabilities": 1e-5})
    onnx = report.targets["onnx"]
    assert report.status == "passed", report.first_error() or onnx.message
    cpu = onnx.comparisons["onnxruntime/cpu"]
    assert onnx.status == "passed" and onnx.conversion.details["opset"] == 18 and onnx.batches == 8
    assert all(check.status == "passed" for check in onnx.checks), onnx.checks
    assert cpu.outputs["probabilities"].atol == 1e-5 and cpu.outputs["logits"].atol == 1e-4
    logits = cpu.outputs["logits"]
    assert logits.top1_agreement == 1.0 and logits.top5_agreement == 1.0 and logits.p99_abs_diff <= logits.max_abs_diff
    assert cpu.graph_optimization_level == "ORT_ENABLE_ALL" and cpu.providers[0] == "CPUExecutionProvider"
    assert ("onnxruntime/gpu" in onnx.comparisons) or onnx.not_compared.get("onnxruntime/gpu") == "no GPU on this machine"
    on_disk = json.loads((workdir / "report.json").read_text())
    assert "onnx" not in on_disk  # the compatibility view of earlier releases is gone (docs/CHANGELOG.md)
    on_disk_logits = on_disk["targets"]["onnx"]["comparisons"]["onnxruntime/cpu"]["outputs"]["logits"]
    assert on_disk_logits["min_passing_atol"] == logits.min_passing_atol

    client = MlflowClient(tracking_uri)
    run = client.get_run(report.mlflow.run_id)
    assert run.data.metrics["onnx.p99_abs_diff.onnxruntime.cpu.logits"] == pytest.approx(logits.p99_abs_diff)
    assert run.data.metrics["onnx.top1_agreement.onnxruntime.cpu.logits"] == 1.0
    assert "onnx/comparison_table.json" in {a.path for a in client.list_artifacts(run.info.run_id, "onnx")}
    assert {"targets/onnx/abs_error_onnxruntime_cpu_logits.png", "targets/onnx/comparison.csv",
            "targets/onnx/conversion.json", "targets/onnx/model.onnx"} <= {
        artifact.path for artifact in client.list_artifacts(run.info.run_id, "targets/onnx")
    }

    assert onnx.mlflow_model_uri and onnx.mlflow_model_uri.startswith("models:/")
    mlflow.set_tracking_uri(tracking_uri)
    logged = mlflow.models.get_model_info(onnx.mlflow_model_uri)
    assert logged.run_id == report.mlflow.run_id
    inputs = {spec.name: spec for spec in logged.signature.inputs.inputs}
    assert list(inputs) == ["image"] and inputs["image"].shape == (-1, 16, 16, 3)
    assert {spec.name for spec in logged.signature.outputs.inputs} == {"logits", "probabilities"}
    assert logged.saved_input_example_info is not None
    image = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    predicted = mlflow.pyfunc.load_model(onnx.mlflow_model_uri).predict({"image": image})
    assert predicted["logits"].shape == (2, 10)


def test_external_data_model_is_logged_to_mlflow_with_its_data(onnx_models, tmp_path, tracking_uri, workdir):
    report = _run(onnx_models["keras_cnn"], tracking_uri, workdir, onnx_external_data="always", onnx_batches=2)
    section = report.targets["onnx"]
    assert report.status == "passed", report.first_error() or section.message
    assert section.conversion.details["external_data"] and section.mlflow_model_uri
    assert "onnx/model.onnx" not in report.artifacts
    mlflow.set_tracking_uri(tracking_uri)
    downloaded = mlflow.artifacts.download_artifacts(section.mlflow_model_uri, dst_path=str(tmp_path / "dl"))
    import onnx

    stored = onnx.load(f"{downloaded}/model.onnx", load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL for init in stored.graph.initializer)
    predicted = mlflow.pyfunc.load_model(section.mlflow_model_uri).predict(
        {"image": np.zeros((1, 16, 16, 3), dtype="float32")}
    )
    assert predicted["probabilities"].shape == (1, 10)


@pytest.mark.parametrize("requirement, verdict, check_status", [
    ("optional", "passed", "warning"), ("required", "failed", "failed"),
])
def test_an_unconvertible_model_fails_only_where_onnx_is_required(
    requirement, verdict, check_status, onnx_models, tracking_uri, workdir
):
    report = _run(onnx_models["parses_examples"], tracking_uri, workdir, onnx_requirement=requirement)
    stages = {stage.name: stage.status for stage in report.stages}
    assert stages["export-onnx"] == "failed" and stages["compare-onnx"] == "skipped"
    assert stages["run-checks"] == "ok" and stages["log-mlflow"] == "ok"
    onnx = report.targets["onnx"]
    assert onnx.status == "failed" and onnx.conversion.details["unsupported_ops"] == {"ParseExampleV2": 1}
    conversion = next(c for c in report.checks if c.name == "onnx_conversion")
    assert conversion.status == check_status and "ParseExampleV2" in conversion.message
    assert report.status == verdict and report.first_error() is None
    run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
    assert run.data.tags["modelgate.status"] == verdict
    assert onnx.mlflow_model_uri is None

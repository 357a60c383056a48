"""The whole flow under a real Prefect server, recorded in a real MLflow store."""

import json
from functools import partial
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


_run = partial(run_flow, benchmark_max_windows=3, benchmark_warmup=2, benchmark_batch_sizes=[1, 4])


def _artifacts(client, run_id, path=None):
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_keras_export_passes_and_everything_lands_in_mlflow(model_dirs, tracking_uri, workdir):
    report = _run(model_dirs["keras_export"], tracking_uri, workdir, register_as="flow-keras-export")
    assert report.status == "passed", report.first_error() or report.failed_checks()
    assert report.signature == "serving_default"
    onnx_outputs = report.targets["onnx"].comparisons["onnxruntime/cpu"].outputs
    assert report.targets["onnx"].status == "passed"
    assert set(onnx_outputs) == {"scores", "probabilities"}
    assert onnx_outputs["scores"].max_abs_diff < 1e-4
    measured = {(b.runtime, b.device, b.batch_size) for b in report.benchmarks}
    assert measured == {(r, "cpu", bs) for r in ("tensorflow", "keras", "onnxruntime") for bs in (1, 4)}
    assert all(b.p50_ms > 0 and b.throughput > 0 for b in report.benchmarks)
    assert {"latency.png", "throughput.png", "benchmarks.md"} <= set(report.artifacts)
    checks = {check.name: check for check in report.checks}
    assert checks["benchmark_gpu_tensorflow"].status in ("skipped", "passed")
    on_disk = json.loads((workdir / "report.json").read_text())
    assert on_disk["status"] == "passed" and on_disk["mlflow"]["run_id"] == report.mlflow.run_id
    assert {"name", "status", "message"} <= set(on_disk["checks"][0])

    client = MlflowClient(tracking_uri)
    run = client.get_run(report.mlflow.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["modelgate.status"] == "passed"
    assert run.data.params["resolved_signature"] == "serving_default"
    tf_bs1 = next(b for b in report.benchmarks if (b.runtime, b.batch_size) == ("tensorflow", 1))
    assert run.data.metrics["p50_ms.savedmodel.tensorflow.cpu.bs1"] == pytest.approx(tf_bs1.p50_ms)
    assert "throughput.onnx.onnxruntime.cpu.bs4" in run.data.metrics
    assert run.data.metrics["onnx.max_abs_diff.onnxruntime.cpu.scores"] == pytest.approx(onnx_outputs["scores"].max_abs_diff)
    assert {"report.json", "signatures.json", "latency.png", "throughput.png", "benchmarks.md",
            "latency-samples-tensorflow.json", "matrix.json", "benchmarks.json"} <= _artifacts(client, run.info.run_id)
    assert not [key for key in run.data.metrics if key.startswith("latency_")]  # one name per figure
    assert {"targets/onnx/model.onnx", "targets/onnx/reproduce.sh", "targets/onnx/conversion.json"} <= {
        artifact.path for artifact in client.list_artifacts(run.info.run_id, "targets/onnx")
    }
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json", str(workdir / "logged"))).read_text())
    assert logged["status"] == "passed"
    assert [stage["status"] for stage in logged["stages"]] == ["ok"] * len(logged["stages"])

    # Final and complete: written after the last stage, with the format to serve; MLflow keeps these copies.
    assert logged == on_disk == json.loads((Path(report.workdir) / "report.json").read_text())
    assert [stage["name"] for stage in on_disk["stages"]][-3:] == ["render-report", "log-mlflow", "publish-registry"]
    assert on_disk["registry"]["name"] == "flow-keras-export"
    assert {(row["target"], row["runtime"]) for row in on_disk["matrix"]} >= {("savedmodel", "tensorflow"),
                                                                              ("onnx", "onnxruntime")}
    recommendation = on_disk["recommendation"]
    assert recommendation["target"] == "onnx" and recommendation["runtime"] == "onnxruntime"
    assert recommendation["line"].startswith("serve onnx on onnxruntime/cpu") and recommendation["speedup"] > 0
    html = Path(client.download_artifacts(run.info.run_id, "report.html", str(workdir / "logged"))).read_text()
    assert html == (Path(report.workdir) / "report.html").read_text()
    assert "publish-registry" in html and ">running<" not in html


def test_custom_signature_with_two_inputs_falls_back_and_passes(model_dirs, tracking_uri, workdir):
    report = _run(model_dirs["custom_signature"], tracking_uri, workdir, export_onnx=False)
    assert report.status == "passed", report.first_error() or report.failed_checks()
    assert report.signature == "my_custom_signature"
    assert report.environment["sandbox"].startswith("landlock ABI")  # a benign model passes inside the OS sandbox
    checks = {check.name: check for check in report.checks}
    assert checks["signature_selection"].status == "warning"
    assert checks["keras_wrapper_parity"].status == "passed"
    assert "onnx" not in report.targets  # not asked


def test_nan_outputs_fail_the_finite_check(model_dirs, tracking_uri, workdir):
    report = _run(model_dirs["nan_outputs"], tracking_uri, workdir, export_onnx=False, benchmark=False)
    assert report.status == "failed"
    assert [check.name for check in report.failed_checks()] == ["finite_outputs"]
    assert MlflowClient(tracking_uri).get_run(report.mlflow.run_id).data.tags["modelgate.status"] == "failed"


def test_string_inputs_get_seeded_words_and_every_check_runs(model_dirs, tracking_uri, workdir):
    report = _run(model_dirs["string_input"], tracking_uri, workdir, export_onnx=False)
    assert report.status == "passed", report.first_error() or report.failed_checks()
    checks = {check.name: check.status for check in report.checks}
    for name in ("keras_wrapper_parity", "finite_outputs", "deterministic", "batch_consistency"):
        assert checks[name] == "passed", (name, checks[name])
    assert report.benchmarks and report.inputs.source == "synthetic" and len(report.inputs.samples["text"]) == 4


def test_a_failed_stage_is_recorded_and_independent_stages_still_run(model_dirs, tracking_uri, workdir):
    # A twentieth of a second is too little for any model stage, even in a child that has its frameworks
    # imported: the first to run the model fails, the ones needing its inputs are skipped, ONNX's export
    # fails alone; stages without model code still run.
    report = _run(model_dirs["custom_signature"], tracking_uri, workdir, onnx_opset=7, model_timeout_s=0.05)
    stages = {stage.name: stage for stage in report.stages}
    assert stages["probe-batch"].status == "error" and "timed out after 0.05 s" in stages["probe-batch"].message
    assert stages["load-and-wrap"].status == "skipped"
    assert stages["export-onnx"].status == "error"
    assert stages["compare-onnx"].status == "skipped"
    assert stages["prepare-inputs"].status == "ok"
    assert report.status == "error" and report.targets["onnx"].status == "error"
    run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
    assert run.info.status == "FAILED"
    assert "timed out" in run.data.tags["modelgate.first_error"]


def test_bad_model_dir_is_an_error_with_a_report_and_a_failed_run(tmp_path, tracking_uri, workdir):
    report = _run(tmp_path / "nothing-here", tracking_uri, workdir)
    assert report.status == "error"
    assert "no such directory" in report.first_error()
    assert json.loads((workdir / "report.json").read_text())["status"] == "error"
    assert MlflowClient(tracking_uri).get_run(report.mlflow.run_id).info.status == "FAILED"


def test_a_missing_model_still_names_its_run_and_logs_each_stage_and_the_verdict(tmp_path, tracking_uri, workdir):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from tests.service.test_run_logs import _assert_tells_each_stage, _log_with_verdict

    report = _run(tmp_path / "absent-model", tracking_uri, workdir)
    on_disk = json.loads((workdir / "report.json").read_text())
    assert on_disk["status"] == "error" and on_disk["recommendation"]["target"] is None
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["absent-model"])))
        assert "model:absent-model" in run.tags
        lines = _log_with_verdict(client, run.id)
    _assert_tells_each_stage(lines, on_disk)
    assert f"verdict: {report.verdict_line()}" in lines

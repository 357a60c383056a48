"""What people read of the targets (report.html, the console, the MLflow run, the registry version), from
a report filled by hand (tests/target_reports.py): no flow stage runs, the MLflow store is a real SQLite one."""

import base64
import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from modelgate.reporting import html_report, matrix
from modelgate.reporting.console import Console
from modelgate.tracking import mlflow_store, registry
from tests.target_reports import REFERENCE, targets_report


@pytest.fixture
def report(tmp_path):
    return targets_report(tmp_path)


def test_report_html_has_a_section_per_target_the_matrix_and_the_latency_against_error_plot(report):
    page = html_report.render(report)
    assert "<h2>ONNX</h2>" not in page
    for name, section in report.targets.items():
        assert f"<h3>{name} <small>" in page and section.message in page
    assert "onnxruntime/gpu</b> not compared: no CUDA provider on this machine" in page
    assert "op ParseExampleV2 has no TFLite kernel" in page and "litert_conversion" in page
    assert "<b>onnxruntime/cpu</b> on onnxruntime:cpu" in page
    assert "<h2>Format matrix</h2>" in page and matrix.build(report).recommendation_line() in page
    assert "bs8 p50 ms · samples/s" in page
    plot = re.search(r'alt="latency against error" src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(plot[1]).startswith(b"\x89PNG")


def test_report_html_without_targets_says_so(report):
    report.targets, report.benchmarks = {}, []
    page = html_report.render(report)
    assert "No conversion target was asked." in page
    assert "no format recommended: no conversion target was asked" in page
    assert "latency against error" not in page


def test_console_shows_each_target_s_status_and_problems_then_the_matrix_and_the_recommendation(
        report, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # plain lines (no terminal here), none wrapped
    Console().verdict(report)
    text = capsys.readouterr().out
    assert "litert: litert_conversion" in text and "onnx: onnx_checker" not in text  # only what went wrong
    for name, section in report.targets.items():
        assert re.search(rf"^  {section.status} +{re.escape(name)}: {re.escape(section.message)}$", text, re.M)
    assert "format matrix" in text and "not compared: onnx on onnxruntime/gpu: no CUDA provider on this machine" in text
    assert f"recommendation: {matrix.build(report).recommendation_line()}" in text
    assert text.index("format matrix") > text.index("litert_conversion")


def _onnx_model(path: Path) -> str:
    """A real ONNX model with the test signature, for MLflow to log."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = {name: numpy_helper.from_array(np.ones((4, value.shape[1]), np.float32), f"w_{name}")
               for name, value in REFERENCE.items()}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", f"w_{name}"], [name]) for name in REFERENCE], "matrix-test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", value.shape[1]]) for name, value in REFERENCE.items()],
        list(weights.values()),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return str(path)


def _artifacts(client, run_id, path=None):
    """Every file of the run, recursively."""
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_mlflow_gets_per_target_metrics_tables_artifacts_and_the_recommendation(tmp_path, tracking_uri):
    report = targets_report(tmp_path, tracking_uri, onnx_model=_onnx_model(tmp_path / "onnx" / "model.onnx"))
    report.mlflow = mlflow_store.open_run(report.request, str(tmp_path), None)
    logged = mlflow_store.log_results(report)
    client = MlflowClient(tracking_uri)
    run = client.get_run(report.mlflow.run_id)
    metrics, tags = run.data.metrics, run.data.tags

    assert metrics["p50_ms.onnx-fp16.onnxruntime.cpu.bs8"] == 3.2
    assert metrics["throughput.savedmodel.tensorflow.cpu.bs1"] == pytest.approx(1000 / 2.1)
    assert {f"{figure}.onnx-int8.onnxruntime.cpu.bs1" for figure in
            ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "throughput")} <= set(metrics)
    # One name per figure: the legacy names, the SavedModel's and ONNX's, are gone (docs/CHANGELOG.md).
    assert metrics["p50_ms.savedmodel.tensorflow.cpu.bs8"] == 8.0 and metrics["p50_ms.onnx.onnxruntime.cpu.bs8"] == 4.0
    assert "throughput.onnx.onnxruntime.cpu.bs1" in metrics
    assert not [key for key in metrics if key.startswith("latency_")]
    assert not {"throughput.tensorflow.cpu.bs1", "throughput.onnxruntime.cpu.bs1", "onnx.max_abs_diff.logits"} & set(metrics)
    onnx_logits = report.targets["onnx"].comparisons["onnxruntime/cpu"].outputs["logits"]
    assert metrics["onnx.max_abs_diff.onnxruntime.cpu.logits"] == pytest.approx(onnx_logits.max_abs_diff)
    int8 = report.targets["onnx-int8"].comparisons["onnxruntime/cpu"].outputs["embedding"]
    assert metrics["onnx-int8.cosine_similarity.onnxruntime.cpu.embedding"] == pytest.approx(int8.cosine_similarity)
    assert metrics["onnx.passed"] == 1.0 and metrics["onnx-int8.passed"] == 0.0 and metrics["litert.passed"] == 0.0
    assert metrics["openvino.size_bytes"] == 4396 and metrics["litert.conversion_seconds"] == 0.75

    assert tags["modelgate.recommended_format"] == "onnx-fp16" and tags["modelgate.recommended_speedup"] == "2.5"
    files = _artifacts(client, run.info.run_id)
    assert {"matrix.json", "benchmarks.json", "onnx/comparison_table.json", "onnx-int8/comparison_table.json",
            "openvino/comparison_table.json", "targets/onnx/conversion.json", "targets/onnx-fp16/model.onnx",
            "targets/openvino/model.xml", "targets/openvino/model.bin", "targets/litert/converter.log"} <= files
    assert "litert/comparison_table.json" not in files and "targets/onnx/model.onnx" not in files
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "matrix.json", str(tmp_path / "dl"))).read_text())
    assert table["columns"][:3] == ["target", "runtime", "device"] and len(table["data"]) == 8
    figures = json.loads(Path(client.download_artifacts(run.info.run_id, "benchmarks.json", str(tmp_path / "dl"))).read_text())
    assert len(figures["data"]) == len(report.benchmarks) and {"p50_ms", "std_ms", "throughput", "stable"} <= set(figures["columns"])

    uri = logged["onnx"]
    assert uri and uri.startswith("models:/")


def test_the_registry_version_shows_the_verdict_and_the_format_in_a_few_tags_and_a_narrow_description(
    report, tracking_uri, tmp_path
):
    client = registry.registry_client(tracking_uri)
    client.create_registered_model("matrix-gate")
    version = registry.RegistryVersion("matrix-gate", client.create_model_version("matrix-gate", str(tmp_path)).version)
    client.set_model_version_tag(version.name, version.version, "modelgate.target.onnx", "failed")  # an older verdict's
    client.set_model_version_tag(version.name, version.version, "modelgate.claim", "flow-run-id")  # the schedule's
    client.set_model_version_tag(version.name, version.version, "team", "vision")  # not modelgate's
    registry.write_back(client, version, report, alias=None, flow_run_url="http://prefect/runs/flow-run/1")
    mv = client.get_model_version(version.name, version.version)

    assert mv.tags["modelgate.status"] == "passed" and mv.tags["modelgate.p50_ms.tensorflow.cpu.bs1"] == "2"
    assert mv.tags["modelgate.recommended_format"] == "onnx-fp16" and mv.tags["modelgate.recommended_speedup"] == "2.5"
    assert {key for key in mv.tags if key.startswith("modelgate.")} == {f"modelgate.{key}" for key in (
        "status", "recommended_format", "recommended_speedup", "p50_ms.tensorflow.cpu.bs1", "validated_at",
        "validator_version", "run_id", "claim")}
    assert mv.tags["team"] == "vision"
    description = mv.description
    assert description.startswith("## modelgate: **PASSED**\n\n**Serve `onnx-fp16`** on onnxruntime/cpu: 2.50× faster")
    assert "- `litert` (required): **failed**: conversion failed: op ParseExampleV2 has no TFLite kernel" in description
    assert "- `onnx-int8` (required): **failed** (max abs diff" in description
    assert "|" not in description  # no table: the matrix is report.html's
    assert max(len(line) for line in description.splitlines()) < 400
    run = report.mlflow
    assert f"[MLflow run](#/experiments/{run.experiment_id}/runs/{run.run_id})" in description
    assert "[Prefect flow run](http://prefect/runs/flow-run/1)" in description

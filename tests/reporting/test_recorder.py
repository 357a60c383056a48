"""The report the recorder keeps: final when the validation closes, with the format matrix and the format to serve."""

import json

from modelgate.report import Check
from modelgate.reporting import matrix
from modelgate.reporting.recorder import ValidationRun
from modelgate.request import ValidationRequest
from tests.target_reports import targets_report


def test_closing_writes_the_matrix_the_recommendation_and_report_html_beside_report_json(tmp_path):
    request = ValidationRequest(source=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                                report_path=str(tmp_path / "report.json"))
    run = ValidationRun(request)
    filled = targets_report(tmp_path)
    run.report.targets, run.report.benchmarks = filled.targets, filled.benchmarks
    run.report.checks.append(Check(name="onnx_int8_parity", status="failed", message="outputs miss the criteria"))
    run.report.targets["onnx"].comparisons["onnxruntime/cpu"].outputs["logits"].max_abs_diff = float("inf")

    report = run.close()
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads((run.workdir / "report.json").read_text())
    built = matrix.build(report)
    assert on_disk["recommendation"]["target"] == built.recommendation.target
    assert on_disk["recommendation"]["line"] == built.recommendation_line()
    assert on_disk["recommendation"]["speedup"] > 1
    assert [(row["target"], row["runtime"], row["device"]) for row in on_disk["matrix"]] == [
        (row.target, row.runtime, row.device) for row in built.rows]
    onnx_cpu = next(row for row in on_disk["matrix"] if (row["target"], row["device"]) == ("onnx", "cpu"))
    assert onnx_cpu["max_abs_diff"] == "Infinity"  # not null, which would read as 'not computed'
    assert on_disk["status"] == "failed" and on_disk["finished_at"]
    html = (run.workdir / "report.html").read_text()
    assert report.artifacts["report.html"] == str(run.workdir / "report.html") and "onnx_int8_parity" in html


def test_a_verdict_with_nothing_to_recommend_says_why(tmp_path):
    run = ValidationRun(ValidationRequest(source=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                                          report_path=str(tmp_path / "report.json")))
    run.conclude()
    recommendation = json.loads((tmp_path / "report.json").read_text())["recommendation"]
    built = matrix.build(run.report)
    assert recommendation["target"] is None and recommendation["reason"] == built.reason
    assert "no conversion target" in recommendation["reason"] and recommendation["line"] == built.recommendation_line()

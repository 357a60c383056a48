"""What people see of a failing target's localisation and remediation: the report's sections as the stages fill
them, the console's lines, report.html, the format matrix's label of a variant that stands, and MLflow's tags.
Reports filled by hand (tests/target_reports.py); the stages that find these are tested in tests/targets/."""

import logging

import pytest

from modelgate.report import Check, ConversionRecord, Localisation, Remediation, TensorDivergence, VariantResult
from modelgate.reporting import html_report, matrix
from modelgate.reporting.console import Console
from modelgate.request import TargetRequest
from modelgate.stages import TargetArtifact, TargetLocalisation, TargetRemediation
from modelgate.tracking.mlflow_store import _finding_tags, _metrics
from tests.target_reports import bench, comparison, targets_report

FIRST = TensorDivergence(
    tensorflow_name="model/outlier_head/BiasAdd:0", op_type="BiasAdd", position=7,
    target_name="model/outlier_head/BiasAdd:0", target_node="model/outlier_head/Conv2D", max_abs_diff=3.2,
    relative_error=0.41, cosine_similarity=0.62, reference_max_abs=7.8, passed=False,
)
UPSTREAM = FIRST.model_copy(update={"tensorflow_name": "model/outlier/Relu:0", "op_type": "Relu", "position": 6,
                                    "relative_error": 0.004, "cosine_similarity": 0.99999, "passed": True})
SUMMARY = "first diverges at BiasAdd model/outlier_head/BiasAdd:0 (relative error 0.41, 100x its inputs')"


def localisation() -> Localisation:
    return Localisation(runtime="onnxruntime", rows=2, verdict="localised", summary=SUMMARY, first=FIRST,
                        upstream=[UPSTREAM], reference_tensors=40, target_tensors=52, matched=38,
                        unmatched=["model/outlier_head/Conv2D_quantized:0"])


def remediation(workdir) -> tuple[Remediation, TargetArtifact]:
    passing = VariantResult(
        label="1 node left in float", settings={"nodes_to_exclude": ["model/outlier_head/Conv2D"]}, status="passed",
        comparisons={"onnxruntime/cpu": comparison("onnxruntime", "cpu", 1e-4, 1e-2, 1e-2)}, p50_ms=0.61,
        batch_size=4, duration_s=6.5,
        conversion=ConversionRecord(path=str(workdir / "onnx-int8" / "variants" / "1" / "model.onnx"), size_bytes=600,
                                    duration_s=2.5, reproduce="python -c 'quantize(...)'"),
    )
    untried = VariantResult(label="per-channel weights", settings={"per_channel": True})
    found = Remediation(budget_s=180, spent_s=6.5, variants=[passing, untried], chosen=passing.label,
                        summary="onnx-int8 passes as onnx-int8 (1 node left in float): cosine 0.99999, p50 0.61 ms")
    return found, TargetArtifact(target="onnx-int8", conversion=passing.conversion)


@pytest.fixture
def report(tmp_path):
    report = targets_report(tmp_path)
    report.source, report.workdir = "/models/classifier", "modelgate-out/20261207T042949Z-41308afe"
    report.checks = [Check(name="onnx_int8_parity", status="failed", message="onnx-int8: outputs logits miss")]
    TargetLocalisation(target="onnx-int8", localisation=localisation()).apply_to(report)
    return report


def test_a_variant_that_passes_stands_as_the_target_only_where_remediation_applies(report, tmp_path):
    found, artifact = remediation(tmp_path)
    TargetRemediation(target="onnx-int8", remediation=found, artifact=artifact).apply_to(report)
    section = report.targets["onnx-int8"]
    assert section.status == "failed" and report.failed_checks()[0].name == "onnx_int8_parity"
    assert section.remediation.chosen == "1 node left in float" and not section.remediation.applied

    report.request.targets["onnx-int8"] = TargetRequest(remediation="apply")
    applied = found.model_copy(update={"applied": report.request.applies_remediation("onnx-int8")})
    TargetRemediation(target="onnx-int8", remediation=applied, artifact=artifact).apply_to(report)
    assert section.status == "passed" and not report.failed_checks()
    assert section.conversion.path.endswith("variants/1/model.onnx")
    assert section.message.startswith("the variant '1 node left in float' stands; as converted by default it failed: ")
    assert applied.original_message == "outputs logits, embedding miss the criteria"
    # The matrix shows the variant that stands, and a recommendation of it names it.
    report.benchmarks = [bench("savedmodel", "tensorflow", "cpu", 1, 2.0), bench("onnx-int8", "onnxruntime", "cpu", 1, 0.5)]
    built = matrix.build(report)
    assert [row.label for row in built.rows if row.target == "onnx-int8"] == ["onnx-int8 (1 node left in float)"]
    assert built.recommendation_line().startswith("serve onnx-int8 (1 node left in float) on onnxruntime/cpu")


def test_console_html_and_mlflow_say_where_the_error_starts_and_which_variant_passed(report, tmp_path, capsys,
                                                                                      monkeypatch):
    found, artifact = remediation(tmp_path)
    TargetRemediation(target="onnx-int8", remediation=found, artifact=artifact).apply_to(report)
    monkeypatch.setenv("COLUMNS", "100")
    Console("full").verdict(report)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    words = " ".join(out.split())
    assert f"where: {SUMMARY}" in words and f"variants: {found.summary}" in words

    page = html_report.render(report)
    assert "Where the error starts" in page and "model/outlier_head/BiasAdd:0" in page
    assert "38 of 52 tensors of the converted model matched" in page
    assert "1 node left in float" in page and "per-channel weights" in page and "untried" in page

    tags = {tag.key: tag.value for tag in _finding_tags(report)}
    assert tags == {"modelgate.onnx-int8.localisation": SUMMARY, "modelgate.onnx-int8.remediation": found.summary}
    metrics = _metrics(report)
    assert metrics["onnx-int8.localisation.matched_tensors"] == 38
    assert metrics["onnx-int8.remediation.variants_tried"] == 1 and metrics["onnx-int8.remediation.passed"] == 1


def test_the_run_s_log_says_where_the_error_starts_beside_the_stage_s_outcome(tmp_path, caplog):
    from modelgate.reporting.recorder import ValidationRun
    from modelgate.request import ValidationRequest

    class Localise:  # what the recorder reads of a stage's task: its name, and a call
        name = "localise-onnx-int8"

        def __call__(self) -> TargetLocalisation:
            return TargetLocalisation(target="onnx-int8", localisation=localisation())

    request = ValidationRequest(source=str(tmp_path), output={"output_dir": str(tmp_path / "out"),
                                                              "report_path": str(tmp_path / "report.json")})
    run = ValidationRun(request)
    run.report.targets = targets_report(tmp_path).targets
    logger = logging.getLogger("modelgate")  # it may not propagate (modelgate.execution.quiet): caplog's handler on it
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="modelgate"):
            run.stage(Localise())
    finally:
        logger.removeHandler(caplog.handler)
    # Once each, whether caplog saw a record through the root logger, its own handler, or both.
    lines = list(dict.fromkeys(record.getMessage() for record in caplog.records))
    assert lines[-2].startswith("localise-onnx-int8 ok in ") and lines[-1] == f"localise-onnx-int8: {SUMMARY}"

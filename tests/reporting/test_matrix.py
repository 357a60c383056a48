"""The format matrix and its recommendation, from reports filled by hand (tests/target_reports.py)."""

import pytest

from modelgate.report import TargetSection
from modelgate.reporting import matrix
from tests.target_reports import bench, comparison, targets_report


@pytest.fixture
def report(tmp_path):
    return targets_report(tmp_path)


def _rows(built):
    return {(row.target, row.runtime, row.device): row for row in built.rows}


def test_reference_rows_lead_then_every_target_runtime_and_device(report):
    built = matrix.build(report)
    assert [(row.target, row.placement) for row in built.rows] == [
        ("savedmodel", "tensorflow/cpu"), ("savedmodel", "keras/cpu"),
        ("onnx", "onnxruntime/cpu"), ("onnx", "onnxruntime/gpu"), ("onnx-fp16", "onnxruntime/cpu"),
        ("onnx-int8", "onnxruntime/cpu"), ("litert", "–"), ("openvino", "openvino/cpu"),
    ]
    assert built.batch_sizes == [1, 8]
    rows = _rows(built)
    tensorflow = rows["savedmodel", "tensorflow", "cpu"]
    assert tensorflow.status == "reference" and tensorflow.parity is None and set(tensorflow.speeds) == {1, 8}


def test_a_compared_row_carries_conversion_parity_worst_errors_and_speeds(report):
    onnx = _rows(matrix.build(report))["onnx", "onnxruntime", "cpu"]
    outputs = report.targets["onnx"].comparisons["onnxruntime/cpu"].outputs
    assert (onnx.status, onnx.requirement, onnx.parity) == ("passed", "required", True)
    assert (onnx.conversion_s, onnx.size_bytes) == (1.25, 2048)
    assert onnx.max_abs_diff == max(o.max_abs_diff for o in outputs.values())
    assert onnx.max_rel_diff == max(o.max_rel_diff for o in outputs.values())
    assert onnx.cosine_similarity == min(o.cosine_similarity for o in outputs.values())
    assert onnx.top1_agreement == outputs["logits"].top1_agreement == 1.0  # the only class-score output
    assert onnx.speeds[8].p50_ms == 4.0 and onnx.speeds[8].throughput == pytest.approx(8000 / 4.2)


def test_failed_optional_unbenchmarked_and_uncompared_targets_are_shown_as_such(report):
    rows = _rows(matrix.build(report))
    int8 = rows["onnx-int8", "onnxruntime", "cpu"]
    assert int8.status == "failed" and int8.parity is False and int8.top1_agreement < 1
    assert rows["onnx-fp16", "onnxruntime", "cpu"].requirement == "optional"
    litert = rows["litert", None, None]
    assert litert.status == "failed" and litert.parity is None and litert.conversion_s == 0.75
    assert litert.note == report.targets["litert"].message and litert.size_bytes is None
    assert rows["openvino", "openvino", "cpu"].parity is True and rows["openvino", "openvino", "cpu"].speeds == {}
    gpu = rows["onnx", "onnxruntime", "gpu"]
    assert gpu.parity is None and gpu.note == "no CUDA provider on this machine" and gpu.speeds == {}
    headers, cells = matrix.build(report).table()
    by_placement = {(cell[0], cell[1]): dict(zip(headers, cell)) for cell in cells}
    assert by_placement["onnx", "onnxruntime/gpu"]["parity"] == "not compared: no CUDA provider on this machine"
    assert by_placement["onnx-fp16", "onnxruntime/cpu"]["bs8 p50 ms · samples/s"].startswith("3.2* · ")
    assert by_placement["openvino", "openvino/cpu"]["size"] == "4.3 KiB"


def test_the_fastest_passing_target_is_recommended_at_the_largest_batch_size_both_measured(report):
    built = matrix.build(report)
    chosen = built.recommendation
    # onnx-int8 is faster still, but fails; onnx beats TensorFlow 2x at batch size 8, onnx-fp16 2.5x.
    assert (chosen.target, chosen.runtime, chosen.device, chosen.batch_size) == ("onnx-fp16", "onnxruntime", "cpu", 8)
    assert (chosen.reference_runtime, chosen.reference_p50_ms, chosen.p50_ms) == ("tensorflow", 8.0, 3.2)
    assert chosen.speedup == pytest.approx(2.5)
    assert built.recommendation_line() == (
        "serve onnx-fp16 on onnxruntime/cpu: 2.50× faster than tensorflow (p50 3.2 ms against 8 ms at batch size 8, "
        "the largest both measured)")
    assert built.tags() == {"recommended_format": "onnx-fp16", "recommended_speedup": "2.5",
                            "recommendation": built.recommendation_line()}


def test_only_batch_sizes_tensorflow_measured_on_the_same_device_count(report):
    report.benchmarks = [b for b in report.benchmarks if b.target != "onnx-fp16"] + [
        bench("onnx-fp16", "onnxruntime", "cpu", 4, 0.1),  # TensorFlow never ran at 4
        bench("onnx-fp16", "onnxruntime", "gpu", 8, 0.1),  # nor on the GPU
    ]
    report.targets["onnx-fp16"].comparisons["onnxruntime/gpu"] = comparison("onnxruntime", "gpu", 1e-3, 1e-2, 1e-2)
    chosen = matrix.build(report).recommendation
    assert (chosen.target, chosen.batch_size, chosen.speedup) == ("onnx", 8, pytest.approx(2.0))


def test_tf1_session_is_tensorflow_s_own_figure_and_a_slower_target_still_is_recommended(report):
    report.benchmarks = [
        bench("savedmodel", "tf1-session", "cpu", 1, 1.0), bench("savedmodel", "tf1-session", "cpu", 8, 2.0),
        bench("onnx", "onnxruntime", "cpu", 1, 1.0), bench("onnx", "onnxruntime", "cpu", 8, 4.0),
    ]
    built = matrix.build(report)
    assert built.rows[0].runtime == "tf1-session"
    assert built.recommendation.speedup == pytest.approx(0.5)
    assert built.recommendation_line().startswith("serve onnx on onnxruntime/cpu: 0.50× the speed of tf1-session")


@pytest.mark.parametrize("change, reason", [
    ("fail_all", "no target passed its comparison with TensorFlow"),
    ("no_benchmarks", "no passing target (onnx, onnx-fp16, openvino) was benchmarked"),
    ("gpu_only", "no passing target was benchmarked at a batch size TensorFlow measured on the same device"),
])
def test_no_recommendation_says_why(report, change, reason):
    if change == "fail_all":
        for section in report.targets.values():
            section.status = "failed"
    elif change == "no_benchmarks":
        report.benchmarks = [b for b in report.benchmarks if b.target == "savedmodel"]
    else:
        report.benchmarks = [b for b in report.benchmarks if b.target == "savedmodel"] + [
            bench("onnx", "onnxruntime", "gpu", 8, 1.0)]  # passing on the GPU, where TensorFlow did not run
        report.targets["onnx"].comparisons["onnxruntime/gpu"] = comparison("onnxruntime", "gpu", 1e-6, 1e-4, 1e-3)
    built = matrix.build(report)
    assert built.recommendation is None and built.reason == reason
    assert built.tags() == {"recommended_format": "none", "recommendation": f"no format recommended: {reason}"}


def test_a_report_without_targets_or_benchmarks_has_an_empty_matrix(report):
    report.targets, report.benchmarks = {}, []
    built = matrix.build(report)
    assert built.rows == [] and built.reason == "no conversion target was asked"
    assert matrix.plot_points(built) == (None, {}, {})


def test_columns_are_one_per_figure_and_batch_size(report):
    built = matrix.build(report)
    columns = built.columns()
    assert {len(values) for values in columns.values()} == {len(built.rows)}
    assert columns["target"][2] == "onnx" and columns["p50_ms.bs8"][2] == 4.0
    assert columns["p50_ms.bs8"][-1] is None  # openvino: never benchmarked
    assert "speeds" not in columns


def test_plot_points_are_at_tensorflow_s_smallest_batch_size(report):
    size, points, references = matrix.plot_points(matrix.build(report))
    assert size == 1 and references == {"tensorflow/cpu": 2.0}
    assert set(points) == {"onnx onnxruntime/cpu", "onnx-fp16 onnxruntime/cpu", "onnx-int8 onnxruntime/cpu"}
    worst = min(o.cosine_similarity for o in report.targets["onnx-int8"].comparisons["onnxruntime/cpu"].outputs.values())
    assert points["onnx-int8 onnxruntime/cpu"] == (1 - worst, 0.5, False)
    assert points["onnx onnxruntime/cpu"][2] is True


def test_a_target_never_run_anywhere_is_one_row_with_its_message(report):
    section = TargetSection(name="openvino", artifact_format="openvino", status="skipped",
                            message="skipped: openvino is not installed")
    report.targets, report.benchmarks = {"openvino": section}, []
    rows = matrix.build(report).rows
    assert [(row.runtime, row.status, row.note, row.conversion_s) for row in rows] == [
        (None, "skipped", section.message, None)]


def test_a_throughput_beside_a_p50_says_its_mean_where_slow_calls_put_the_two_apart(report):
    # A p50 of 5 µs beside a throughput from a mean of 53 µs: the cell says the mean, the legend what each is.
    slow_calls = bench("onnx", "onnxruntime", "cpu", 1, 0.00514)
    slow_calls.mean_ms, slow_calls.throughput = 0.0533, 1000 / 0.0533
    report.benchmarks = [b for b in report.benchmarks if (b.target, b.batch_size) != ("onnx", 1)] + [slow_calls]
    built = matrix.build(report)
    headers, cells = built.table()
    by_placement = {(cell[0], cell[1]): dict(zip(headers, cell)) for cell in cells}
    assert by_placement["onnx", "onnxruntime/cpu"]["bs1 p50 ms · samples/s"] == "0.00514 · 18,762 (mean 0.0533 ms)"
    assert by_placement["onnx", "onnxruntime/cpu"]["bs8 p50 ms · samples/s"] == "4 · 1,905"  # mean 4.2: near enough
    assert "samples/s: the batch size over the mean latency (the mean is said beside the p50" in built.legend()[0]

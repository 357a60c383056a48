"""What the console prints of a report, without a terminal (CI, a worker's log, a pipe) and in each mode, from a
report filled by hand (tests/target_reports.py): lines that fit the width and break only between words, numbers
and words rather than Python's reprs, and latency beside throughput said for what each is."""

import json
import re

import pytest

from modelgate.report import Check, StageRecord
from modelgate.reporting.console import Console
from tests.target_reports import targets_report

LONG_MESSAGE = ("each of 4 rows of a batch of 4 equals the row run alone within atol 0.0001 or rtol 0.001 of the "
                "element or of the output's largest magnitude; 'probabilities' differs by at most 0 (0 of its "
                "largest magnitude 0.478); 'scores' differs by at most 0")


@pytest.fixture
def report(tmp_path):
    report = targets_report(tmp_path)
    # Paths as short as a person's: a path longer than the line would keep a line of its own, over the width.
    report.source, report.workdir = "/models/classifier", "modelgate-out/20261207T042949Z-41308afe"
    report.checks = [
        Check(name="finite_outputs", status="passed", message="no NaN or Inf in any output"),
        Check(name="batch_consistency", status="warning", message=LONG_MESSAGE),
        Check(name="benchmark_stability_onnx_onnxruntime_with_a_long_name", status="warning",
              message="window means did not settle within 10 % for onnx-fp16 at batch size 8"),
    ]
    report.stages = [StageRecord(name="inspect", status="error", duration_s=2.5, message=LONG_MESSAGE)]
    return report


def printed(capsys, report, mode="full", columns=None, monkeypatch=None) -> str:
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    console = Console(mode)
    for stage in report.stages:
        console.stage_finished(stage)
    console.verdict(report)
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [60, 100, 140])
def test_plain_lines_fit_the_width_and_break_only_between_words(report, capsys, monkeypatch, columns):
    narrow = printed(capsys, report, columns=columns, monkeypatch=monkeypatch)
    assert max(len(line) for line in narrow.splitlines()) <= columns
    # The same account with room for every line: the words, in order, are the same ones, none cut in two.
    wide = printed(capsys, report, columns=100_000, monkeypatch=monkeypatch)
    assert narrow.split() == wide.split()
    assert "benchmark_stability_onnx_onnxruntime_with_a_long_name:" in narrow.split()  # whole, never cut


def test_the_matrix_is_one_line_per_target_runtime_and_device_and_one_per_batch_size(report, capsys, monkeypatch):
    out = printed(capsys, report, monkeypatch=monkeypatch, columns=100)
    lines = out.splitlines()
    onnx = next(index for index, line in enumerate(lines) if line.startswith("  passed  onnx on onnxruntime/cpu: "))
    # p50 and mean side by side, the throughput said to be the mean's: batch size 8 over 4.2 ms is 1,905/s.
    assert re.fullmatch(r" +bs1 +p50 1 ms +mean 1\.05 ms +952 samples/s", lines[onnx + 2])
    assert re.fullmatch(r" +bs8 +p50 4 ms +mean 4\.2 ms +1,905 samples/s", lines[onnx + 3])
    assert "samples/s: the batch size over the mean latency" in " ".join(out.split())
    assert "p50 3.2 ms*" in out and "* unstable: the window means never settled within 10 %" in out
    assert "not compared: litert: conversion failed: op ParseExampleV2 has no TFLite kernel" in out
    assert "not compared: onnx on onnxruntime/gpu: no CUDA provider on this machine" in out


def test_no_unstable_footnote_without_a_starred_figure(report, capsys, monkeypatch):
    for benchmark in report.benchmarks:
        benchmark.stable = True
    out = printed(capsys, report, monkeypatch=monkeypatch)
    assert "*" not in out and "unstable" not in out


def test_people_read_numbers_and_words_not_python_values(report, capsys, monkeypatch):
    out = printed(capsys, report, monkeypatch=monkeypatch)
    for repr_of_python in ("{'", "{}", "[]", "True", "False", "None"):
        assert repr_of_python not in out


def test_quiet_prints_only_the_verdict_line(report, capsys, monkeypatch):
    assert printed(capsys, report, "quiet", monkeypatch=monkeypatch) == "verdict: PASSED\n"
    report.status = "failed"
    report.checks.append(Check(name="finite_outputs", status="failed", message="output 'y' holds NaN"))
    assert printed(capsys, report, "quiet", monkeypatch=monkeypatch) == "verdict: FAILED: finite_outputs failed\n"


def test_json_prints_the_report_and_nothing_else(report, capsys, monkeypatch):
    out = printed(capsys, report, "json", monkeypatch=monkeypatch)
    document = json.loads(out)
    assert document["status"] == "passed" and set(document["targets"]) == set(report.targets)


def test_checks_that_passed_are_counted_the_others_said_with_their_reason(report, capsys, monkeypatch):
    out = printed(capsys, report, monkeypatch=monkeypatch, columns=100_000)
    assert "checks: 1 passed, 2 warning" in out and "finite_outputs" not in out
    assert f"  warning batch_consistency: {LONG_MESSAGE}\n" in out

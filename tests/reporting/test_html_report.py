"""report.html as people read it: numbers and words in every cell, never Python's reprs, and footnotes only
where a figure needs them. From a report filled by hand (tests/target_reports.py)."""

import re

import pytest

from modelgate.reporting import html_report
from tests.target_reports import targets_report


@pytest.fixture
def report(tmp_path):
    report = targets_report(tmp_path)
    report.targets["onnx"].conversion.details.update({"large_model": False, "unsupported_ops": {}, "inputs": ["x"]})
    return report


def _cells(page: str) -> list[str]:
    return [cell.strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]


def test_no_cell_holds_a_python_repr(report):
    page = html_report.render(report)
    cells = _cells(page)
    assert not {"True", "False", "None", "{}", "[]"} & set(cells)
    assert not [cell for cell in cells if cell.startswith(("{'", "['"))]
    assert "<td>large_model</td><td>no</td>" in page and "<td>unsupported_ops</td><td>none</td>" in page
    assert "MLflow run <code>None</code>" not in page


def test_the_unstable_footnote_only_under_a_table_with_a_starred_figure(report):
    assert "* unstable" in html_report.render(report)  # onnx-fp16 at batch size 8
    for benchmark in report.benchmarks:
        benchmark.stable = True
    page = html_report.render(report)
    assert "* unstable" not in page and "*" not in "".join(_cells(page))
    assert "samples/s: the batch size over the mean latency" in page

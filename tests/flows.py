"""Running the whole validation flow from a test: each test module binds its own defaults with functools.partial."""

from __future__ import annotations

from pathlib import Path

from flows.validate import validate
from modelgate.report import ValidationReport
from modelgate.request import ValidationRequest


def run_flow(source: str | Path, tracking_uri: str, workdir: Path, **fields) -> ValidationReport:
    """Validate `source` with the report at workdir/report.json and the outputs under workdir/out."""
    request = ValidationRequest(
        source=str(source), tracking_uri=tracking_uri, report_path=str(workdir / "report.json"),
        output_dir=str(workdir / "out"), **fields,
    )
    return validate(request)

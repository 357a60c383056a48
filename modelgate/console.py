"""What the CLI shows: each stage as it runs, then a short verdict. A spinner on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys

from rich.console import Console as RichConsole
from rich.table import Table

from modelgate.schemas import StageRecord, ValidationReport

MARKS = {
    "ok": ("✓", "green"), "failed": ("✗", "red"), "error": ("!", "red"), "skipped": ("–", "yellow"),
    "interrupted": ("■", "red"),
}
STATUS_STYLE = {"passed": "green", "failed": "red", "warning": "yellow", "skipped": "dim", "error": "red"}


class Console:
    def __init__(self) -> None:
        self.out = RichConsole(highlight=False)
        self.err = RichConsole(stderr=True, highlight=False)
        self._status = None

    def note(self, text: str) -> None:
        self.out.print(text, style="dim" if self.out.is_terminal else None)

    def error(self, text: str) -> None:
        self._stop_spinner()
        self.err.print(f"modelgate: error: {text}", style="bold red" if self.err.is_terminal else None, soft_wrap=True)

    def stage_started(self, name: str) -> None:
        if self.out.is_terminal:
            self._status = self.out.status(f"{name} …")
            self._status.start()

    def stage_finished(self, record: StageRecord) -> None:
        self._stop_spinner()
        mark, colour = MARKS.get(record.status, ("?", "white"))
        detail = f"  {record.message}" if record.message else ""
        if self.out.is_terminal:
            self.out.print(f"[{colour}]{mark}[/] {record.name:<17} {record.duration_s:7.2f} s{detail}", soft_wrap=True)
        else:
            sys.stdout.write(f"[{record.status}] {record.name} {record.duration_s:.2f}s{detail}\n")
            sys.stdout.flush()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    @staticmethod
    def _benchmark_table(report: ValidationReport) -> Table:
        """p50 latency and throughput, a column per runtime and device (their names stay whole in 80 columns),
        a row per batch size."""
        batch_sizes = sorted({b.batch_size for b in report.benchmarks})
        table = Table(title="p50 latency (ms) / throughput (samples/s); * = unstable", title_justify="left")
        table.add_column("batch", justify="right")
        columns: dict[str, dict[int, str]] = {}
        for b in report.benchmarks:
            mark = "" if b.stable else "*"
            columns.setdefault(f"{b.runtime}/{b.device}", {})[b.batch_size] = f"{b.p50_ms:.3g}{mark} / {b.throughput:,.0f}"
        for label in columns:
            table.add_column(label, justify="right")
        for size in batch_sizes:
            table.add_row(str(size), *(cells.get(size, "") for cells in columns.values()))
        return table

    def verdict(self, report: ValidationReport) -> None:
        if report.status == "error":
            self.error(report.first_error() or "validation did not complete")
        table = Table(title=f"{report.source} · signature {report.signature or '?'}", title_justify="left")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for check in report.checks:
            table.add_row(check.name, f"[{STATUS_STYLE[check.status]}]{check.status}[/]", check.message)
        onnx = report.onnx
        for check in onnx.checks:
            table.add_row(f"onnx: {check.name}", f"[{STATUS_STYLE[check.status]}]{check.status}[/]", check.message)
        table.add_row("onnx", f"[{STATUS_STYLE.get(onnx.status, 'white')}]{onnx.status}[/]", onnx.message)
        self.out.print(table)
        if report.benchmarks:
            self.out.print(self._benchmark_table(report))
        style = STATUS_STYLE[report.status]
        self.out.print(f"verdict: [bold {style}]{report.status.upper()}[/]")
        self.out.print(f"report: {report.request.report_path}  (working files: {report.workdir})", soft_wrap=True)
        if report.mlflow.run_id:
            self.out.print(
                f"mlflow run: {report.mlflow.run_id}  (tracking URI {report.mlflow.tracking_uri}, "
                f"experiment {report.mlflow.experiment_id}; see it with: mlflow ui --backend-store-uri "
                f"{report.mlflow.tracking_uri})",
                soft_wrap=True,
            )
        sys.stdout.flush()

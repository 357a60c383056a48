"""What the CLI shows: each stage as it runs, then a short verdict. A spinner on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys

from rich.console import Console as RichConsole
from rich.table import Table

from modelgate.report import StageRecord, ValidationReport
from modelgate.reporting import matrix

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
        # Without a terminal a line is not hard-wrapped at 80 columns: a log keeps it whole, paths unbroken.
        terminal = self.out.is_terminal
        self.out.print(text, style="dim" if terminal else None, soft_wrap=not terminal)

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
    def _matrix_table(built: matrix.Matrix) -> Table:
        headers, rows = built.table()
        table = Table(title="format matrix (p50 ms · samples/s per batch size; * = unstable)", title_justify="left")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*row)
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
        for name, target in report.targets.items():
            # Passed file checks are the target's status row's business; only what went wrong gets its own row.
            for check in target.checks:
                if check.status != "passed":
                    table.add_row(f"{name}: {check.name}", f"[{STATUS_STYLE[check.status]}]{check.status}[/]", check.message)
            table.add_row(name, f"[{STATUS_STYLE[target.status]}]{target.status}[/]", target.message)
        self.out.print(table)
        built = matrix.build(report)
        # A runtime and device that neither compared nor measured anything is a note, not a row of blanks.
        idle = [row for row in built.rows if row.note and row.parity is None and not row.speeds]
        shown = built.model_copy(update={"rows": [row for row in built.rows if row not in idle]})
        if shown.rows:
            self.out.print(self._matrix_table(shown))
        notes: dict[str, list[str]] = {}
        for row in idle:
            notes.setdefault(row.note, []).append(f"{row.target} on {row.placement}")
        for note, where in notes.items():
            self.out.print(f"not compared: {', '.join(where)}: {note}", soft_wrap=True)
        self.out.print(f"recommendation: {built.recommendation_line()}", soft_wrap=True)
        style = STATUS_STYLE[report.status]
        self.out.print(f"verdict: [bold {style}]{report.status.upper()}[/]")
        self.out.print(f"report: {report.request.output.report_path}  (working files: {report.workdir})", soft_wrap=True)
        if report.mlflow.run_id:
            self.out.print(
                f"mlflow run: {report.mlflow.run_id}  (tracking URI {report.mlflow.tracking_uri}, "
                f"experiment {report.mlflow.experiment_id}; see it with: mlflow ui --backend-store-uri "
                f"{report.mlflow.tracking_uri})",
                soft_wrap=True,
            )
        sys.stdout.flush()

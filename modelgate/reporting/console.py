"""What the CLI shows: each stage as it runs, then the checks that did not pass (those that did, counted), each
target's outcome, the format matrix and the verdict.

Three forms, by the command's options: the whole account (the default), the verdict line alone (--quiet), or the
report as JSON on stdout (--json). Errors go to stderr in each.

On a terminal: colour, a spinner while a stage runs, and the format matrix as a table where it fits the
terminal's width. Elsewhere (CI, a Prefect worker's log, a pipe): plain lines. Either way every line fits the
width (the terminal's; else $COLUMNS; else 100 columns) and breaks only between words; the matrix that is too
wide for a table becomes one line per target, runtime and device, and one per batch size under it.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Literal

from rich.console import Console as RichConsole
from rich.table import Table
from rich.text import Text

from modelgate.report import StageRecord, ValidationReport
from modelgate.reporting import matrix

PLAIN_WIDTH = 100
INDENT = "  "
MARKS = {
    "ok": ("✓", "green"), "failed": ("✗", "red"), "error": ("!", "red"), "skipped": ("–", "yellow"),
    "interrupted": ("■", "red"),
}
STATUS_STYLE = {"passed": "green", "failed": "red", "warning": "yellow", "skipped": "dim", "error": "red",
                "reference": "cyan"}
Mode = Literal["full", "quiet", "json"]


def plain_width() -> int:
    """The width of plain output: $COLUMNS where set (a CI log may say how wide it is), else 100."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return columns if columns > 0 else PLAIN_WIDTH


def wrap(text: str, width: int, first: str = "", then: str | None = None) -> list[str]:
    """Lines of at most `width` columns, broken only at spaces: a word longer than a line (a long path) keeps a
    line of its own rather than be cut. `first` leads the first line, `then` (default: as many spaces) the rest."""
    then = " " * len(first) if then is None else then
    longest = max((len(word) for word in (first + text).split()), default=0)
    if width - len(then) < max(20, longest):  # no room to hang an indent before the longest word: wrap flush
        then = ""
    # `first` is wrapped with the text: a long check name leading a line wraps too, rather than overflow it.
    return textwrap.wrap(first + text, width=width, subsequent_indent=then,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


class Console:
    def __init__(self, mode: Mode = "full") -> None:
        self.mode = mode
        self.out = RichConsole(highlight=False)
        self.err = RichConsole(stderr=True, highlight=False)
        self.terminal = self.out.is_terminal
        self.width = max(40, shutil.get_terminal_size().columns if self.terminal else plain_width())
        self._status = None

    # -- lines ---------------------------------------------------------------------------------------------

    def _lines(self, lines: list[str], lead: tuple[int, str] | None = None, style: str | None = None) -> None:
        """Print finished lines: on a terminal with `style`, and the first `lead[0]` characters of the first
        line in `lead[1]`; elsewhere as they are."""
        if not self.terminal:
            sys.stdout.write("".join(f"{line}\n" for line in lines))
            sys.stdout.flush()
            return
        for index, line in enumerate(lines):
            text = Text(line, style=style or "")
            if lead and index == 0:
                text.stylize(lead[1], 0, lead[0])
            self.out.print(text, soft_wrap=True)  # already wrapped: rich must not wrap it again

    def _say(self, text: str, first: str = "", then: str | None = None, style: str | None = None,
             lead_style: str | None = None, lead: int | None = None) -> None:
        """`text` wrapped after `first`; on a terminal the first `lead` characters (default: `first`) in `lead_style`."""
        styled = (len(first) if lead is None else lead, lead_style) if lead_style else None
        self._lines(wrap(text, self.width, first, then), styled, style)

    def note(self, text: str) -> None:
        if self.mode == "full":
            self._say(text, then=INDENT * 2, style="dim")

    def error(self, text: str) -> None:
        """One line on stderr, whatever its length: the reason comes whole, first, where a script greps it."""
        self._stop_spinner()
        self.err.print(Text(f"modelgate: error: {text}", style="bold red" if self.err.is_terminal else ""),
                       soft_wrap=True)

    # -- stages --------------------------------------------------------------------------------------------

    def stage_started(self, name: str) -> None:
        if self.terminal and self.mode == "full":
            self._status = self.out.status(f"{name} …")
            self._status.start()

    def stage_finished(self, record: StageRecord) -> None:
        self._stop_spinner()
        if self.mode != "full":
            return
        if self.terminal:
            mark, colour = MARKS.get(record.status, ("?", "white"))
            first = f"{mark} {record.name:<17} {record.duration_s:7.2f} s  "
            self._say(record.message, first, then=" " * 4, lead_style=colour)
        else:
            self._say(record.message, f"[{record.status}] {record.name} {record.duration_s:.2f}s  ", then=" " * 4)

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    # -- the verdict ---------------------------------------------------------------------------------------

    def verdict(self, report: ValidationReport) -> None:
        if report.status == "error":
            self.error(report.first_error() or "validation did not complete")
        if self.mode == "json":
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
            return
        if self.mode == "full":
            self._checks(report)
            self._matrix(matrix.build(report))
        self._verdict_line(report)
        if self.mode == "full":
            self._where(report)

    def _status_line(self, status: str, name: str, message: str) -> None:
        first = f"{INDENT}{f'{status} ':<8}{name}" + (": " if message else "")
        self._say(message, first, then=INDENT + " " * 8, lead_style=STATUS_STYLE.get(status), lead=len(INDENT) + len(status))

    def _checks(self, report: ValidationReport) -> None:
        self._say(f"{report.source} · signature {report.signature or 'not chosen'}", style="bold")
        counts: dict[str, int] = {}
        for check in report.checks:
            counts[check.status] = counts.get(check.status, 0) + 1
        self._say(f"checks: {', '.join(f'{n} {status}' for status, n in counts.items()) or 'none ran'}")
        for check in report.checks:  # what passed is counted; the rest is said, each with its reason
            if check.status != "passed":
                self._status_line(check.status, check.name, check.message)
        if report.targets:
            self._say("conversion targets:")
        for name, target in report.targets.items():
            # Passed file checks are the target's own line's business; only what went wrong gets a line.
            for check in target.checks:
                if check.status != "passed":
                    self._status_line(check.status, f"{name}: {check.name}", check.message)
            self._status_line(target.status, name, target.message)
            if target.localisation and target.localisation.summary:
                self._say(target.localisation.summary, first=f"{INDENT * 5}where: ", then=INDENT * 6)
            if target.remediation and target.remediation.summary:
                self._say(target.remediation.summary, first=f"{INDENT * 5}variants: ", then=INDENT * 6)

    def _matrix(self, built: matrix.Matrix) -> None:
        # A runtime and device that neither compared nor measured anything is a note, not a row of blanks.
        idle = [row for row in built.rows if row.note and row.parity is None and not row.speeds]
        shown = built.model_copy(update={"rows": [row for row in built.rows if row not in idle]})
        if shown.rows:
            if not (self.terminal and self._matrix_table(shown)):
                self._matrix_lines(shown)
            legend = _legend(shown)
            for line in legend:
                self._say(line, first=INDENT, style="dim")
        notes: dict[str, list[str]] = {}
        for row in idle:
            notes.setdefault(row.note, []).append(f"{row.label} on {row.placement}" if row.runtime else row.label)
        for note, where in notes.items():
            self._say(f"not compared: {', '.join(where)}: {note}")
        self._say(f"recommendation: {built.recommendation_line()}", then=INDENT * 2)

    def _matrix_table(self, built: matrix.Matrix) -> bool:
        """The matrix as a table of one row per target, runtime, device and batch size, if it fits the terminal
        without breaking a cell; else False."""
        headers, cells = built.table()
        fixed = len(headers) - len(built.batch_sizes)  # the columns before the speeds'
        headers = [*headers[:fixed], "batch", "p50 ms", "mean ms", "samples/s"]
        rows, styles = [], []
        for row, row_cells in zip(built.rows, cells):
            speeds = sorted(row.speeds.items()) or [(None, None)]
            for index, (size, speed) in enumerate(speeds):
                lead = row_cells[:fixed] if index == 0 else [""] * fixed
                rows.append([*lead, *(_speed_cells(size, speed) if speed else ["", "", "", ""])])
                styles.append(row.status if index == 0 else "")
        widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
        if sum(widths) + 3 * len(widths) + 1 > self.width:
            return False
        table = Table(title="format matrix", title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, no_wrap=True, justify="right" if index >= fixed + 1 else "left")
        for cells_of_row, status in zip(rows, styles):
            table.add_row(*(Text(cell, style=STATUS_STYLE.get(status, "") if i == 2 else "")
                            for i, cell in enumerate(cells_of_row)))
        self.out.print(table)
        return True

    def _matrix_lines(self, built: matrix.Matrix) -> None:
        """One line per target, runtime and device; under it one per batch size, its figures aligned."""
        self._say("format matrix: each format on each runtime and device, against TensorFlow's outputs")
        speeds = {
            (index, size): (f"bs{size}", f"p50 {speed.p50_ms:.3g} ms{'' if speed.stable else '*'}",
                            f"mean {speed.mean_ms:.3g} ms" if speed.mean_ms is not None else "",
                            f"{speed.throughput:,.0f} samples/s")
            for index, row in enumerate(built.rows) for size, speed in sorted(row.speeds.items())
        }
        widths = [max((len(cells[i]) for cells in speeds.values()), default=0) for i in range(4)]
        for index, row in enumerate(built.rows):
            where = f"{row.label} on {row.placement}" if row.runtime else row.label
            self._status_line(row.status, where, _row_figures(row))
            for size in sorted(row.speeds):
                cells = speeds[index, size]
                line = "  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                                 for i, (cell, width) in enumerate(zip(cells, widths)))
                self._say(line, first=INDENT * 3)

    def _verdict_line(self, report: ValidationReport) -> None:
        failed = [check.name for check in report.failed_checks()]
        reason = f": {', '.join(failed)} failed" if report.status == "failed" and failed else ""
        self._say(f"verdict: {report.status.upper()}{reason}", then=INDENT * 2,
                  lead_style=f"bold {STATUS_STYLE[report.status]}", lead=len("verdict: ") + len(report.status))

    def _where(self, report: ValidationReport) -> None:
        # Paths as the person typed them where they can: under the current folder, relative to it.
        self._say(f"report: {_shown_path(report.request.output.report_path)}", then=INDENT * 2)
        self._say(f"working files: {_shown_path(report.workdir)}", then=INDENT * 2)
        if report.mlflow.run_id:
            uri = report.mlflow.tracking_uri
            self._say(f"mlflow run: {report.mlflow.run_id} in experiment {report.mlflow.experiment_id} of {uri}",
                      then=INDENT * 2)
            self._say(f"see it with: mlflow ui --backend-store-uri {uri}", first=INDENT, then=INDENT * 2)


def _shown_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _row_figures(row: matrix.MatrixRow) -> str:
    """A matrix row's parity, errors and conversion, in words."""
    parity = matrix.parity_text(row)
    parts = [] if row.is_reference else [f"outputs {parity}" if row.parity is not None else parity]
    errors = [(label, matrix.number(getattr(row, field), spec)) for label, field, spec in (
        ("max abs diff", "max_abs_diff", ".3g"), ("max rel diff", "max_rel_diff", ".3g"),
        ("cosine", "cosine_similarity", ".6f"), ("top-1", "top1_agreement", ".3f"))]
    errors = [f"{label} {value}" for label, value in errors if value]
    if errors:
        parts[-1] += f" ({', '.join(errors)})"
    conversion = [f"converted in {row.conversion_s:.3g} s" if row.conversion_s is not None else "",
                  matrix.size_text(row.size_bytes)]
    if any(conversion):
        parts.append(", ".join(part for part in conversion if part))
    return "; ".join(part for part in parts if part)


def _speed_cells(size: int, speed: matrix.Speed) -> list[str]:
    return [f"bs{size}", f"{speed.p50_ms:.3g}{'' if speed.stable else '*'}",
            f"{speed.mean_ms:.3g}" if speed.mean_ms is not None else "", f"{speed.throughput:,.0f}"]


def _legend(built: matrix.Matrix) -> list[str]:
    """What the speed figures are, and the footnote of an unstable one where a figure has its star."""
    if not built.batch_sizes:
        return []
    legend = ["p50: the median latency of one call at that batch size; mean: the average latency; samples/s: "
              "the batch size over the mean latency"]
    return legend + (["* unstable: the window means never settled within 10 %"] if built.unstable() else [])

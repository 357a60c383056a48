"""The format matrix: each target's runtimes and devices beside the SavedModel's own, what converting cost,
how close the outputs came to TensorFlow's and how fast they ran; and the format to serve.

The recommendation is the passing target that beats TensorFlow by the most on the same device. Runtimes are
compared at the largest batch size both measured (p50 latency), since serving throughput is what a format is
chosen for and the sweep stops where larger batches stop paying; a target with no batch size in common with
TensorFlow on its device cannot be ranked and is left out, as is one on a device TensorFlow did not run on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from modelgate.report import BenchmarkResult, OutputComparison, TargetSection, ValidationReport
from modelgate.runtimes import SAVEDMODEL, reference_runtimes

REFERENCE = SAVEDMODEL
# Worst over a target's outputs: the largest error, the smallest agreement.
ERROR_FIGURES = (("max_abs_diff", max), ("max_rel_diff", max), ("cosine_similarity", min), ("top1_agreement", min))


# A throughput is the batch size over the mean latency; where slow calls put the mean this far above the p50,
# a cell beside the p50 says the mean too, so the two figures side by side do not seem to disagree.
MEAN_SHOWN_ABOVE_P50 = 1.25


class Speed(BaseModel):
    p50_ms: float
    throughput: float = Field(description="Samples per second: the batch size over the mean latency.")
    stable: bool
    mean_ms: float | None = None

    def mean_apart(self) -> bool:
        """The mean latency (the throughput's) is far enough above the p50 to be said beside it."""
        return self.mean_ms is not None and self.mean_ms > MEAN_SHOWN_ABOVE_P50 * self.p50_ms


class MatrixRow(BaseModel):
    """One target on one runtime and device; the SavedModel's own runtimes are the reference rows."""

    target: str = Field(description=f"'{REFERENCE}' for the reference rows.")
    runtime: str | None = Field(default=None, description="None: a target none of whose runtimes ran (failed conversion).")
    device: str | None = None
    requirement: Literal["required", "optional"] | None = None
    status: str = Field(description="The target's status; 'reference' for the SavedModel's rows.")
    variant: str | None = Field(default=None, description="The remediation variant that stands as the target, if one "
                                "does: '3 ops kept in float32'.")
    conversion_s: float | None = None
    size_bytes: int | None = None
    parity: bool | None = Field(default=None, description="Every output passed; None: not compared here.")
    note: str = Field(default="", description="Why this runtime and device were not compared, if they were not.")
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    cosine_similarity: float | None = None
    top1_agreement: float | None = None
    speeds: dict[int, Speed] = Field(default={}, description="By batch size.")

    @property
    def is_reference(self) -> bool:
        return self.target == REFERENCE

    @property
    def placement(self) -> str:
        return f"{self.runtime}/{self.device}" if self.runtime else "–"

    @property
    def label(self) -> str:
        """The target as people read it: with the variant that stands as it, if one does."""
        return f"{self.target} ({self.variant})" if self.variant else self.target


class Recommendation(BaseModel):
    target: str
    variant: str | None = None
    runtime: str
    device: str
    batch_size: int
    p50_ms: float
    reference_runtime: str
    reference_p50_ms: float
    speedup: float = Field(description="TensorFlow's p50 over this target's, at batch_size on device.")

    def text(self) -> str:
        verdict = f"{self.speedup:.2f}× {'faster than' if self.speedup >= 1 else 'the speed of'}"
        served = f"{self.target} ({self.variant})" if self.variant else self.target
        return (f"serve {served} on {self.runtime}/{self.device}: {verdict} {self.reference_runtime} "
                f"(p50 {self.p50_ms:.4g} ms against {self.reference_p50_ms:.4g} ms at batch size {self.batch_size}, "
                "the largest both measured)")


class Matrix(BaseModel):
    rows: list[MatrixRow]
    recommendation: Recommendation | None
    reason: str = Field(default="", description="Why nothing is recommended, when nothing is.")

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({size for row in self.rows for size in row.speeds})

    def recommendation_line(self) -> str:
        return self.recommendation.text() if self.recommendation else f"no format recommended: {self.reason}"

    def tags(self) -> dict[str, str]:
        """Without the modelgate. prefix; the run and the registry version carry the same."""
        if self.recommendation is None:
            return {"recommended_format": "none", "recommendation": self.recommendation_line()}
        return {"recommended_format": self.recommendation.target,
                "recommended_speedup": f"{self.recommendation.speedup:.3g}",
                "recommendation": self.recommendation_line()}

    def unstable(self) -> bool:
        return any(not speed.stable for row in self.rows for speed in row.speeds.values())

    def legend(self) -> list[str]:
        """What the table's speed cells mean, and its footnotes: each said only where a cell needs it."""
        if not self.batch_sizes:
            return []
        lines = ["p50: the median latency of one call at that batch size; samples/s: the batch size over the mean "
                 "latency" + (f" (the mean is said beside the p50 where slow calls put it over "
                              f"{MEAN_SHOWN_ABOVE_P50:g}× the p50)"
                              if any(s.mean_apart() for row in self.rows for s in row.speeds.values()) else "")]
        if self.unstable():
            lines.append("* unstable: the window means never settled within 10 %")
        return lines

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Headers and text cells, as the console, report.html and the registry description lay them out."""
        headers = ["target", "runtime/device", "status", "convert s", "size", "parity", "max abs", "max rel",
                   "cosine", "top-1", *(f"bs{size} p50 ms · samples/s" for size in self.batch_sizes)]
        return headers, [[
            row.label, row.placement, row.status, number(row.conversion_s, ".3g"), size_text(row.size_bytes),
            parity_text(row), number(row.max_abs_diff, ".3g"), number(row.max_rel_diff, ".3g"),
            number(row.cosine_similarity, ".6f"), number(row.top1_agreement, ".3f"),
            *(speed_text(row.speeds.get(size)) for size in self.batch_sizes),
        ] for row in self.rows]

    def columns(self) -> dict[str, list]:
        """The rows as columns of plain values, one column per figure and batch size (MLflow's log_table)."""
        plain = [{key: value for key, value in row.model_dump().items() if key != "speeds"} for row in self.rows]
        columns = {key: [record[key] for record in plain] for key in MatrixRow.model_fields if key != "speeds"}
        for size in self.batch_sizes:
            for figure in ("p50_ms", "throughput"):
                columns[f"{figure}.bs{size}"] = [
                    getattr(row.speeds[size], figure) if size in row.speeds else None for row in self.rows
                ]
        return columns


def number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def size_text(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def parity_text(row: MatrixRow) -> str:
    if row.is_reference:
        return "reference"
    if row.parity is None:
        return f"not compared: {row.note}" if row.note else ""
    return "passed" if row.parity else "failed"


def speed_text(speed: Speed | None) -> str:
    """p50 ms · samples/s, with the mean the throughput comes from where it is far from the p50."""
    if speed is None:
        return ""
    mean = f" (mean {speed.mean_ms:.3g} ms)" if speed.mean_apart() else ""
    return f"{speed.p50_ms:.3g}{'' if speed.stable else '*'} · {speed.throughput:,.0f}{mean}"


def worst_figures(outputs: dict[str, OutputComparison]) -> dict[str, float | None]:
    """Each error figure at its worst over the outputs (the figures of different outputs may come from
    different outputs: the one furthest off by each measure)."""
    worst = {}
    for figure, pick in ERROR_FIGURES:
        values = [getattr(o, figure) for o in outputs.values() if getattr(o, figure) is not None]
        worst[figure] = pick(values) if values else None
    return worst


def _speeds(benchmarks: list[BenchmarkResult], target: str, runtime: str, device: str) -> dict[int, Speed]:
    return {
        b.batch_size: Speed(p50_ms=b.p50_ms, throughput=b.throughput, stable=b.stable, mean_ms=b.mean_ms)
        for b in benchmarks if (b.target, b.runtime, b.device) == (target, runtime, device)
    }


def _placements(section: TargetSection, benchmarks: list[BenchmarkResult]) -> list[tuple[str, str]]:
    """Compared first, then not compared, then benchmarked only: every runtime/device the target touched."""
    keys = [*section.comparisons, *section.not_compared]
    keys += [f"{b.runtime}/{b.device}" for b in benchmarks if b.target == section.name]
    return [tuple(key.split("/", 1)) for key in dict.fromkeys(keys)]


def _target_rows(section: TargetSection, benchmarks: list[BenchmarkResult]) -> list[MatrixRow]:
    conversion = section.conversion
    remediation = section.remediation
    common = {
        "target": section.name, "requirement": section.requirement, "status": section.status,
        "variant": remediation.chosen if remediation and remediation.applied else None,
        "conversion_s": conversion.duration_s if conversion else None,
        "size_bytes": conversion.size_bytes if conversion else None,
    }
    placements = _placements(section, benchmarks)
    if not placements:
        return [MatrixRow(**common, note=section.message)]
    rows = []
    for runtime, device in placements:
        comparison = section.comparisons.get(f"{runtime}/{device}")
        figures = worst_figures(comparison.outputs) if comparison else {}
        rows.append(MatrixRow(
            **common, runtime=runtime, device=device, **figures,
            parity=None if comparison is None else not comparison.failing(),
            note=section.not_compared.get(f"{runtime}/{device}", ""),
            speeds=_speeds(benchmarks, section.name, runtime, device),
        ))
    return rows


def tensorflow_runtimes() -> set[str]:
    """The runtimes that are TensorFlow itself (a TF2 signature, or a TF1 graph's session), as the runtime
    registry declares them: its reference runtimes; the Keras wrapper wraps them."""
    return {runtime.name for runtime in reference_runtimes()}


def _reference_rows(benchmarks: list[BenchmarkResult]) -> list[MatrixRow]:
    placements = dict.fromkeys((b.runtime, b.device) for b in benchmarks if b.target == REFERENCE)
    # TensorFlow's own rows lead: they are what every other row is measured against.
    tensorflow = tensorflow_runtimes()
    ordered = sorted(placements, key=lambda placement: placement[0] not in tensorflow)
    return [
        MatrixRow(target=REFERENCE, runtime=runtime, device=device, status="reference",
                  speeds=_speeds(benchmarks, REFERENCE, runtime, device))
        for runtime, device in ordered
    ]


def _ranked(row: MatrixRow, references: list[MatrixRow]) -> Recommendation | None:
    tensorflow = tensorflow_runtimes()
    reference = next((r for r in references if r.device == row.device and r.runtime in tensorflow), None)
    common = sorted(set(row.speeds) & set(reference.speeds)) if reference else []
    if not common:
        return None
    size = common[-1]
    p50, reference_p50 = row.speeds[size].p50_ms, reference.speeds[size].p50_ms
    return Recommendation(
        target=row.target, variant=row.variant, runtime=row.runtime, device=row.device, batch_size=size, p50_ms=p50,
        reference_runtime=reference.runtime, reference_p50_ms=reference_p50, speedup=reference_p50 / p50,
    )


def _recommend(rows: list[MatrixRow]) -> tuple[Recommendation | None, str]:
    references = [row for row in rows if row.is_reference]
    converted = [row for row in rows if not row.is_reference]
    if not converted:
        return None, "no conversion target was asked"
    passing = [row for row in converted if row.status == "passed" and row.parity]
    if not passing:
        return None, "no target passed its comparison with TensorFlow"
    measured = [row for row in passing if row.speeds]
    if not measured:
        return None, f"no passing target ({', '.join(dict.fromkeys(r.target for r in passing))}) was benchmarked"
    ranked = [found for found in (_ranked(row, references) for row in measured) if found]
    if not ranked:
        return None, "no passing target was benchmarked at a batch size TensorFlow measured on the same device"
    return max(ranked, key=lambda found: found.speedup), ""


def build(report: ValidationReport) -> Matrix:
    rows = _reference_rows(report.benchmarks)
    for section in report.targets.values():
        rows += _target_rows(section, report.benchmarks)
    recommendation, reason = _recommend(rows)
    return Matrix(rows=rows, recommendation=recommendation, reason=reason)


def plot_points(matrix: Matrix) -> tuple[int | None, dict[str, tuple[float, float, bool]], dict[str, float]]:
    """What the latency-against-error plot draws, at the smallest batch size TensorFlow measured (the latency
    a single request sees): per compared row its error as 1 - worst cosine similarity (max_rel_diff would rank
    a float16 model by its outputs nearest zero), its p50 and its parity; and TensorFlow's p50 per device as the
    zero-error reference. Rows not measured at that batch size, or without a cosine (non-finite outputs), are
    left out; the table has them."""
    tensorflow = [row for row in matrix.rows if row.is_reference and row.runtime in tensorflow_runtimes()]
    sizes = sorted({size for row in tensorflow for size in row.speeds})
    if not sizes:
        return None, {}, {}
    size = sizes[0]
    references = {row.placement: row.speeds[size].p50_ms for row in tensorflow if size in row.speeds}
    points = {
        # Rounding can put a cosine a hair above 1; that is no error.
        f"{row.label} {row.placement}": (max(0.0, 1 - row.cosine_similarity), row.speeds[size].p50_ms, bool(row.parity))
        for row in matrix.rows
        if not row.is_reference and row.cosine_similarity is not None and size in row.speeds
    }
    return size, points, references

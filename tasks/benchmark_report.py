import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.numerics.benchmark_plan import load_samples
from modelgate.report import ValidationReport
from modelgate.reporting.plots import latency_distribution, throughput_by_batch
from modelgate.stages import Artifacts

TABLE_COLUMNS = ["runtime", "device", "batch_size", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms",
                 "min_ms", "max_ms", "throughput", "iterations", "stable", "intra_op_threads", "inter_op_threads"]


SIGNIFICANT_DIGITS = 4


def _rounded(value):
    """A figure as people read it (0.2184, not 0.21836020000000012; 18763, not 1.876e+04); counts and flags as
    they are."""
    if not isinstance(value, float):
        return value
    return round(value) if abs(value) >= 10**SIGNIFICANT_DIGITS else float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _table_rows(report: ValidationReport) -> list[dict]:
    return [{column: _rounded(values[column]) for column in TABLE_COLUMNS}
            for values in (bench.model_dump() for bench in report.benchmarks)]


def _markdown_table(report: ValidationReport) -> str:
    rows = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for bench in report.benchmarks:
        values = bench.model_dump()
        rows.append("| " + " | ".join(
            f"{values[c]:.4g}" if isinstance(values[c], float) else str(values[c]) for c in TABLE_COLUMNS
        ) + " |")
    return "\n".join(rows)


def _embedded(png: Path) -> str:
    return f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"


@task(name="benchmark-report", cache_policy=NO_CACHE)
def benchmark_report(report: ValidationReport, workdir: str) -> Artifacts:
    """Plots and a table of every figure measured, as files for MLflow and as Prefect artifacts."""
    if not report.benchmarks:
        return Artifacts(artifacts={})
    workdir_path = Path(workdir)
    latency_png = latency_distribution(load_samples(workdir), workdir_path / "latency.png")
    points: dict[str, list[tuple[int, float]]] = {}
    for bench in report.benchmarks:
        points.setdefault(f"{bench.runtime}/{bench.device}", []).append((bench.batch_size, bench.throughput))
    throughput_png = throughput_by_batch(points, workdir_path / "throughput.png")
    table = _markdown_table(report)
    environment = ", ".join(f"{k} {v}" for k, v in report.environment.items())
    table_md = workdir_path / "benchmarks.md"
    table_md.write_text(f"# Benchmarks of {report.source}\n\n{table}\n\nEnvironment: {environment}\n")
    create_table_artifact(
        key="benchmark-figures", table=_table_rows(report),
        description="Latency (ms) and throughput (samples/s) by runtime, device and batch size; the machine is in "
        "report.html.",
    )
    create_markdown_artifact(
        key="benchmark-report",
        markdown=f"## Benchmarks\n\n{table}\n\n{_embedded(latency_png)}\n\n{_embedded(throughput_png)}\n",
        description="Benchmark table and plots (also in the MLflow run)",
    )
    return Artifacts(
        artifacts={"latency.png": str(latency_png), "throughput.png": str(throughput_png),
                   "benchmarks.md": str(table_md)}
    )

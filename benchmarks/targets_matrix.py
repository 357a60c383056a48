"""The format matrix of a whole validation with every target, on MobileNetV2 (224x224, untrained weights) and
the tests' small CNN: what `modelgate validate MODEL --targets all` gives, kept with the machine it ran on.

    uv run python -m benchmarks.targets_matrix [--out DIR]

Writes targets-matrix.json and targets-matrix.md (the matrix and the recommendation per model).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from benchmarks.models import mobilenet_v2
from flows.validate import validate
from modelgate.reporting import matrix
from modelgate.request import ValidationRequest


def cnn(directory: Path) -> Path:
    from tests.models import keras_cnn

    return keras_cnn(directory)


MODELS = {"small CNN (tests.models.keras_cnn)": cnn, "MobileNetV2 224x224": mobilenet_v2}


def run(out: Path) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, build in MODELS.items():
            folder = Path(scratch) / build.__name__
            request = ValidationRequest(
                source=str(build(folder / "model")), targets=["all"], baseline=None,
                benchmark_batch_sizes=[1, 8], report_path=str(folder / "report.json"),
                output_dir=str(folder / "out"), tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            )
            load_before = os.getloadavg()[0]
            report = validate(request)
            built = matrix.build(report)
            headers, rows = built.table()
            results[label] = {
                "status": report.status, "verdict": report.verdict_line(), "headers": headers, "rows": rows,
                "recommendation": built.recommendation_line(), "environment": report.environment,
                "stage_seconds": {stage.name: stage.duration_s for stage in report.stages},
                # Other work on the machine skews the latencies: the load is kept beside them.
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets-matrix.json").write_text(json.dumps(results, indent=2))
    (out / "targets-matrix.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    lines = ["# Format matrix, every target (written by benchmarks/targets_matrix.py)", ""]
    for label, result in results.items():
        before, after = result["load_average_1min"]
        lines += [f"## {label}: {result['status']}", "", f"Recommendation: {result['recommendation']}", "",
                  f"Load average (1 min) before and after: {before:g}, {after:g} on {os.cpu_count()} cores.", ""]
        lines += ["| " + " | ".join(result["headers"]) + " |", "|" + "---|" * len(result["headers"])]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in result["rows"]]
        lines += ["", "Stage seconds: " + ", ".join(f"{k} {v:g}" for k, v in result["stage_seconds"].items()), ""]
    environment = next(iter(results.values()))["environment"]
    lines += ["Environment: " + ", ".join(f"{key} {value}" for key, value in sorted(environment.items())), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    results = run(parser.parse_args().out)
    for label, result in results.items():
        print(f"{label}: {result['status']}; {result['recommendation']}")


if __name__ == "__main__":
    main()

"""A cold `modelgate validate` of a tiny Keras model against one cold `import tensorflow`, with where the time went.

Each command runs in a fresh interpreter, as a user's shell would start it, alternating which goes first. The
breakdown comes from the CLI's own lines, time-stamped as they arrive: the Prefect server line, each stage's
line (with the stage's own duration), the verdict, and the process's exit. The imports are timed apart, in a
fresh interpreter importing what the CLI imports before it starts Prefect.

    uv run python -m benchmarks.cold_cli [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_LINE = re.compile(r"^\[(\w+)\] (\S+) ([\d.]+)s(?:\s.*)?$")  # a stage that did not pass says why after it
CLI_IMPORTS = "import modelgate.service.cli, modelgate.reporting.console, flows.validate"


def _cold_seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def _timed_lines(command: list[str], cwd: Path) -> tuple[list[tuple[float, str]], float, int]:
    """The command's output lines, each with the seconds since it started; its wall time and exit code."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = [(time.perf_counter() - started, line.rstrip()) for line in process.stdout]
    code = process.wait()
    return lines, time.perf_counter() - started, code


def breakdown(lines: list[tuple[float, str]], wall_s: float, imports_s: float) -> dict:
    """Seconds per phase of one cold validation, from its time-stamped lines."""
    stages = [(at, match.group(2), float(match.group(3)))
              for at, line in lines if (match := STAGE_LINE.match(line))]
    server_up = next(at for at, line in lines if line.startswith("flow runs on"))
    first_at, _, first_s = stages[0]
    last_at = stages[-1][0]
    verdict_at = next(at for at, line in lines if line.startswith("verdict:"))
    phases = {
        "imports": imports_s,
        # The server starts before the imports and overlaps them: this is the wait left after them.
        "prefect_server_wait": server_up - imports_s,
        "flow_run_start": first_at - first_s - server_up,
        **{f"stage:{name}": seconds for _, name, seconds in stages},
        "between_stages": (last_at - first_at + first_s) - sum(seconds for *_, seconds in stages),
        "verdict_output": verdict_at - last_at,
        "shutdown": wall_s - verdict_at,
    }
    return {name: round(seconds, 3) for name, seconds in phases.items()}


def measure(repeats: int, scratch: Path) -> dict:
    from benchmarks import models

    model_dir = models.tiny_keras(scratch / "tiny")
    import_tf, cli_runs = [], []
    for repeat in range(repeats):
        folder = scratch / f"cold-{repeat}"
        folder.mkdir()
        command = [sys.executable, "-m", "modelgate.service.cli", "validate", str(model_dir), "--report", "report.json"]

        def run_cli(folder: Path = folder, command: list[str] = command) -> None:
            lines, wall_s, code = _timed_lines(command, folder)
            report = json.loads((folder / "report.json").read_text())
            # A run that did not pass says which stage stopped it, so a figure from it is never read as a result.
            stopped = [f"{stage['name']}: {stage['message']}" for stage in report["stages"]
                       if stage["status"] not in ("ok", "skipped")]
            cli_runs.append({"wall_s": wall_s, "exit_code": code, "status": report["status"], "stopped": stopped,
                             "lines": lines})

        def run_import() -> None:
            import_tf.append(_cold_seconds("import tensorflow"))

        for run in (run_cli, run_import) if repeat % 2 == 0 else (run_import, run_cli):
            run()
    imports_s = statistics.median(_cold_seconds(CLI_IMPORTS) for _ in range(repeats))
    median_run = sorted(cli_runs, key=lambda run: run["wall_s"])[len(cli_runs) // 2]
    cli_s, import_s = median_run["wall_s"], statistics.median(import_tf)
    return {
        "model": "tiny Keras Dense (model.export)", "repeats": repeats,
        "cli_s": cli_s, "import_tensorflow_s": import_s, "ratio": cli_s / import_s,
        "statuses": [run["status"] for run in cli_runs],
        "stopped_by": [stage for run in cli_runs for stage in run["stopped"]],
        "breakdown_s": breakdown(median_run["lines"], cli_s, imports_s),
        "target": "at most 2.5x one import tensorflow",
        "passed": all(run["status"] == "passed" for run in cli_runs) and cli_s / import_s <= 2.5,
    }


def markdown(result: dict) -> list[str]:
    lines = ["", "## Cold CLI validation against one import of TensorFlow", "",
             f"`modelgate validate` of a {result['model']} with the default settings, each in a fresh interpreter "
             f"and a fresh folder (a new MLflow store), against a fresh `python -c 'import tensorflow'`; medians over "
             f"{result['repeats']} runs alternating which goes first.", "",
             "| CLI s | import tensorflow s | ratio | target | passed |", "|---|---|---|---|---|",
             f"| {result['cli_s']:.1f} | {result['import_tensorflow_s']:.1f} | {result['ratio']:.2f} | "
             f"{result['target']} | {result['passed']} |", "",
             "Where the median run's time went (imports timed apart in a fresh interpreter):", "",
             "| phase | s |", "|---|---|"]
    lines += [f"| {phase} | {seconds:.2f} |" for phase, seconds in result["breakdown_s"].items()]
    if result.get("stopped_by"):  # results written before it was recorded have none
        lines += ["", f"Not every run passed, so these seconds are no figure of a validation: {'; '.join(result['stopped_by'])}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelgate-cold-") as scratch:
        result = measure(args.repeats, Path(scratch))
    print("\n".join(markdown(result)))
    return 0 if result["passed"] else 3


if __name__ == "__main__":
    sys.exit(main())

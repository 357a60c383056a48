"""The security table: modelgate's op scan beside `saved_model_cli scan` (TensorFlow's own) and ProtectAI's
ModelScan, each on the same unsafe models the tests build (tests/unsafe_models.py) and on real architectures,
which must pass (tests/benign_models.py, and two formats of tests/models.py). Also the op scan's speed.

    uv run python -m benchmarks.security [--out DIR] [--modelscan-venv DIR]

Writes security-results.json and security-results.md to benchmarks/ (or --out DIR). ModelScan runs from a
virtual environment of its own (created at --modelscan-venv with modelscan[tensorflow]==0.8.8, which needs
the package index), or its column says why it did not run.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelgate.errors import MissingOps, UnsafeModel
from modelgate.model.op_scan import refuse_unsafe_ops, scan_meta_graph
from modelgate.model.savedmodel import (
    choose_meta_graph,
    inspect_saved_model,
    read_saved_model_proto,
)
from modelgate.reporting.environment import gather_environment

MODELSCAN = "modelscan[tensorflow]==0.8.8"
SCAN_REPEATS = 30
CLI_WORKERS = 2
TOOLS = ("modelgate", "saved_model_cli scan", "ModelScan 0.8.8")


def build_models(root: Path) -> dict[str, dict]:
    from benchmarks.models import mobilenet_v2
    from tests import models
    from tests.benign_models import BENIGN_ARCHITECTURES
    from tests.unsafe_models import UNSAFE_MODELS

    built = {}
    for name, attack in UNSAFE_MODELS.items():
        built[name] = {"kind": "unsafe", "does": attack.does, "path": attack.build(root / name)}
    benign = {**BENIGN_ARCHITECTURES, "tf1_graph": models.tf1_graph, "keras2_save": models.keras2_save,
              "mobilenet_v2_224": mobilenet_v2}
    described = {"mobilenet_v2_224": "keras.applications.MobileNetV2 at 224x224, weights=None (the speed figure's)"}
    for name, build in benign.items():
        does = described.get(name) or _first_clause(build.__doc__ or "")
        built[name] = {"kind": "benign", "does": does, "path": build(root / name)}
    return built


def _first_clause(docstring: str) -> str:
    return re.split(r"\.\s|:\s", " ".join(docstring.split()) + " ")[0].rstrip(".")


def modelgate_verdict(model_dir: Path) -> dict:
    """What the scan-ops stage decides, with the default request (no --allow-op, no op library)."""
    meta_graph = choose_meta_graph(inspect_saved_model(model_dir), None)
    try:
        refuse_unsafe_ops(meta_graph.op_scan, [])
    except UnsafeModel as refusal:
        ops = sorted({finding.op for finding in meta_graph.op_scan.refused})
        return {"verdict": "refused", "ops": ops, "detail": str(refusal)}
    except MissingOps as missing:
        return {"verdict": "cannot judge", "ops": [], "detail": str(missing)}
    return {"verdict": "passed", "ops": [], "detail": ""}


def scan_timing(model_dir: Path) -> dict:
    """Milliseconds to read saved_model.pb and to scan its first MetaGraph: medians of SCAN_REPEATS runs."""
    parse, scan = [], []
    for _ in range(SCAN_REPEATS):
        started = time.perf_counter()
        meta_graph = read_saved_model_proto(model_dir).meta_graphs[0]
        parsed = time.perf_counter()
        scan_meta_graph(meta_graph, model_dir)
        parse.append(1000 * (parsed - started))
        scan.append(1000 * (time.perf_counter() - parsed))
    return {"parse_ms": statistics.median(parse), "scan_ms": statistics.median(scan), "repeats": SCAN_REPEATS,
            "load_average_1min": os.getloadavg()[0]}


def saved_model_cli_verdict(model_dir: Path) -> dict:
    """TensorFlow's own `saved_model_cli scan`, as a user runs it (every MetaGraph, its default denylist)."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run([str(cli), "scan", "--dir", str(model_dir)], capture_output=True, text=True, timeout=600,
                            check=False)
    lines = result.stdout.splitlines()
    flagged = [line.split("denylisted ops: ", 1)[1] for line in lines if "contains the following denylisted ops" in line]
    if result.returncode or not any("denylisted ops" in line for line in lines):
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"verdict": "error", "ops": [], "detail": f"exit {result.returncode}: {reason}"}
    if flagged:
        ops = sorted({op.strip(" {}'") for found in flagged for op in found.split(",")})
        return {"verdict": "refused", "ops": ops, "detail": "; ".join(flagged)}
    return {"verdict": "passed", "ops": [], "detail": lines[0]}


def modelscan_executable(venv: Path) -> tuple[Path | None, str]:
    """ModelScan in an environment of its own: reused when it is there, else created (it pulls TensorFlow)."""
    executable = venv / "bin" / "modelscan"
    if not executable.is_file():
        steps = [[sys.executable, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", MODELSCAN]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return None, f"could not install {MODELSCAN} in {venv}: {reason}"
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False).stdout
    if "0.8.8" not in version:
        return None, f"{executable} is not ModelScan 0.8.8 ({version.strip() or 'no version'})"
    return executable, ""


def modelscan_verdicts(executable: Path, root: Path, names: list[str]) -> dict[str, dict]:
    """One ModelScan run over the folder of all models; its issues and errors name the file they come from."""
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "modelscan.json"
        subprocess.run([str(executable), "-p", str(root), "-r", "json", "-o", str(report_path)],
                       capture_output=True, text=True, timeout=1800, check=False)
        report = json.loads(report_path.read_text())
    def of_model(entries: list[dict], name: str) -> list[dict]:
        return [entry for entry in entries if Path(entry.get("source", "")).parts[:1] == (name,)]

    verdicts = {}
    for name in names:
        issues, errors = of_model(report.get("issues", []), name), of_model(report.get("errors", []), name)
        if issues:
            ops = sorted({issue["operator"] for issue in issues})
            verdicts[name] = {"verdict": "refused", "ops": ops, "detail": "; ".join(i["description"] for i in issues)}
        elif errors:
            verdicts[name] = {"verdict": "error", "ops": [], "detail": errors[0].get("description", "")}
        else:
            verdicts[name] = {"verdict": "passed", "ops": [], "detail": ""}
    return verdicts


def run(out: Path, modelscan_venv: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="modelgate-security-") as scratch:
        root = Path(scratch) / "models"
        models = build_models(root)
        names = list(models)
        verdicts = {name: {"modelgate": modelgate_verdict(models[name]["path"])} for name in names}
        with ThreadPoolExecutor(CLI_WORKERS) as pool:
            for name, verdict in zip(names, pool.map(saved_model_cli_verdict, [models[n]["path"] for n in names])):
                verdicts[name]["saved_model_cli scan"] = verdict
        executable, modelscan_skipped = modelscan_executable(modelscan_venv)
        if executable is not None:
            for name, verdict in modelscan_verdicts(executable, root, names).items():
                verdicts[name]["ModelScan 0.8.8"] = verdict
        timing = {name: scan_timing(models[name]["path"]) for name in ("mobilenet_v2_224", "bert_backbone")}
    rows = [{"model": name, "kind": models[name]["kind"], "does": models[name]["does"], **verdicts[name]}
            for name in names]
    results = {
        "rows": rows, "summary": _summary(rows), "scan_timing": timing,
        "modelscan_skipped": modelscan_skipped, "environment": gather_environment(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "security-results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "security-results.md").write_text(markdown(results))
    return results


def _right(row: dict, tool: str) -> bool | None:
    verdict = row.get(tool, {}).get("verdict")
    if verdict is None:
        return None
    return verdict == ("refused" if row["kind"] == "unsafe" else "passed")


def _summary(rows: list[dict]) -> dict:
    summary = {}
    for tool in TOOLS:
        unsafe = [_right(row, tool) for row in rows if row["kind"] == "unsafe"]
        benign = [_right(row, tool) for row in rows if row["kind"] == "benign"]
        if None not in unsafe + benign:
            summary[tool] = {"unsafe_refused": sum(unsafe), "unsafe": len(unsafe),
                             "benign_passed": sum(benign), "benign": len(benign)}
    return summary


def _cell(row: dict, tool: str) -> str:
    if tool not in row:
        return "not run"
    verdict = row[tool]
    mark = "ok" if _right(row, tool) else "WRONG"
    ops = f" ({', '.join(verdict['ops'])})" if verdict["ops"] else ""
    return f"{verdict['verdict']}{ops} [{mark}]"


def markdown(results: dict) -> str:
    lines = [
        "# Security: modelgate's op scan and its peers",
        "",
        ("Written by `python -m benchmarks.security`; every cell measured in that run. An unsafe model is right "
         "when refused, a benign one when passed; `[WRONG]` marks a miss or a false refusal."),
        "",
        "| tool | unsafe models refused | benign models passed |",
        "| --- | --- | --- |",
    ]
    for tool in TOOLS:
        if tool in results["summary"]:
            s = results["summary"][tool]
            lines.append(f"| {tool} | {s['unsafe_refused']} / {s['unsafe']} | {s['benign_passed']} / {s['benign']} |")
        else:
            lines.append(f"| {tool} | not run: {results['modelscan_skipped']} | |")
    lines += ["", f"| model | kind | what it does | {' | '.join(TOOLS)} |", "| --- " * (3 + len(TOOLS)) + "|"]
    for row in results["rows"]:
        cells = " | ".join(_cell(row, tool) for tool in TOOLS)
        lines.append(f"| {row['model']} | {row['kind']} | {row['does'].replace('|', '/')} | {cells} |")
    lines += ["", "Op scan speed (medians of the runs shown; reading saved_model.pb, then scanning its MetaGraph):", "",
              "| model | read ms | scan ms | runs | load average (1 min) |", "| --- | --- | --- | --- | --- |"]
    for name, timing in results["scan_timing"].items():
        lines.append(f"| {name} | {timing['parse_ms']:.1f} | {timing['scan_ms']:.1f} | {timing['repeats']} "
                     f"| {timing['load_average_1min']:.1f} |")
    environment = results["environment"]
    lines += ["", "Environment: " + ", ".join(f"{key} {value}" for key, value in sorted(environment.items())), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.security", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where the results go")
    parser.add_argument("--modelscan-venv", type=Path, default=Path(tempfile.gettempdir()) / "modelgate-modelscan-0.8.8",
                        help="ModelScan's own virtual environment (created when missing)")
    args = parser.parse_args(argv)
    results = run(args.out, args.modelscan_venv)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

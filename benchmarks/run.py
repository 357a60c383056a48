"""modelgate's own performance suite. Every figure is a ratio of two things measured side by side in this run.

    uv run python -m benchmarks.run            # the whole suite (tens of minutes on 2 cores)
    uv run python -m benchmarks.run --quick    # small models only: a smoke run of every measurement
    uv run python -m benchmarks.run --only cold_cli,memory   # rerun these sections into the last results

Writes benchmarks/results.json and benchmarks/results.md (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelgate.execution.quiet import quiet_frameworks
from modelgate.service import prefect_server

quiet_frameworks()
prefect_server.allow_a_slow_start()  # as the CLI does

from benchmarks import cold_cli, models  # noqa: E402 - Prefect and MLflow read their settings at import
from modelgate.execution.sandbox import SPARES_VARIABLE, Limits, run_isolated
from modelgate.numerics.timing import MeasurementPlan, measure
from modelgate.reporting.environment import gather_environment, gpu_present
from modelgate.request import ValidationRequest
from modelgate.runtimes.onnxruntime import OnnxRuntimeRunner
from modelgate.runtimes.tensorflow import TFSignatureRunner
from modelgate.targets.onnx.conversion import ConversionPlan, convert_with_tf2onnx, default_opset

ROOT = Path(__file__).resolve().parent.parent
TARGET_MISSED = 3  # distinct from 1, which an uncaught exception gives
FIDELITY_TOLERANCE = 0.05
OVERHEAD_LIMIT_US = 5.0
WALL_TIME_LIMIT = 1.0
MEMORY_FACTOR = 4.0
# The fast-gate goal: the whole tree at most twice one TensorFlow process plus three times the weights.
TF_PROCESS_FACTOR, TF_WEIGHTS_FACTOR = 2.0, 3.0
ONE_TENSORFLOW_PROCESS = (
    "import resource, tensorflow as tf; tf.constant([1.0]) + 1; "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)
EFFICIENTNET_LIMIT_S = 90.0  # the lean-gate goal: EfficientNetB0 with the default settings on this machine's cores
SECTIONS = ("fidelity", "harness_overhead", "cold_cli", "whole_validation", "memory", "efficientnet")
REPEATS = 7
WALL_TIME_PAIRS = 3
PLAN = MeasurementPlan(warmup=20, window=25, min_windows=3, max_windows=10)
LIMITS = Limits(timeout_s=1800)


def bare_p50_ms(call: Callable[[], object], calls: int, warmup: int) -> float:
    """The simplest loop that could time call(): what the engine's figure must agree with."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        call()
        samples.append(clock() - start)
    return float(np.percentile(samples, 50)) / 1e6


def engine_against_bare(call: Callable[[], object]) -> dict:
    """Pairs of one engine run and one bare run, alternating which goes first, so a shared machine's drift
    hits both alike; the figures are medians over the pairs."""
    engine, bare = [], []
    calls = PLAN.window * PLAN.min_windows
    for repeat in range(REPEATS):
        def run_engine() -> None:
            nonlocal calls
            stats = measure(call, PLAN)
            engine.append(stats.percentile(50))
            calls = len(stats.samples_ms)

        def run_bare() -> None:
            bare.append(bare_p50_ms(call, calls=calls, warmup=PLAN.warmup))

        for run in (run_engine, run_bare) if repeat % 2 == 0 else (run_bare, run_engine):
            run()
    return {"engine_p50_ms": statistics.median(engine), "bare_p50_ms": statistics.median(bare),
            "ratio": statistics.median(e / b for e, b in zip(engine, bare)),
            "overhead_us": statistics.median(e - b for e, b in zip(engine, bare)) * 1000, "pairs": REPEATS}


def signature_choice(model_dir: Path, workdir: Path):
    """The signature the flow would validate, chosen by its own stages (a loadable copy, if any, under workdir)."""
    from modelgate.execution.jobs import inspection_job
    from tasks.select_signature import select_signature

    return select_signature.fn(inspection_job(str(model_dir), str(workdir)), None, None)


def convert(model_dir: Path, workdir: Path) -> str:
    """The product's own conversion (a bounded child, the file checked), so the suite measures what ships."""
    choice = signature_choice(model_dir, workdir)
    plan = ConversionPlan(model_dir=str(model_dir), signature_key=choice.signature.key, tags=choice.tags,
                          opset=default_opset(), output_path=str(workdir / f"{model_dir.name}.onnx"))
    log = workdir / f"{model_dir.name}-tf2onnx.log"
    conversion = run_isolated(convert_with_tf2onnx, plan, choice.signature, str(log), limits=LIMITS, label="convert",
                              log_path=log).value
    if conversion.failure:
        raise RuntimeError(f"converting {model_dir.name} failed: {conversion.failure}")
    return conversion.path


def fidelity(model_dirs: dict[str, Path], workdir: Path) -> list[dict]:
    rows = []
    for name, model_dir in model_dirs.items():
        tf_runner = TFSignatureRunner(model_dir, ["serve"], "serving_default").activate()
        _, specs = tf_runner.signature_fn.structured_input_signature
        feeds = models.random_feeds({k: (1, *s.shape[1:]) for k, s in specs.items()})
        ort_runner = OnnxRuntimeRunner(convert(model_dir, workdir))
        for runtime, runner in (("tensorflow", tf_runner), ("onnxruntime", ort_runner)):
            result = engine_against_bare(lambda: runner(feeds))  # noqa: B023 - called within this iteration
            rows.append({"model": name, "runtime": runtime, **result,
                         "target": f"within {FIDELITY_TOLERANCE:.0%}",
                         "passed": abs(result["ratio"] - 1) <= FIDELITY_TOLERANCE})
    return rows


def harness_overhead(workdir: Path) -> dict:
    runner = OnnxRuntimeRunner(models.identity_onnx(workdir / "identity.onnx"))
    feeds = models.random_feeds({"x": (1, 4)})
    result = engine_against_bare(lambda: runner(feeds))
    return {"model": "onnx Identity", **result, "target": f"below {OVERHEAD_LIMIT_US:g} us per call",
            "passed": result["overhead_us"] < OVERHEAD_LIMIT_US}


def whole_validation(model_dir: Path, workdir: Path, pairs: int) -> dict:
    """The flow with its default settings (Prefect started beforehand and timed apart) against the plain script's
    raw steps with the same settings, in pairs alternating which goes first, each in a fresh folder with a fresh
    MLflow store."""
    from prefect import flow

    from flows.validate import validate

    @flow(name="prefect-start-up")
    def nothing() -> None:
        return None

    started = time.perf_counter()
    nothing()
    prefect_start_s = time.perf_counter() - started

    flow_times, plain_times, statuses = [], [], []
    for repeat in range(pairs):
        folder = workdir / f"whole-{repeat}"
        folder.mkdir()

        def run_flow(folder: Path = folder) -> None:
            request = ValidationRequest(
                source=str(model_dir), report_path=str(folder / "report.json"), output_dir=str(folder / "out"),
                tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            )
            started = time.perf_counter()
            statuses.append(validate(request).status)
            flow_times.append(time.perf_counter() - started)

        def run_plain(folder: Path = folder) -> None:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "benchmarks.plain_validation", str(model_dir), str(folder)],
                           check=True, cwd=ROOT, capture_output=True)
            plain_times.append(time.perf_counter() - started)

        for run in (run_flow, run_plain) if repeat % 2 == 0 else (run_plain, run_flow):
            run()
    ratio = statistics.median(f / p for f, p in zip(flow_times, plain_times))
    return {"model": model_dir.name, "validation_statuses": statuses,
            "flow_s": statistics.median(flow_times), "plain_script_s": statistics.median(plain_times),
            "ratio": ratio, "pairs": pairs, "prefect_start_up_s": prefect_start_s,
            "target": f"at most {WALL_TIME_LIMIT}x",
            "passed": set(statuses) == {"passed"} and ratio <= WALL_TIME_LIMIT}


def peak_memory(model_dir: Path, workdir: Path) -> dict:
    """The whole tree's memory over a validation with the default settings (ONNX included, benchmarks off: they
    time, they do not grow): the flow's process and all its children together. The flow runs in a fresh
    interpreter (benchmarks.tree_memory), as in a CLI run or a worker's flow run: this one has imported
    TensorFlow for the other sections."""
    folder = workdir / f"memory-{model_dir.name}"
    figures = folder / "tree-memory.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.tree_memory", str(model_dir), "--out", str(folder),
                             "--json", str(figures)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.tree_memory {model_dir.name} exited {result.returncode}: {result.stderr[-3000:]}")
    measured = json.loads(figures.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    return measured


def dense_model(directory: Path, weight_bytes: int) -> Path:
    """Built in a child, so that building it leaves nothing behind in the process tree measured next."""
    return run_isolated(models.dense_of_size, directory, weight_bytes, limits=LIMITS, label=f"build {directory.name}").value


def one_tensorflow_process_mb() -> float:
    """Peak resident memory of a process that imports TensorFlow and runs one op."""
    result = subprocess.run([sys.executable, "-c", ONE_TENSORFLOW_PROCESS], check=True, capture_output=True, text=True)
    return int(result.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def memory(sizes_mb: list[int], workdir: Path) -> list[dict]:
    baseline_mb = peak_memory(dense_model(workdir / "dense-tiny", 4096), workdir)["peak_mb"]
    tensorflow_mb = one_tensorflow_process_mb()
    rows = []
    for size_mb in sizes_mb:
        model_dir = dense_model(workdir / f"dense-{size_mb}mb", size_mb * 2**20)
        variables_mb = models.variables_bytes(model_dir) / 2**20
        tree = peak_memory(model_dir, workdir)
        peak_mb, per_stage = tree["peak_mb"], {stage: figures["peak"] for stage, figures in tree["per_stage_mb"].items()}
        top = max(per_stage, key=per_stage.get)
        rows.append({"variables_mb": variables_mb, "peak_rss_mb": peak_mb, "baseline_mb": baseline_mb,
                     "ratio": (peak_mb - baseline_mb) / variables_mb, "peak_stage": top,
                     "per_stage_mb": per_stage,
                     "alive_at_peak_mb": tree["per_stage_mb"][top]["alive"],
                     "target": f"whole-tree peak at most baseline + {MEMORY_FACTOR:g}x variables",
                     "passed": peak_mb <= baseline_mb + MEMORY_FACTOR * variables_mb,
                     "one_tensorflow_process_mb": tensorflow_mb,
                     "tensorflow_ratio": (peak_mb - TF_WEIGHTS_FACTOR * variables_mb) / tensorflow_mb,
                     "tensorflow_target": f"whole-tree peak at most {TF_PROCESS_FACTOR:g}x one TensorFlow process + "
                                          f"{TF_WEIGHTS_FACTOR:g}x variables",
                     "tensorflow_passed": peak_mb <= TF_PROCESS_FACTOR * tensorflow_mb + TF_WEIGHTS_FACTOR * variables_mb})
        shutil.rmtree(model_dir)
    return rows


def efficientnet(workdir: Path) -> dict:
    """A cold `modelgate validate` of EfficientNetB0 with the default settings (model.export of
    keras.applications.EfficientNetB0(weights=None), built in a child) in a fresh folder: its wall time, where it
    went (the report's stages) and what the benchmark budget left unmeasured."""
    model_dir = run_isolated(models.efficientnet_b0, workdir / "efficientnet_b0", limits=LIMITS,
                             label="build EfficientNetB0").value
    folder = workdir / "efficientnet-run"
    folder.mkdir()
    command = [sys.executable, "-m", "modelgate.service.cli", "validate", str(model_dir), "--report", "report.json"]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    report = json.loads((folder / "report.json").read_text())
    shutil.rmtree(model_dir, ignore_errors=True)
    stages = {stage["name"]: round(stage["duration_s"], 2) for stage in report["stages"]}
    return {
        "model": "EfficientNetB0 (weights=None, model.export)", "wall_s": wall_s, "exit_code": completed.returncode,
        "status": report["status"], "stages_s": stages,
        "benchmarks_measured": len(report["benchmarks"]),
        "benchmarks_cut_by_budget": sum(bool(row.get("cut_by_budget")) for row in report["benchmarks"]),
        "benchmarks_unmeasured": [f"{row['target']} {row['runtime']}/{row['device']} bs{row['batch_size']}: "
                                  f"{row['reason']}" for row in report.get("benchmarks_unmeasured", [])],
        "target": f"at most {EFFICIENTNET_LIMIT_S:g} s", "passed": wall_s <= EFFICIENTNET_LIMIT_S and
        report["status"] != "error",
    }


def efficientnet_markdown(result: dict) -> list[str]:
    lines = ["", "## EfficientNetB0 with the default settings", "",
             f"A cold `modelgate validate` of {result['model']} in a fresh folder (a new MLflow store), as a user "
             "runs it; only in the full suite.", "",
             "| wall s | verdict | benchmarks measured | cut by the budget | left unmeasured | target | passed |",
             "|---|---|---|---|---|---|---|",
             f"| {result['wall_s']:.1f} | {result['status']} | {result['benchmarks_measured']} | "
             f"{result['benchmarks_cut_by_budget']} | {len(result['benchmarks_unmeasured'])} | {result['target']} | "
             f"{result['passed']} |", "", "Its stages of a second or more, s:", "", "| stage | s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in result["stages_s"].items() if seconds >= 1]
    lines += [f"- unmeasured: {row}" for row in result["benchmarks_unmeasured"]]
    return lines


def gpu_section() -> dict:
    if not gpu_present():
        return {"status": "skipped", "reason": "no NVIDIA GPU on this machine (nvidia-smi lists none)"}
    return {"status": "skipped", "reason": "GPU figures come from the validation flow's benchmark stages on a "
                                           "GPU machine (benchmark_gpu_* checks); this suite measures the CPU"}


def markdown(results: dict) -> str:
    rerun = "".join(f" The {section} section was rerun alone at {results[f'{section}_run_at']}"
                    + (f" on {results[f'{section}_environment']['cpu']}" if f"{section}_environment" in results else "")
                    + "." for section in SECTIONS if f"{section}_run_at" in results)
    lines = ["# modelgate performance suite", "", f"Run at {results['started_at']}; "
             f"quick: {results['quick']}.{rerun}", "", "## Fidelity: engine p50 against a bare perf_counter_ns loop", "",
             f"Medians over {REPEATS} pairs of runs, alternating which goes first.", "",
             "| model | runtime | engine p50 ms | bare p50 ms | ratio | target | passed |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['runtime']} | {r['engine_p50_ms']:.4f} | {r['bare_p50_ms']:.4f} | "
              f"{r['ratio']:.3f} | {r['target']} | {r['passed']} |" for r in results["fidelity"]]
    h = results["harness_overhead"]
    lines += ["", "## Harness overhead", "", "| model | engine p50 ms | bare p50 ms | overhead us | target | passed |",
              "|---|---|---|---|---|---|",
              f"| {h['model']} | {h['engine_p50_ms']:.5f} | {h['bare_p50_ms']:.5f} | {h['overhead_us']:.2f} | "
              f"{h['target']} | {h['passed']} |"]
    lines += cold_cli.markdown(results["cold_cli"])
    w = results["whole_validation"]
    lines += ["", "## Whole validation against a plain script", "",
              "Both with the default settings (the batch sweep, budget and thread counts a user gets). The plain "
              "script does the flow's raw steps in one interpreter: load, wrap and prove the wrapper, check the "
              "outputs, sweep TensorFlow and the wrapper with the flow's own engine, convert with tf2onnx, compare "
              "ONNX Runtime on 8 batches, sweep it, and log the figures and the ONNX model to a fresh MLflow store. "
              "Medians over "
              f"{w['pairs']} pairs alternating which goes first.", "",
              "| model | flow s | plain script s | ratio | Prefect start-up s (excluded) | target | passed |",
              "|---|---|---|---|---|---|---|",
              f"| {w['model']} | {w['flow_s']:.1f} | {w['plain_script_s']:.1f} | {w['ratio']:.2f} | "
              f"{w['prefect_start_up_s']:.1f} | {w['target']} | {w['passed']} |"]
    lines += ["", "## Whole validation's peak memory against variables size", "",
              "Resident memory of the flow's process (a fresh interpreter, as a CLI run's or a worker's flow run) and "
              "all its children together (Prefect's ephemeral server among them), sampled every 20 ms, over "
              "a validation with the default settings (benchmarks off) of a dense model "
              "(benchmarks/models.py dense_of_size); the baseline is the same for a 4 KiB model.",
              "", "| variables MiB | peak RSS MiB | baseline MiB | (peak - baseline) / variables | peak stage | target "
              "| passed |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {m['variables_mb']:.1f} | {m['peak_rss_mb']:.0f} | {m['baseline_mb']:.0f} | {m['ratio']:.2f} | "
              f"{m['peak_stage']} | {m['target']} | {m['passed']} |" for m in results["memory"]]
    lines += ["", "The same peaks against one process that imports TensorFlow and runs an op "
              "((peak - 3x variables) / that process: at most 2 meets the goal):", "",
              "| variables MiB | peak RSS MiB | one TensorFlow process MiB | ratio | target | passed |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {m['variables_mb']:.1f} | {m['peak_rss_mb']:.0f} | {m['one_tensorflow_process_mb']:.0f} | "
              f"{m['tensorflow_ratio']:.2f} | {m['tensorflow_target']} | {m['tensorflow_passed']} |"
              for m in results["memory"]]
    stages = [stage for stage in results["memory"][-1]["per_stage_mb"] if not stage.startswith(("start", "after "))]
    lines += ["", "Whole-tree peak per stage, MiB:", "",
              "| stage | " + " | ".join(f"{m['variables_mb']:.0f} MiB" for m in results["memory"]) + " |",
              "|---|" + "---|" * len(results["memory"])]
    lines += [f"| {stage} | " + " | ".join(str(m["per_stage_mb"].get(stage, "")) for m in results["memory"]) + " |"
              for stage in stages]
    lines += ["", "What each process held at the whole-tree peak (a child named by its pid and the stage it was first "
              "seen in), MiB:", ""]
    lines += [f"- {m['variables_mb']:.0f} MiB, at {m['peak_stage']}: "
              + ", ".join(f"{name} {mb}" for name, mb in m["alive_at_peak_mb"].items()) for m in results["memory"]]
    if "efficientnet" in results:
        lines += efficientnet_markdown(results["efficientnet"])
    lines += ["", f"GPU: {results['gpu']['status']} ({results['gpu']['reason']})", "",
              "Environment: " + ", ".join(f"{k} {v}" for k, v in results["environment"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models only")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder for results.json/.md")
    parser.add_argument("--only", help=f"comma-separated sections to rerun into --out's results.json, the others "
                                       f"kept as they are ({', '.join(SECTIONS)})")
    args = parser.parse_args(argv)
    os.environ.pop(SPARES_VARIABLE, None)  # a spare keeper around it (the test suite's) would warm the cold figures
    out = Path(args.out)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.only:
        chosen = args.only.split(",")
        if unknown := set(chosen) - set(SECTIONS):
            parser.error(f"unknown section {', '.join(sorted(unknown))}")
        results = json.loads((out / "results.json").read_text())
        environment = gather_environment()  # a rerun may land on another host: each section keeps its own
        results.update({key: value for section in chosen
                        for key, value in ((f"{section}_run_at", now), (f"{section}_environment", environment))})
    else:
        # EfficientNetB0 takes minutes: the full suite only, never --quick (tests/test_benchmarks_suite.py runs that)
        chosen = [section for section in SECTIONS if not (args.quick and section == "efficientnet")]
        results = {"started_at": now, "quick": args.quick, "environment": gather_environment()}
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as scratch:
        workdir = Path(scratch)
        model_dirs = {}
        if {"fidelity", "whole_validation"} & set(chosen):
            model_dirs["small dense"] = models.dense_of_size(workdir / "small", 64 * 1024)
            if not args.quick:
                model_dirs["MobileNetV2"] = models.mobilenet_v2(workdir / "mobilenet_v2")
        if "fidelity" in chosen:
            print("fidelity ...", flush=True)
            results["fidelity"] = fidelity(model_dirs, workdir)
        if "harness_overhead" in chosen:
            print("harness overhead ...", flush=True)
            results["harness_overhead"] = harness_overhead(workdir)
        if "cold_cli" in chosen:
            print("cold CLI ...", flush=True)
            results["cold_cli"] = cold_cli.measure(1 if args.quick else WALL_TIME_PAIRS, workdir)
        if "whole_validation" in chosen:
            print("whole validation ...", flush=True)
            results["whole_validation"] = whole_validation(list(model_dirs.values())[-1], workdir,
                                                           pairs=1 if args.quick else WALL_TIME_PAIRS)
        if "memory" in chosen:
            print("memory ...", flush=True)
            results["memory"] = memory([4] if args.quick else [10, 100, 1024], workdir)
        if "efficientnet" in chosen:
            print("EfficientNetB0 ...", flush=True)
            results["efficientnet"] = efficientnet(workdir)
        results["gpu"] = gpu_section()
    results["all_passed"] = all(
        row["passed"] and row.get("tensorflow_passed", True)
        for row in [*results["fidelity"], results["harness_overhead"], results["cold_cli"], results["whole_validation"],
                    *results["memory"], *([results["efficientnet"]] if "efficientnet" in results else [])]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if results["all_passed"] else TARGET_MISSED


if __name__ == "__main__":
    sys.exit(main())

"""Scaling out: N model versions validated through the deployment topology by one worker, then by two.

    uv run python -m benchmarks.scale                 # 4 versions (about 10 minutes on 2 cores)
    uv run python -m benchmarks.scale --versions 6

The topology of docker/compose.yaml runs as processes on loopback (PostgreSQL, the Prefect and MLflow servers,
`worker` services with one flow run each at a time). Each round registers N versions of a small Keras model,
starts one validation per version as the UI does, all at once, and times them until the last one ends.
Per worker it also times each validation from the end of the one before (from the start of the round, for its
first): a worker's first validation ever is cold, the ones after it find the spares its keeper warmed up (warm).
Writes benchmarks/scale-results.json and benchmarks/scale-results.md (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from modelgate.execution.quiet import quiet_frameworks

quiet_frameworks()

from modelgate.model.samples import build_sample_model  # noqa: E402
from modelgate.reporting.environment import gather_environment  # noqa: E402 - Prefect and MLflow read their settings at import
from tests.topology.processes import postgres_bindir  # noqa: E402
from tests.topology.stack import Topology, run_parameters  # noqa: E402
from tests.tracking.test_registry import _register  # noqa: E402

ONE_RUN_PER_WORKER = {"WORKER_LIMIT": "1"}


def _handed_over(topology: Topology, worker: str) -> int:
    """Spares the worker's keeper handed to its flow runs so far (modelgate/execution/spare_keeper.py logs each)."""
    return topology.services[worker].log.read_text(errors="replace").count("modelgate.spare_keeper: handed spare")


def _per_worker(topology: Topology, flow_runs: list[str], finished: list, submitted: datetime, fresh: set[str],
                handed_before: dict[str, int]) -> dict[str, dict]:
    """Each worker's validations, one after the other: the time each took to come after the one before (after the
    round started, for the first), cold for a worker's first validation ever, warm for the others."""
    per_worker = {}
    for worker in sorted(name for name in topology.services if name.startswith("worker")):
        served = sorted((run for flow_run, run in zip(flow_runs, finished, strict=True)
                         if topology.served_by(worker, flow_run)), key=lambda run: run.end_time)
        if not served:
            continue
        ends = [submitted, *(run.end_time for run in served)]
        intervals = [round((end - before).total_seconds(), 1) for before, end in zip(ends, ends[1:])]
        cold = intervals[:1] if worker in fresh else []
        fresh.discard(worker)
        per_worker[worker] = {
            "cold_s": cold, "warm_s": intervals[len(cold):],
            "flow_run_s": [round((run.end_time - run.start_time).total_seconds(), 1) for run in served],
            "spares_handed_over": _handed_over(topology, worker) - handed_before.get(worker, 0),
        }
    return per_worker


def _round(topology: Topology, workers: int, model_dir: Path, versions: int, scratch: Path, fresh: set[str]) -> dict:
    name = f"scale-{workers}-workers"
    sources = [f"models:/{name}/{_register(topology.tracking_uri, name, model_dir)}" for _ in range(versions)]
    handed_before = {worker: _handed_over(topology, worker) for worker in topology.services
                     if worker.startswith("worker")}
    started, submitted = time.monotonic(), datetime.now(UTC)
    flow_runs = [topology.run_deployment(run_parameters(scratch / name / str(i), source))
                 for i, source in enumerate(sources)]
    finished = [topology.wait_until_final(flow_run, timeout_s=1800) for flow_run in flow_runs]
    wall_s = time.monotonic() - started
    states = [run.state.type.value for run in finished]
    run_seconds = [(run.end_time - run.start_time).total_seconds() for run in finished]
    per_worker = _per_worker(topology, flow_runs, finished, submitted, fresh, handed_before)
    return {"workers": workers, "validations": versions, "wall_s": round(wall_s, 1),
            "throughput_per_min": round(60 * versions / wall_s, 2),
            "mean_run_s": round(statistics.mean(run_seconds), 1), "states": states,
            "runs_per_worker": {worker: len(times["flow_run_s"]) for worker, times in per_worker.items()},
            "per_worker": per_worker}


def _per_hour(rounds: list[dict], kind: str) -> dict:
    seconds = [s for r in rounds for times in r["per_worker"].values() for s in times[f"{kind}_s"]]
    return {"validations": len(seconds), "mean_s": round(statistics.mean(seconds), 1) if seconds else None,
            "validations_per_hour": round(3600 / statistics.mean(seconds), 1) if seconds else None}


def measure(versions: int) -> dict:
    fresh = {"worker-1", "worker-2"}
    with tempfile.TemporaryDirectory(prefix="modelgate-scale-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_dir = build_sample_model(scratch / "model")
        with Topology(scratch / "topology", ONE_RUN_PER_WORKER) as topology:
            topology.start()
            topology.start_worker("worker", "worker-1")
            one = _round(topology, 1, model_dir, versions, scratch, fresh)
            topology.start_worker("worker", "worker-2")
            two = _round(topology, 2, model_dir, versions, scratch, fresh)
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rounds": [one, two],
        "speed_up": round(one["wall_s"] / two["wall_s"], 2),
        "per_worker": {kind: _per_hour([one, two], kind) for kind in ("cold", "warm")},
        "all_completed": all(state == "COMPLETED" for r in (one, two) for state in r["states"]),
        "environment": gather_environment(),
    }


def to_markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Scaling out: one worker against two", "",
        f"Run at {results['measured_at']} on {env.get('cpu_count', '?')} CPU cores ({env.get('cpu', '?')}); "
        "`python -m benchmarks.scale`. Each worker runs one flow run at a time (`WORKER_LIMIT=1`); the versions "
        "of one round are started together, as the UI's Run button starts them.", "",
        "| workers | validations | wall s | validations / min | mean flow run s | runs per worker |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rounds"]:
        per_worker = ", ".join(f"{w}: {n}" for w, n in r["runs_per_worker"].items() if n)
        lines.append(f"| {r['workers']} | {r['validations']} | {r['wall_s']} | {r['throughput_per_min']} | "
                     f"{r['mean_run_s']} | {per_worker} |")
    lines += ["", f"Speed-up with two workers: {results['speed_up']}x. Wall time also holds what a flow run's own "
              "time leaves out: each run's process start (imports, the pull step) and the workers' polling "
              "(`PREFECT_WORKER_QUERY_SECONDS`); two validations at once share the machine's cores, so each "
              "takes longer.", "",
              "## One worker's validations, cold and warm", "",
              "Each validation timed from the end of the one before on its worker (from the round's start, for a "
              "worker's first of the round). Cold: a worker's first validation ever; warm: the ones after it, "
              "which find the spare model processes the worker's keeper warmed up once the one before closed its "
              "own (`modelgate worker`; docs/benchmarks.md, Warm spares).", "",
              "| | validations | mean s | validations / hour / worker |", "|---|---|---|---|"]
    for kind, figures in results["per_worker"].items():
        lines.append(f"| {kind} | {figures['validations']} | {figures['mean_s']} | {figures['validations_per_hour']} |")
    lines += ["", "| round | worker | cold s | warm s | flow run s | spares handed over |", "|---|---|---|---|---|---|"]
    for r in results["rounds"]:
        for worker, times in r["per_worker"].items():
            lines.append(f"| {r['workers']} workers | {worker} | {', '.join(map(str, times['cold_s']))} | "
                         f"{', '.join(map(str, times['warm_s']))} | {', '.join(map(str, times['flow_run_s']))} | "
                         f"{times['spares_handed_over']} |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=4, help="model versions validated in each round")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder for the results")
    args = parser.parse_args(argv)
    if postgres_bindir() is None:
        parser.error("PostgreSQL's server binaries are needed: apt-get install postgresql")
    results = measure(args.versions)
    out = Path(args.out)
    (out / "scale-results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "scale-results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0 if results["all_completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

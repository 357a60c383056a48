"""Peak resident memory of a whole validation: the flow's process and every child it starts, together.

A validation is several processes at once (the flow, the TensorFlow pool, tf2onnx, ONNX Runtime), so the
figure that decides whether a model fits a machine is their sum at its highest, not any one of them. The
sampler reads the whole tree every 20 ms and keeps the peak per stage, so a report says where it went.

    uv run python -m benchmarks.tree_memory MODEL_DIR [--no-onnx]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import psutil

SAMPLE_S = 0.02


def tree_rss_mb(process: psutil.Process) -> dict[int, float]:
    """Resident memory of each process of the tree, by pid."""
    members = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            members[member.pid] = member.memory_info().rss / 2**20
        except psutil.Error:
            continue  # a child that ended between the listing and the reading holds nothing
    return members


class TreeMemory:
    """Samples this process's tree in a thread; stage_started/stage_finished make it a recorder listener.
    Beside each stage's peak it keeps what each process held then, named by the stage it was first seen in,
    which says which children were alive at once."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.stage = "start"
        self.peaks: dict[str, float] = {}
        self.alive_at_peak: dict[str, dict[str, float]] = {}
        self._first_seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            stage, members = self.stage, tree_rss_mb(self.process)
            total = sum(members.values())
            if total > self.peaks.get(stage, 0.0):
                self.peaks[stage] = total
                self.alive_at_peak[stage] = {self._name(pid, stage): mb for pid, mb in members.items()}

    def _name(self, pid: int, stage: str) -> str:
        if pid == self.process.pid:
            return "flow"
        return f"{pid} (since {self._first_seen.setdefault(pid, stage)})"

    def stage_started(self, name: str) -> None:
        self.stage = name

    def stage_finished(self, record) -> None:
        self.stage = f"after {record.name}"

    def __enter__(self) -> TreeMemory:
        from modelgate.reporting import recorder

        recorder.add_listener(self)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        from modelgate.reporting import recorder

        self._stop.set()
        self._thread.join()
        recorder.remove_listener(self)

    @property
    def peak_mb(self) -> float:
        return max(self.peaks.values(), default=0.0)


def validation_peak(request) -> tuple[TreeMemory, str]:
    """The whole tree's memory over one validation, and the verdict."""
    from flows.validate import validate

    with TreeMemory() as memory:
        report = validate(request)
    return memory, report.status


def main() -> None:
    from modelgate.execution.quiet import quiet_frameworks

    quiet_frameworks()
    from modelgate.request import ValidationRequest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--out", default="tree-memory")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    out = Path(args.out)
    request = ValidationRequest(
        source=args.model_dir, export_onnx=not args.no_onnx, benchmark={"enabled": False}, report_path=str(out / "report.json"),
        output_dir=str(out / "work"), tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}",
    )
    started = time.perf_counter()
    memory, status = validation_peak(request)
    figures = json.dumps({
        "status": status, "peak_mb": round(memory.peak_mb), "wall_s": round(time.perf_counter() - started, 1),
        "per_stage_mb": {stage: {"peak": round(peak), "alive": {name: round(mb) for name, mb in
                                                                  memory.alive_at_peak[stage].items()}}
                         for stage, peak in memory.peaks.items()},
    }, indent=1)
    if args.json:
        Path(args.json).write_text(figures)
    print(figures)


if __name__ == "__main__":
    main()

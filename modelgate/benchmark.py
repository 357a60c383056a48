"""The benchmark engine: one runtime, one device, a batch sweep, each point measured until it settles.

Runtimes are plain callables from named numpy inputs to named numpy outputs (modelgate.runners), so
every runtime is measured by the same loop, and its outputs are on the host before the clock stops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modelgate.inputs import Feeds, batch_of
from modelgate.schemas import BenchmarkResult
from modelgate.timing import LatencyStats, MeasurementPlan, measure

# Model Navigator's rule: keep doubling the batch while throughput still grows by at least 5 %.
MIN_THROUGHPUT_GAIN = 0.05
PATIENCE = 2


@dataclass(frozen=True)
class SweepPlan:
    measurement: MeasurementPlan
    batch_sizes: list[int] | None = None
    max_batch_size: int = 32
    fixed_batch_size: int | None = None

    def candidates(self) -> list[int]:
        if self.fixed_batch_size is not None:
            return [self.fixed_batch_size]
        if self.batch_sizes:
            return self.batch_sizes
        sizes, size = [], 1
        while size <= self.max_batch_size:
            sizes.append(size)
            size *= 2
        return sizes

    @property
    def stops_early(self) -> bool:
        return self.fixed_batch_size is None and not self.batch_sizes


@dataclass(frozen=True)
class Measured:
    result: BenchmarkResult
    samples_ms: list[float]


def sweep(
    runtime: Callable[[Feeds], object], feeds: Feeds, plan: SweepPlan, *, runtime_name: str, device: str,
    intra_op_threads: int, inter_op_threads: int, providers: list[str] | None = None,
) -> list[Measured]:
    measured: list[Measured] = []
    for batch_size in plan.candidates():
        batch = batch_of(feeds, batch_size)
        stats: LatencyStats = measure(lambda: runtime(batch), plan.measurement)
        result = BenchmarkResult(
            runtime=runtime_name, device=device, batch_size=batch_size, intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads, providers=providers or [], **stats.summary(batch_size),
        )
        measured.append(Measured(result, stats.samples_ms))
        if plan.stops_early and throughput_has_levelled_off([m.result.throughput for m in measured]):
            break
    return measured


def throughput_has_levelled_off(throughputs: list[float]) -> bool:
    """True once each of the last PATIENCE doublings gained less than MIN_THROUGHPUT_GAIN."""
    if len(throughputs) <= PATIENCE:
        return False
    recent = throughputs[-PATIENCE - 1:]
    return all(after / before - 1 < MIN_THROUGHPUT_GAIN for before, after in zip(recent, recent[1:]))

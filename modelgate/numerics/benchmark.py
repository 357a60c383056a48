"""The benchmark engine: one runtime, one device, a batch sweep, each point measured until it settles.

Runtimes are plain callables from named numpy inputs to named numpy outputs (modelgate.runtimes.tensorflow), so
every runtime is measured by the same loop, and its outputs are on the host before the clock stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from modelgate.numerics.inputs import Feeds, batch_of
from modelgate.numerics.timing import BudgetSpent, LatencyStats, MeasurementPlan, measure
from modelgate.report import BenchmarkResult, UnmeasuredBenchmark

# Model Navigator's rule: keep doubling the batch while throughput still grows by at least 5 %.
MIN_THROUGHPUT_GAIN = 0.05
PATIENCE = 2


@dataclass(frozen=True)
class SweepPlan:
    measurement: MeasurementPlan
    batch_sizes: list[int] | None = None
    max_batch_size: int = 32
    fixed_batch_size: int | None = None
    budget_s: float | None = None  # per runtime and device: the sweep stops when it is spent
    # No batch dimension: one point, the inputs as they are, reported as batch size 1 (a call is a sample).
    declared_shapes: bool = False

    def candidates(self) -> list[int]:
        if self.declared_shapes:
            return [1]
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
) -> list[Measured | UnmeasuredBenchmark]:
    """Every batch size of the plan, or as many as its budget allows: the sizes left are returned as
    UnmeasuredBenchmark, saying why, beside the measured ones."""
    measured: list[Measured] = []
    deadline = time.monotonic() + plan.budget_s if plan.budget_s else None
    candidates = plan.candidates()
    for index, batch_size in enumerate(candidates):
        batch = feeds if plan.declared_shapes else batch_of(feeds, batch_size)
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise BudgetSpent("before this batch size started")
            stats: LatencyStats = measure(lambda: runtime(batch), plan.measurement, deadline)  # noqa: B023 - called within this iteration
        except BudgetSpent as spent:
            reason = f"the benchmark budget of {plan.budget_s:g} s for {runtime_name}/{device} was spent ({spent})"
            return [*measured, *(
                UnmeasuredBenchmark(runtime=runtime_name, device=device, batch_size=size, reason=reason)
                for size in candidates[index:]
            )]
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

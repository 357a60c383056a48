"""Latency measurement: warm-up, then windows of timed calls until the window means settle.

The method follows NVIDIA Model Navigator's profiler: a result is stable when the last three window means
are each within a tolerance of their mean; an unstable result keeps its numbers and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeasurementPlan:
    warmup: int = 10
    window: int = 25
    min_windows: int = 3
    max_windows: int = 10
    stability: float = 0.10


class BudgetSpent(Exception):
    """The time budget ran out before the fewest windows that make a result were complete."""


@dataclass(frozen=True)
class LatencyStats:
    samples_ms: list[float]
    windows: int
    stable: bool
    cut_by_budget: bool = False

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.samples_ms))

    def summary(self, batch_size: int) -> dict[str, float | int | bool]:
        samples = np.asarray(self.samples_ms)
        return {
            "p50_ms": self.percentile(50), "p90_ms": self.percentile(90),
            "p95_ms": self.percentile(95), "p99_ms": self.percentile(99),
            "mean_ms": float(samples.mean()), "std_ms": float(samples.std()),
            "min_ms": float(samples.min()), "max_ms": float(samples.max()),
            "throughput": batch_size / (float(samples.mean()) / 1000.0),
            "iterations": int(samples.size), "windows": self.windows, "stable": self.stable,
            "cut_by_budget": self.cut_by_budget,
        }


def _settled(window_means: list[float], stability: float) -> bool:
    last = window_means[-3:]
    centre = sum(last) / len(last)
    return all(abs(m - centre) <= stability * centre for m in last)


def measure(call: Callable[[], object], plan: MeasurementPlan, deadline: float | None = None) -> LatencyStats:
    """Time call() repeatedly; call must return only once its outputs are materialised on the host.

    A deadline (time.monotonic()) is looked at between whole windows only, so no window is ever cut short:
    past it, a measurement with its fewest windows stops there (unstable unless it had settled, and marked
    cut_by_budget), and one without them raises BudgetSpent rather than pass for a result."""
    for _ in range(plan.warmup):
        call()
    samples: list[float] = []
    window_means: list[float] = []
    clock = time.perf_counter_ns
    while len(window_means) < plan.max_windows:
        window = []
        for _ in range(plan.window):
            start = clock()
            call()
            window.append((clock() - start) / 1e6)
        samples.extend(window)
        window_means.append(sum(window) / len(window))
        if len(window_means) >= plan.min_windows and _settled(window_means, plan.stability):
            return LatencyStats(samples_ms=samples, windows=len(window_means), stable=True)
        if deadline is not None and time.monotonic() >= deadline and len(window_means) < plan.max_windows:
            if len(window_means) < plan.min_windows:
                raise BudgetSpent(f"{len(window_means)} of the {plan.min_windows} windows a result needs")
            return LatencyStats(samples_ms=samples, windows=len(window_means), stable=False, cut_by_budget=True)
    return LatencyStats(samples_ms=samples, windows=len(window_means), stable=False)

"""Comparison with a baseline version (by default the one behind `champion`): what changes for callers.

Both models run in one child process on the same seeded inputs: output drift is measured there, and so
is latency, the two measured in alternation so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics

import numpy as np

from modelgate.model.op_allowlist import import_op_libraries
from modelgate.numerics.compare import compare_arrays
from modelgate.numerics.inputs import read_npz
from modelgate.numerics.timing import MeasurementPlan, measure
from modelgate.runtimes.tensorflow import load_reference_runner

LATENCY_ROUNDS = 3
LATENCY_PLAN = MeasurementPlan(warmup=5, window=25, min_windows=3, max_windows=3)


def baseline_job(
    model_dir: str, tags: list[str], model_format: str, key: str, baseline_dir: str, baseline_tags: list[str],
    baseline_format: str, inputs_path: str, op_libraries: list[str] = (),
) -> dict:
    """Drift of each shared output (max abs and rel difference) and p50 latency of both, side by side, each
    model on its format's reference runtime. It runs in a fresh process, so it imports the request's op
    libraries itself."""
    import_op_libraries(list(op_libraries))
    current = load_reference_runner(model_dir, tags, key, model_format)
    baseline = load_reference_runner(baseline_dir, baseline_tags, key, baseline_format)
    feeds = read_npz(inputs_path)
    ours, theirs = current(feeds), baseline(feeds)
    drift = {}
    for name in sorted(set(ours) & set(theirs)):
        comparison = compare_arrays(np.asarray(theirs[name]), np.asarray(ours[name]), atol=0.0, rtol=0.0)
        drift[name] = {"max_abs_diff": comparison.max_abs_diff, "max_rel_diff": comparison.max_rel_diff,
                       "message": comparison.message}
    current_p50, baseline_p50 = [], []
    for _ in range(LATENCY_ROUNDS):
        current_p50.append(measure(lambda: current(feeds), LATENCY_PLAN).percentile(50))
        baseline_p50.append(measure(lambda: baseline(feeds), LATENCY_PLAN).percentile(50))
    return {
        "drift": drift,
        "current_p50_ms": statistics.median(current_p50),
        "baseline_p50_ms": statistics.median(baseline_p50),
    }

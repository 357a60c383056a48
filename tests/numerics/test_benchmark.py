import json
import time
from pathlib import Path

import numpy as np
import pytest

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.execution.jobs import inspection_job
from modelgate.numerics.benchmark import Measured, SweepPlan, sweep, throughput_has_levelled_off
from modelgate.numerics.benchmark_plan import fixed_batch_size
from modelgate.numerics.timing import BudgetSpent, MeasurementPlan, measure
from modelgate.report import UnmeasuredBenchmark
from modelgate.request import ValidationRequest
from tasks.benchmark import benchmark
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature


def test_sweep_doubles_up_to_the_limit_unless_sizes_are_given():
    plan = MeasurementPlan()
    assert SweepPlan(plan, max_batch_size=20).candidates() == [1, 2, 4, 8, 16]
    assert SweepPlan(plan, batch_sizes=[3, 5]).candidates() == [3, 5]
    assert SweepPlan(plan, batch_sizes=[3, 5], fixed_batch_size=7).candidates() == [7]
    assert SweepPlan(plan).stops_early and not SweepPlan(plan, batch_sizes=[1]).stops_early


def test_sweep_stops_after_two_doublings_that_gain_under_5_percent():
    assert not throughput_has_levelled_off([100, 200])
    assert not throughput_has_levelled_off([100, 200, 204])  # one flat step is not enough
    assert throughput_has_levelled_off([100, 200, 204, 206])
    assert not throughput_has_levelled_off([100, 103, 200])  # a flat step followed by a real gain


def test_a_fixed_batch_dimension_is_the_only_size_measured():
    def spec(*shape):
        return TensorSpec(dtype="float32", shape=list(shape))

    signature = SignatureSpec(key="k", method_name="", inputs={"a": spec(8, 3), "b": spec(8)}, outputs={})
    assert fixed_batch_size(signature) == 8
    assert fixed_batch_size(signature.model_copy(update={"inputs": {"a": spec(None, 3)}})) is None


def test_measurement_windows_settle_on_a_steady_call():
    stats = measure(lambda: sum(range(2000)), MeasurementPlan(warmup=5, window=25, min_windows=3, max_windows=10))
    assert stats.windows >= 3 and len(stats.samples_ms) == 25 * stats.windows
    summary = stats.summary(batch_size=4)
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["throughput"] == pytest.approx(4 / (summary["mean_ms"] / 1000))


def test_benchmark_task_sweeps_both_tensorflow_runtimes_in_a_child(model_dirs, tmp_path):
    request = ValidationRequest(
        source=str(model_dirs["keras_export"]), benchmark_max_batch_size=4, benchmark_warmup=2,
        benchmark_max_windows=3, intra_op_threads=1, benchmark_gpu=False,
    )
    choice = select_signature.fn(inspection_job(request.source, str(tmp_path)), None, None)
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    run = benchmark.fn(choice, inputs, request, str(tmp_path))
    by_runtime = {}
    for result in run.results:
        by_runtime.setdefault(result.runtime, []).append(result.batch_size)
        assert result.intra_op_threads == 1 and result.inter_op_threads == 1 and result.device == "cpu"
    # The sweep either reaches 4 or stops early because throughput levelled off; it always starts at 1.
    assert set(by_runtime) == {"tensorflow", "keras"}
    assert all(sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] <= 4 for sizes in by_runtime.values())
    samples = json.loads(Path(run.artifacts["latency-samples-tensorflow.json"]).read_text())
    assert set(samples) == {f"{r.runtime}/cpu/bs{r.batch_size}" for r in run.results}
    assert {c.name: c.status for c in run.checks}["benchmark_gpu_tensorflow"] == "skipped"


def test_the_keras_wrapper_is_benchmarked_on_an_input_of_unknown_rank(model_dirs, tmp_path):
    # keras.Input needs a rank: the wrapper takes it from the inputs at hand, as the parity stage's does.
    request = ValidationRequest(
        source=str(model_dirs["unknown_dims"]), benchmark_batch_sizes=[1], benchmark_warmup=2,
        benchmark_max_windows=3, benchmark_gpu=False,
    )
    choice = select_signature.fn(inspection_job(request.source, str(tmp_path)), None, None)
    assert any(spec.shape is None for spec in choice.signature.inputs.values())
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    run = benchmark.fn(choice, inputs, request, str(tmp_path))
    assert {result.runtime for result in run.results} == {"tensorflow", "keras"}


def _sleeping_runtime(feeds):
    time.sleep(0.001 * len(feeds["x"]))  # a millisecond per sample: bigger batches cost more
    return {}


def test_a_spent_budget_ends_the_sweep_and_names_the_sizes_left():
    plan = SweepPlan(MeasurementPlan(warmup=1, window=5), batch_sizes=[1, 2, 4, 8, 16, 32], budget_s=0.2)
    outcomes = sweep(_sleeping_runtime, {"x": np.zeros((1, 1))}, plan, runtime_name="sleepy", device="cpu",
                     intra_op_threads=1, inter_op_threads=1)
    measured = [o for o in outcomes if isinstance(o, Measured)]
    left = [o for o in outcomes if isinstance(o, UnmeasuredBenchmark)]
    # At least 3 windows of 5 calls per size: 32 ms at batch 1, 1 s at batch 32; 0.2 s cannot hold them all.
    assert left and [o.result.batch_size for o in measured] + [o.batch_size for o in left] == plan.candidates()
    assert all("budget of 0.2 s for sleepy/cpu was spent" in o.reason for o in left)
    for m in measured:  # nothing partial: whole windows, at least the fewest a result needs
        assert m.result.windows >= 3 and m.result.iterations == 5 * m.result.windows


def test_a_measurement_without_its_fewest_windows_is_no_result():
    with pytest.raises(BudgetSpent):
        measure(lambda: time.sleep(0.002), MeasurementPlan(warmup=0, window=5), deadline=time.monotonic())


def test_the_benchmark_stage_reports_what_its_budget_left_unmeasured(model_dirs, tmp_path):
    request = ValidationRequest(
        source=str(model_dirs["keras_export"]), benchmark_max_batch_size=4, benchmark_warmup=2,
        benchmark_budget_s=0.01, benchmark_gpu=False,
    )
    choice = select_signature.fn(inspection_job(request.source, str(tmp_path)), None, None)
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    run = benchmark.fn(choice, inputs, request, str(tmp_path))
    assert run.results == []
    assert {(u.runtime, u.batch_size) for u in run.unmeasured} == {
        (runtime, size) for runtime in ("tensorflow", "keras") for size in (1, 2, 4)
    }
    budget = {c.name: c for c in run.checks}["benchmark_budget_tensorflow"]
    assert budget.status == "warning" and "not measured: tensorflow/cpu bs1" in budget.message

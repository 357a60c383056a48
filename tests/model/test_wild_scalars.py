"""Signatures with no batch dimension (tests/wild_models.py): a function of two scalars, and a simulation step
over a fixed grid beside a scalar time step. They are wrapped, checked, converted and benchmarked at their
declared shapes, and pass with the default settings; no batch is made of what has no batch dimension."""

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from modelgate.description import TensorSpec
from modelgate.errors import ModelRunError
from modelgate.execution.jobs import inspection_job
from modelgate.model.savedmodel import first_meaningful_line
from modelgate.numerics.benchmark import SweepPlan, sweep
from modelgate.numerics.inputs import no_batch_dimension
from modelgate.numerics.timing import MeasurementPlan
from modelgate.runtimes.keras_wrapper import KerasModelRunner
from modelgate.runtimes.tensorflow import TFSignatureRunner
from modelgate.service.cli import EXIT_CODES
from tasks.select_signature import select_signature
from tests import wild_models
from tests.flows import run_flow

_run = partial(run_flow, benchmark_max_windows=3, benchmark_warmup=2)  # the default sweep, shorter windows
SCALARS = "no batch dimension (input 'a' is a scalar, input 'b' is a scalar)"
GRID = "no batch dimension (input 'dt' is a scalar, input 'grid' has the fixed shape [16, 16])"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild_scalars")
    return {name: getattr(wild_models, name)(root / name) for name in ("scalar_arithmetic", "unbatched_grid")}


def _signature(model_dir):
    workdir = tempfile.mkdtemp(dir=Path(model_dir).parent)
    return select_signature.fn(inspection_job(str(model_dir), workdir), None, None).signature


def test_a_scalar_beside_fixed_shapes_is_no_batch_dimension_and_beside_a_dynamic_one_it_is_a_parameter(built):
    signature = _signature(built["unbatched_grid"])
    assert no_batch_dimension(signature) == GRID
    batched = {**signature.inputs, "grid": TensorSpec(dtype="float32", shape=[None, 16])}
    assert no_batch_dimension(signature.model_copy(update={"inputs": batched})) is None
    fixed = {"grid": signature.inputs["grid"]}  # a fixed first dimension alone stays a fixed batch size
    assert no_batch_dimension(signature.model_copy(update={"inputs": fixed})) is None


def test_the_keras_wrapper_takes_scalars_at_rank_0_and_says_why_in_one_line(built):
    signature = _signature(built["scalar_arithmetic"])
    raw = TFSignatureRunner(built["scalar_arithmetic"], ["serve"], signature.key)
    feeds = {"a": np.array(2.0, "float32"), "b": np.array(-3.0, "float32")}
    wrapped = KerasModelRunner(raw, signature, feeds).activate()
    assert [tuple(tensor.shape) for tensor in wrapped.model.inputs] == [(), ()]
    assert wrapped.call_form(feeds).startswith("model(inputs) (model.predict splits inputs")
    outputs = wrapped(feeds)
    assert {name: value.shape for name, value in outputs.items()} == {"sum": (), "product": ()}
    assert (outputs["sum"], outputs["product"]) == (-1.0, -6.0)
    with pytest.raises(ModelRunError) as failure:
        wrapped({"a": np.ones(3, "float32"), "b": np.ones(3, "float32")})
    message = str(failure.value)
    assert message.startswith("the Keras wrapper failed: Invalid input shape for input")
    assert "Expected shape (), but input has incompatible shape (3,)" in message
    assert "\n" not in message and "\x1b" not in message


def test_keras_s_coloured_error_dump_comes_down_to_its_reason():
    dump = ("Exception encountered when calling Functional.call().\n\n\x1b[1mInvalid input shape for input 0.1 with "
            "name 'a'. Expected shape (None,), but input has incompatible shape ()\x1b[0m\n\nArguments received by "
            "Functional.call():\n  • inputs={'a': 'array(0.1, dtype=float32)'}")
    assert first_meaningful_line(dump) == (
        "Invalid input shape for input 0.1 with name 'a'. Expected shape (None,), but input has incompatible shape ()"
    )


def test_a_sweep_at_the_declared_shapes_measures_the_inputs_as_they_are():
    grid = {"grid": np.zeros((16, 16), "float32"), "dt": np.array(0.5, "float32")}
    seen = []
    plan = SweepPlan(MeasurementPlan(warmup=1, window=3, min_windows=1, max_windows=1), batch_sizes=[1, 4],
                     declared_shapes=True)
    measured = sweep(lambda feeds: seen.append({name: value.shape for name, value in feeds.items()}), grid, plan,
                     runtime_name="tensorflow", device="cpu", intra_op_threads=1, inter_op_threads=1)
    assert [m.result.batch_size for m in measured] == [1]
    assert seen and all(shapes == {"grid": (16, 16), "dt": ()} for shapes in seen)


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(("name", "reason", "shapes"), [
    ("scalar_arithmetic", SCALARS, {"a": [], "b": []}),
    ("unbatched_grid", GRID, {"grid": [16, 16], "dt": []}),
], ids=["scalar_arithmetic", "unbatched_grid"])
def test_an_unbatched_signature_passes_measured_at_its_declared_shapes_onnx_included(
    built, tracking_uri, workdir, name, reason, shapes,
):
    report = _run(built[name], tracking_uri, workdir)
    assert report.status == "passed" and EXIT_CODES[report.status] == 0, report.verdict_line()
    assert report.inputs.shapes == shapes
    checks = {check.name: check for check in report.checks}
    assert checks["keras_wrapper_parity"].status == "passed"
    assert checks["keras_wrapper_parity"].message.startswith("model(inputs) (model.predict splits inputs")
    assert checks["dynamic_batch"].status == "skipped" and checks["dynamic_batch"].message.startswith(reason)
    for check in ("dynamic_batch_runs", "batch_consistency"):
        assert checks[check].status == "skipped" and "no batch dimension" in checks[check].message
    # one measurement per runtime at the declared shapes, not a sweep of batches the model cannot take
    assert sorted((b.target, b.runtime, b.batch_size) for b in report.benchmarks) == [
        ("onnx", "onnxruntime", 1), ("savedmodel", "keras", 1), ("savedmodel", "tensorflow", 1),
    ]
    for framework in ("tensorflow", "onnx_onnxruntime"):
        sweep_check = checks[f"benchmark_sweep_{framework}"]
        assert (sweep_check.status, sweep_check.message) == ("skipped", f"{reason}: measured at the declared shapes only")
    onnx = report.targets["onnx"]
    assert onnx.status == "passed" and checks["onnx_parity"].status == "passed"
    outputs = onnx.comparisons["onnxruntime/cpu"].outputs
    assert set(outputs) == set(report.signatures["serving_default"].outputs)
    assert all(output.passed and output.max_abs_diff < 1e-5 for output in outputs.values())
    messages = [check.message for check in report.checks] + [stage.message for stage in report.stages]
    assert not [message for message in messages if "\n" in message or "\x1b" in message]

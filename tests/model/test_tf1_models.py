"""TF1 graph models as TF Serving runs them (a Session, fed and fetched by tensor names), SparseTensor inputs,
a dynamic batch the graph does not honour, and outputs of unknown shape: each gets its verdict, end to end."""

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from modelgate.errors import ModelRejected
from modelgate.execution.jobs import inspection_job
from modelgate.execution.sandbox import Limits, run_isolated
from modelgate.model.savedmodel import load_saved_model
from modelgate.numerics.checks import unwrappable
from modelgate.runtimes.tensorflow import TFSignatureRunner, configure_tensorflow_threads
from modelgate.runtimes.tf1_session import TFSessionRunner
from tasks.select_signature import select_signature
from tests import models
from tests.flows import run_flow

BUILDERS = ("tf1_declared_scalars", "tf1_batch_one_regress", "tf1_sparse_input", "table_export")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf1_models")
    return {name: getattr(models, name)(root / name) for name in BUILDERS}


def _signature(model_dir):
    workdir = tempfile.mkdtemp(dir=Path(model_dir).parent)
    return select_signature.fn(inspection_job(str(model_dir), workdir), None, None).signature


def _checks(report) -> dict:
    return {check.name: check for check in report.checks}


def test_declared_scalars_are_refused_by_tf2_and_served_by_a_session_with_the_graphs_shapes(built):
    model_dir = built["tf1_declared_scalars"]
    with pytest.raises(ModelRejected, match="Shapes must be equal rank, but are 2 and 0"):
        load_saved_model(model_dir, ["serve"])
    signature = _signature(model_dir)
    x, y = signature.inputs["x"], signature.outputs["y"]
    assert (x.shape, x.declared_shape, y.shape, y.declared_shape) == ([None, 1], [], [None, 1], [])
    outputs = TFSessionRunner(model_dir, ["serve"], "serving_default")({"x": np.array([[1.0], [3.0]], "float32")})
    np.testing.assert_array_equal(outputs["y"], [[3.0], [7.0]])


def _session_threads(model_dir: str) -> tuple[int, int, int]:
    configure_tensorflow_threads(1, 2)
    config = TFSessionRunner(model_dir, ["serve"], "serving_default").activate().config
    return config.intra_op_parallelism_threads, config.inter_op_parallelism_threads, config.device_count["GPU"]


def test_the_session_takes_the_processs_thread_settings(built):
    # A fresh process: thread counts can be set only before TensorFlow runs its first op.
    threads = run_isolated(_session_threads, str(built["tf1_declared_scalars"]), limits=Limits(timeout_s=120),
                           label="session threads").value
    assert threads[:2] == (1, 2)


def test_sparse_input_is_described_and_fed_as_components_by_both_runtimes(built):
    model_dir = built["tf1_sparse_input"]
    features = _signature(model_dir).inputs["features"]
    assert features.sparse.model_dump() == {
        "indices": "features/indices:0", "values": "features/values:0", "dense_shape": "features/shape:0",
    }
    assert features.shape == [None, 5] and features.tensor_name is None
    dense = np.array([[0, 1.5, 0, 0, -2], [0, 0, 0, 0, 0], [3, 0, 0, 1, 0]], "float32")
    expected = dense @ (np.arange(10, dtype="float32").reshape(5, 2) - 4.0)
    for runner in (TFSessionRunner, TFSignatureRunner):
        np.testing.assert_allclose(runner(model_dir, ["serve"], "serving_default")({"features": dense})["scores"],
                                   expected, rtol=1e-6)


def test_outputs_of_unknown_rank_need_inputs_to_wrap(built):
    signature = _signature(built["table_export"])
    assert signature.outputs["keys"].shape is None
    assert unwrappable(signature, None) == (
        "outputs keys, values have unknown rank and there are no inputs to run the signature on"
    )


@pytest.mark.usefixtures("prefect_server")
class TestVerdicts:
    _run = staticmethod(partial(run_flow, export_onnx=False))

    def test_declared_scalars_pass_with_a_warning_on_the_session_and_the_wrapper_skipped(self, built, tracking_uri,
                                                                                          workdir):
        model_dir = built["tf1_declared_scalars"]
        report = self._run(model_dir, tracking_uri, workdir, baseline=str(model_dir))
        assert report.status == "passed", report.first_error() or report.failed_checks()
        checks = _checks(report)
        assert checks["declared_shapes"].status == "warning"
        assert "input 'x': expected the declared shape [] to be the graph's, found [None, 1]" in (
            checks["declared_shapes"].message)
        for name in ("keras_wrapper_built", "keras_wrapper_parity", "benchmark_keras"):
            assert checks[name].status == "skipped", checks[name]
        assert "refuses this TF1 graph: TensorFlow cannot load the SavedModel: Shapes must be equal rank, but are " \
               "2 and 0" in checks["keras_wrapper_built"].message
        for name in ("dynamic_batch_runs", "output_shapes", "finite_outputs", "deterministic", "batch_consistency"):
            assert checks[name].status == "passed", checks[name]
        assert report.inputs.shapes == {"x": [4, 1]}
        assert {bench.runtime for bench in report.benchmarks} == {"tf1-session"}
        assert report.baseline.drift["y"]["max_abs_diff"] == 0.0 and report.baseline.current_p50_ms > 0

    def test_sparse_input_passes_through_session_and_wrapper(self, built, tracking_uri, workdir):
        report = self._run(built["tf1_sparse_input"], tracking_uri, workdir)
        assert report.status == "passed", report.first_error() or report.failed_checks()
        checks = _checks(report)
        for name in ("keras_wrapper_parity", "dynamic_batch_runs", "finite_outputs", "batch_consistency"):
            assert checks[name].status == "passed", checks[name]
        assert report.signatures["serving_default"].inputs["features"].sparse.values == "features/values:0"
        assert {bench.runtime for bench in report.benchmarks} == {"tf1-session", "keras"}

    def test_table_export_outputs_of_unknown_rank_are_wrapped(self, built, tracking_uri, workdir):
        report = self._run(built["table_export"], tracking_uri, workdir, benchmark=False)
        assert report.status == "passed", report.first_error() or report.failed_checks()
        checks = _checks(report)
        assert checks["keras_wrapper_built"].status == "passed" and checks["keras_wrapper_parity"].status == "passed"
        assert checks["known_rank"].status == "warning" and "output 'keys'" in checks["known_rank"].message
        assert checks["batch_consistency"].status == "skipped"

    def test_a_batch_the_graph_does_not_honour_fails_and_the_rest_runs_at_batch_1_onnx_included(
        self, built, tracking_uri, workdir,
    ):
        report = run_flow(built["tf1_batch_one_regress"], tracking_uri, workdir)
        assert report.status == "failed", report.first_error()
        # tf2onnx fixed the output's batch dimension at 1, as the graph does: the ONNX file fails onnx_outputs
        assert [check.name for check in report.failed_checks()] == ["dynamic_batch_runs", "onnx_outputs"]
        assert report.failed_checks()[0].message == (
            "the signature declares a dynamic batch dimension but fails at batch 4 (ConcatOp : Dimension 0 in both "
            "shapes must be equal: shape[0] = [4,3] vs. shape[1] = [1,1]); tried batch sizes 4, 1: it runs at 1, "
            "where the other checks, comparisons and benchmarks ran"
        )
        assert [(stage.name, stage.status, stage.message) for stage in report.stages
                if stage.status not in ("ok", "skipped")] == [
            ("export-onnx", "failed", "converted; its file failed onnx_outputs")]
        assert report.inputs.working_batch_size == 1 and report.inputs.shapes == {"inputs": [1, 3]}
        checks = _checks(report)
        for name in ("keras_wrapper_parity", "output_shapes", "finite_outputs", "deterministic"):
            assert checks[name].status == "passed", checks[name]
        assert {(bench.runtime, bench.batch_size) for bench in report.benchmarks} == {
            ("tf1-session", 1), ("keras", 1), ("onnxruntime", 1),
        }
        # ONNX Runtime held against the Session's outputs, on batches of the working size: equal; and tf2onnx
        # fixes the batch dimension at 1, as the graph does, which the ONNX checks say
        onnx = report.targets["onnx"]
        outputs = onnx.comparisons["onnxruntime/cpu"].outputs
        assert onnx.batches == 8 and outputs["outputs"].passed
        assert outputs["outputs"].max_abs_diff < 1e-5
        onnx_checks = {check.name: check for check in onnx.checks}
        assert onnx_checks["onnx_outputs"].message == "outputs: dimension 0 fixed at 1, dynamic in the signature"
        assert onnx.status == "failed" and onnx.message == "check onnx_outputs failed"

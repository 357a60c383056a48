"""Every SavedModel format users bring: TF1 graph-mode, several MetaGraphs, .pbtxt, Keras 2, TF Serving
base paths, tf.Example string inputs; read statically, then run for real in the model stages' jobs and
through the whole flow."""

import shutil
import tempfile
from functools import partial

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from modelgate.errors import InputsError, ModelRunError, NotASavedModel, SignatureNotFound
from modelgate.execution.jobs import inspection_job, output_checks_job, wrapper_parity_job
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.model_source import resolve_model_source
from modelgate.numerics.inputs import load_examples, load_inputs_file, read_npz, save_npz
from tasks.select_signature import select_signature
from tests.flows import run_flow
from tests.models import example_record

tf = import_tensorflow()


def _select(model_dir, workdir, key=None, tags=None):
    # Each inspection its own folder: a TF1 model's loadable copy lands there.
    return select_signature.fn(inspection_job(str(model_dir), tempfile.mkdtemp(dir=workdir)), key, tags)


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("examples") / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in range(5):
            writer.write(example_record([row, 0.0, 1.0 - row]))  # ends in 0.0: four NUL bytes at the end
    return path


def test_tf1_graph_signatures_methods_and_shapes_are_read(model_dirs, tmp_path):
    inspection = inspection_job(str(model_dirs["tf1_graph"]), str(tmp_path))
    assert inspection.model_format == "tf1-graph"
    serve = next(mg for mg in inspection.meta_graphs if mg.tags == ["serve"])
    signatures = serve.signatures
    assert {key: sig.method_name.rsplit("/", 1)[-1] for key, sig in signatures.items()} == {
        "serving_default": "predict", "classify": "classify", "regress": "regress", "constants": "predict",
        "total": "predict", "weights": "predict",
    }
    assert signatures["classify"].inputs["inputs"].dtype == "string"
    assert set(signatures["classify"].outputs) == {"classes", "scores"}
    assert signatures["total"].inputs["anything"].shape is None
    assert signatures["constants"].inputs == {}
    assert signatures["serving_default"].inputs["x"].tensor_name == "x:0"


def test_reference_dtypes_are_reported_by_value_and_loaded_through_a_copy(model_dirs, tmp_path):
    inspection = inspection_job(str(model_dirs["tf1_graph"]), str(tmp_path))
    weight = next(mg for mg in inspection.meta_graphs if mg.tags == ["serve"]).signatures["weights"].outputs["weight"]
    assert (weight.dtype, weight.declared_dtype, weight.shape) == ("float32", "float32_ref", [3, 2])
    assert inspection.model_dir == str(tmp_path / "loadable_model")
    assert inspection.resolved_model_dir == str(model_dirs["tf1_graph"])
    assert [check.name for check in inspection.checks] == ["reference_dtypes"]
    assert inspection.checks[0].severity == "info" and "weights/weight" in inspection.checks[0].message
    # The copy runs in the model stages' jobs: the reference output comes back as its value.
    choice = select_signature.fn(inspection, "weights", None)
    feeds = {"x": np.ones((2, 3), "float32")}
    save_npz(feeds, tmp_path / "inputs.npz")
    checks = output_checks_job(choice.model_dir, choice.tags, choice.model_format, choice.signature,
                               str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"), 1e-4, 1e-3)
    assert {c.name: c.status for c in checks}["output_dtypes"] == "passed"
    expected = np.arange(6, dtype="float32").reshape(3, 2) / 6
    np.testing.assert_array_equal(read_npz(tmp_path / "outputs.npz")["weight"], expected)


def test_several_meta_graphs_tag_choice_and_a_missing_tag_set(model_dirs, tmp_path):
    assert _select(model_dirs["tf1_graph"], tmp_path).tags == ["serve"]
    gpu = _select(model_dirs["tf1_graph"], tmp_path, tags=["gpu", "serve"])
    assert gpu.tags == ["gpu", "serve"] and list(gpu.meta_graph.signatures) == ["serving_default"]
    with pytest.raises(SignatureNotFound, match="no MetaGraph with tag-set tpu; available tag-sets: serve; gpu,serve"):
        _select(model_dirs["tf1_graph"], tmp_path, tags=["tpu"])


def test_pbtxt_is_read_like_pb(model_dirs, tmp_path):
    text = inspection_job(str(model_dirs["tf1_pbtxt"]), str(tmp_path / "text"))
    binary = inspection_job(str(model_dirs["tf1_graph"]), str(tmp_path / "binary"))
    assert text.saved_model_file.endswith("saved_model.pbtxt")
    assert [mg.signatures for mg in text.meta_graphs] == [mg.signatures for mg in binary.meta_graphs]


def test_keras2_and_tf2_formats_are_told_apart(model_dirs, tmp_path):
    keras2 = inspection_job(str(model_dirs["keras2_save"]), str(tmp_path))
    assert keras2.model_format == "keras2"
    signature = _select(model_dirs["keras2_save"], tmp_path).signature
    assert list(signature.inputs) == ["features"] and list(signature.outputs) == ["probabilities"]
    assert inspection_job(str(model_dirs["keras_export"]), str(tmp_path)).model_format == "tf2"


def test_serving_base_path_resolves_to_the_latest_numeric_version_or_the_one_asked(model_dirs, tmp_path):
    base = model_dirs["serving_base"]
    latest = inspection_job(str(base), str(tmp_path))
    assert latest.model_version == 2 and latest.resolved_model_dir == str(base / "2")
    assert "confidence" in latest.meta_graphs[0].signatures["serving_default"].outputs
    first = inspection_job(str(base), str(tmp_path), 1)
    assert first.model_version == 1 and first.model_dir == str(base / "1")
    with pytest.raises(NotASavedModel, match="no version 7; the numeric version folders are 1, 2"):
        resolve_model_source(base, 7)
    with pytest.raises(NotASavedModel, match="version 1 asked, but this is a SavedModel itself"):
        resolve_model_source(base / "1", 1)


def test_base_path_without_numeric_versions_is_a_clear_error(tmp_path):
    (tmp_path / "latest").mkdir()
    (tmp_path / "README").write_text("models go in numbered folders")
    with pytest.raises(NotASavedModel, match="not a TF Serving base path \\(no numeric version folders\\); "
                                             "found README, latest/"):
        resolve_model_source(tmp_path)
    (tmp_path / "3").mkdir()
    with pytest.raises(NotASavedModel, match="version 3 of base path .* holds no saved_model.pb"):
        resolve_model_source(tmp_path)


class _ManyVariables(tf.Module):
    """Enough variables that the checkpoint index spans several table blocks."""

    def __init__(self):
        super().__init__()
        self.weights = [tf.Variable(np.full((i % 7 + 1,), i, "float32"), name=f"weight_{i}") for i in range(300)]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def __call__(self, x):
        return {"total": x + tf.add_n([tf.reduce_sum(w) for w in self.weights])}


def test_variables_index_is_checked_across_blocks_and_truncation_is_caught(tmp_path):
    model_dir = tmp_path / "many"
    module = _ManyVariables()
    tf.saved_model.save(module, str(model_dir), signatures={"serving_default": module.__call__})
    assert inspection_job(str(model_dir), str(tmp_path)).model_format == "tf2"
    data = model_dir / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(NotASavedModel, match="truncated variables data: the index needs at least \\d+ bytes, found"):
        inspection_job(str(model_dir), str(tmp_path))


def test_examples_file_feeds_the_string_input(model_dirs, examples_file, tmp_path):
    signature = _select(model_dirs["tf1_graph"], tmp_path, key="classify").signature
    feeds = load_inputs_file(examples_file, signature, 8, 0)
    assert feeds["inputs"].shape == (5,)
    assert tf.train.Example.FromString(feeds["inputs"][0]).features.feature["f"].float_list.value == [0.0, 0.0, 1.0]
    save_npz(feeds, tmp_path / "inputs.npz")
    assert read_npz(tmp_path / "inputs.npz")["inputs"].tolist() == feeds["inputs"].tolist()  # trailing NULs kept


def test_examples_file_errors_say_what_was_expected(model_dirs, examples_file, tmp_path):
    with pytest.raises(InputsError, match="expected one in signature 'serving_default', found 0"):
        load_examples(examples_file, _select(model_dirs["tf1_graph"], tmp_path).signature, 8, 0)
    not_records = tmp_path / "examples.txt"
    not_records.write_text("one example per line\n")
    signature = _select(model_dirs["tf1_graph"], tmp_path, key="classify").signature
    with pytest.raises(InputsError, match="expected a .npz archive or a TFRecord file of tf.Example records"):
        load_examples(not_records, signature, 8, 0)


def test_unknown_rank_and_no_input_signatures_run(model_dirs, tmp_path):
    for key, feeds in (("total", {"anything": np.ones((2, 5), "float32")}), ("constants", {})):
        choice = _select(model_dirs["tf1_graph"], tmp_path, key=key)
        inputs = save_npz(feeds, tmp_path / f"{key}.npz")
        model = (choice.model_dir, choice.tags, choice.model_format, choice.signature)
        wrapper = {c.name: c for c in wrapper_parity_job(*model, str(inputs), choice.rtol)}
        checks = {c.name: c for c in output_checks_job(*model, str(inputs), str(tmp_path / f"{key}-out.npz"), 1e-4, 1e-3)}
        assert all(c.status != "failed" for c in [*wrapper.values(), *checks.values()]), (wrapper, checks)
        assert checks["finite_outputs"].status == "passed"
        assert checks["batch_consistency"].status == "skipped"
        if key == "total":
            assert wrapper["keras_wrapper_parity"].status == "passed"
            assert read_npz(tmp_path / "total-out.npz")["total"] == 10.0
        else:
            assert wrapper["keras_wrapper_built"].status == "skipped" and "no inputs" in wrapper["keras_wrapper_built"].message


@pytest.mark.usefixtures("prefect_server")
class TestThroughTheFlow:
    _run = staticmethod(partial(run_flow, export_onnx=False, benchmark=False))

    def test_tf1_classify_signature_runs_on_tf_example_records(self, model_dirs, examples_file, tracking_uri, workdir):
        report = self._run(model_dirs["tf1_graph"], tracking_uri, workdir, signature="classify",
                           inputs_path=str(examples_file))
        assert report.status == "passed", report.first_error() or report.failed_checks()
        assert report.model_format == "tf1-graph"
        checks = {check.name: check for check in report.checks}
        for name in ("keras_wrapper_parity", "output_dtypes", "finite_outputs", "deterministic", "batch_consistency"):
            assert checks[name].status == "passed", checks[name]
        assert report.inputs.shapes == {"inputs": [5]} and report.inputs.dtypes == {"inputs": "string"}

    def test_pbtxt_with_main_op_and_a_reference_output_passes(self, model_dirs, tracking_uri, workdir):
        report = self._run(model_dirs["tf1_pbtxt"], tracking_uri, workdir, signature="weights")
        assert report.status == "passed", report.first_error() or report.failed_checks()
        assert report.signatures["weights"].outputs["weight"].declared_dtype == "float32_ref"
        assert {check.name: check.status for check in report.checks}["reference_dtypes"] == "passed"

    def test_keras2_save_passes(self, model_dirs, tracking_uri, workdir):
        report = self._run(model_dirs["keras2_save"], tracking_uri, workdir)
        assert report.status == "passed", report.first_error() or report.failed_checks()
        assert report.model_format == "keras2"

    def test_serving_base_version_is_recorded_and_a_breaking_change_fails(self, model_dirs, tracking_uri, workdir):
        report = self._run(model_dirs["serving_base"], tracking_uri, workdir,
                           baseline=str(model_dirs["renamed_input"]))
        assert report.model_version == 2 and report.resolved_model_dir == str(model_dirs["serving_base"] / "2")
        assert [check.name for check in report.failed_checks()] == ["signature_compatibility"]
        assert "input 'inputs' removed or renamed" in report.failed_checks()[0].message
        run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
        assert run.data.tags["modelgate.status"] == "failed"

    def test_rows_that_depend_on_the_batch_fail_batch_consistency(self, model_dirs, tracking_uri, workdir):
        report = self._run(model_dirs["batch_mixing"], tracking_uri, workdir)
        assert [check.name for check in report.failed_checks()] == ["batch_consistency"]
        assert "row 0 of a batch of 4, output 'centred': expected the row run alone" in report.failed_checks()[0].message


def test_a_model_folder_copied_without_its_pb_is_not_resolved_as_a_base_path(model_dirs, tmp_path):
    copy = shutil.copytree(model_dirs["custom_signature"], tmp_path / "model")
    (copy / "saved_model.pb").unlink()
    with pytest.raises(NotASavedModel, match="found assets/, fingerprint.pb, variables/"):
        resolve_model_source(copy)


class _Asserts(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def __call__(self, x):
        with tf.control_dependencies([tf.debugging.assert_positive(x, message="x must be positive")]):
            return {"root": tf.sqrt(x)}


def test_a_signature_that_fails_at_run_time_says_why_in_one_line(tmp_path):
    module = _Asserts()
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": module.__call__})
    choice = _select(tmp_path / "model", tmp_path)
    inputs = save_npz({"x": -np.ones((2, 2), "float32")}, tmp_path / "inputs.npz")
    with pytest.raises(ModelRunError) as error:
        output_checks_job(choice.model_dir, choice.tags, choice.model_format, choice.signature, str(inputs),
                          str(tmp_path / "o.npz"), 0, 0)
    assert str(error.value).startswith("the signature failed: ") and "\n" not in str(error.value)
    assert "x must be positive" in str(error.value)

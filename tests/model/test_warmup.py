"""TF Serving's warm-up requests both ways: a SavedModel that ships them is validated on them, and a version that
passed gets them, of the inputs it passed with, in its registered copy."""

from functools import partial

import numpy as np
import pytest

from modelgate.execution.quiet import import_tensorflow
from modelgate.model.warmup import WARMUP_FILE
from modelgate.numerics.inputs import read_npz
from modelgate.tracking.registry import download_version, registry_client, resolve_version
from tests import wild_models
from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
_run = partial(run_flow, benchmark_batch_sizes=[1], benchmark_max_windows=3, benchmark_warmup=1)


def _checks(report) -> dict:
    return {check.name: check for check in report.checks}


def test_a_savedmodel_shipping_warmup_records_is_validated_on_them(tmp_path, tracking_uri, workdir):
    report = _run(wild_models.with_warmup_requests(tmp_path / "model"), tracking_uri, workdir)
    assert report.status == "passed", report.verdict_line()
    assert report.inputs.source == "warmup" and report.inputs.shapes == {"x": [3, 2]}
    np.testing.assert_array_equal(read_npz(report.inputs.path)["x"], wild_models.WARMUP_ROWS)
    assert _checks(report)["warmup_requests"].message.startswith("validated on the 2 warm-up records")


def test_malformed_warmup_records_fail_naming_the_record_and_synthesized_inputs_stand_in(
    tmp_path, tracking_uri, workdir
):
    report = _run(wild_models.with_malformed_warmup_requests(tmp_path), tracking_uri, workdir)
    assert report.status == "failed" and [c.name for c in report.failed_checks()] == ["warmup_requests"]
    assert "record 1: 24 bytes that do not parse as a PredictionLog" in report.failed_checks()[0].message
    assert report.inputs.source == "synthetic" and _checks(report)["finite_outputs"].status == "passed"


def test_a_registered_version_carries_warmup_requests_of_the_inputs_it_passed_with(
    model_dirs, tracking_uri, workdir
):
    from tensorflow_serving.apis import prediction_log_pb2

    tf = import_tensorflow()
    report = _run(model_dirs["keras_export"], tracking_uri, workdir, register_as="warm-gate", targets=[])
    assert report.status == "passed", report.verdict_line()
    client = registry_client(tracking_uri)
    folder = download_version(client, tracking_uri, resolve_version(client, f"models:/warm-gate/{report.registry.version}"),
                              workdir / "downloaded")
    [record] = [record.numpy() for record in tf.data.TFRecordDataset(str(folder / WARMUP_FILE))]
    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    assert (request.model_spec.name, request.model_spec.signature_name) == ("warm-gate", "serving_default")
    validated = read_npz(report.inputs.path)
    feeds = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert feeds.keys() == validated.keys()
    for name, value in feeds.items():
        np.testing.assert_array_equal(value, validated[name])
    outputs = tf.saved_model.load(str(folder)).signatures["serving_default"](**{k: tf.constant(v) for k, v in feeds.items()})
    assert all(np.isfinite(value.numpy()).all() for value in outputs.values())
    assert not (model_dirs["keras_export"] / WARMUP_FILE).exists()  # the user's own folder is left as it was


def test_records_for_another_signature_are_left_to_it_and_synthesized_inputs_stand_in(tmp_path):
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from modelgate.description import SignatureSpec, TensorSpec
    from modelgate.model.warmup import read_warmup_job

    tf = import_tensorflow()
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m", signature_name="embed"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, 2), "float32")))
    path = tmp_path / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
        writer.write(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog()).SerializeToString())
    spec = TensorSpec(dtype="float32", shape=[None, 2])
    signature = SignatureSpec(key="serving_default", method_name="tensorflow/serving/predict", inputs={"x": spec},
                              outputs={"y": spec})
    assert read_warmup_job(str(path), signature, str(tmp_path / "inputs.npz")) == (0, [])
    assert not (tmp_path / "inputs.npz").exists()
    path.write_bytes(b"not a TFRecord file at all")
    used, problems = read_warmup_job(str(path), signature, str(tmp_path / "inputs.npz"))
    assert used == 0 and problems[0].startswith("not a readable TFRecord file")

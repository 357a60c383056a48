"""Models registered the idiomatic MLflow way, `mlflow.tensorflow.log_model` of a Keras 3 model (a .keras file,
not a SavedModel): the SavedModel is derived in a sandboxed model process and validated, and the report and the
registry version say so."""

import keras
import mlflow
import mlflow.keras
import mlflow.tensorflow
import numpy as np
import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from modelgate.execution.quiet import import_tensorflow
from modelgate.model.flavors import keras_file_of
from modelgate.request import ValidationRequest
from modelgate.tracking.registry import RegistryError
from tasks.derive_saved_model import derive_saved_model
from tasks.resolve_source import resolve_source
from tests.flows import run_flow

tf = import_tensorflow()

FAST = {"export_onnx": False, "benchmark": False}


def _classifier(lambda_layer=False):
    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    if lambda_layer:
        hidden = keras.layers.Lambda(lambda t: t * 2)(hidden)
    return keras.Model(features, keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden))


def _log(tracking_uri, model, name, flavor=mlflow.tensorflow):
    """As a training pipeline would; pip_requirements given only so MLflow skips inferring them (seconds)."""
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = flavor.log_model(model, name="model", registered_model_name=name, pip_requirements=["tensorflow"])
    return str(info.registered_model_version)


@pytest.mark.usefixtures("prefect_server")
def test_a_keras_model_logged_with_the_tensorflow_flavor_is_derived_validated_and_tagged(tracking_uri, workdir):
    model = _classifier()
    client = MlflowClient(tracking_uri)
    champion = _log(tracking_uri, model, "flavor-pass")
    client.set_registered_model_alias("flavor-pass", "champion", champion)
    version = _log(tracking_uri, model, "flavor-pass")

    report = run_flow(f"models:/flavor-pass/{version}", tracking_uri, workdir, **FAST)
    assert report.status == "passed", report.first_error() or report.failed_checks()
    derived = report.derived_from
    assert (derived.flavor, derived.keras_file) == ("tensorflow", "data/model.keras")
    assert derived.keras_version == derived.saved_with_keras == keras.__version__
    assert report.model_dir == derived.saved_model_dir and derived.saved_model_dir.startswith(report.workdir)
    assert {s.name: s.status for s in report.stages}["derive-saved-model"] == "ok"
    assert {c.name: c.status for c in report.checks}["keras_wrapper_parity"] == "passed"
    # The SavedModel computes what the logged model computes.
    rows = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    derived_model = tf.saved_model.load(derived.saved_model_dir)
    np.testing.assert_allclose(derived_model.serve(rows).numpy(), model.predict(rows, verbose=0), rtol=1e-6)
    # champion, logged the same way, is derived too and compared: the same weights, no drift.
    assert report.baseline.derived_from.keras_file == "data/model.keras"
    assert {d["max_abs_diff"] for d in report.baseline.drift.values()} == {0.0}

    mv = client.get_model_version("flavor-pass", version)
    assert mv.tags["modelgate.status"] == "passed"
    assert mv.tags["modelgate.derived_from"] == "tensorflow flavor: data/model.keras"
    assert mv.tags["modelgate.derived_with_keras"] == keras.__version__
    assert (f"derived by modelgate from the MLflow `tensorflow` flavor's `data/model.keras` (saved with Keras "
            f"{keras.__version__}): loaded with Keras {keras.__version__} (safe_mode=True)") in mv.description


@pytest.mark.usefixtures("prefect_server")
def test_a_lambda_layer_is_refused_by_safe_mode_and_the_version_is_tagged_failed(tracking_uri, workdir):
    version = _log(tracking_uri, _classifier(lambda_layer=True), "flavor-lambda")
    report = run_flow(f"models:/flavor-lambda/{version}", tracking_uri, workdir, **FAST)
    assert report.status == "failed"
    [failed] = report.failed_checks()
    assert failed.name == "model_loads"
    assert failed.message.startswith("Keras cannot load model.keras with safe_mode=True: Requested the "
                                     "deserialization of a `Lambda` layer")
    stages = {s.name: s.status for s in report.stages}
    assert stages["derive-saved-model"] == "failed" and stages["inspect"] == "skipped"
    assert MlflowClient(tracking_uri).get_model_version("flavor-lambda", version).tags["modelgate.status"] == "failed"


def test_the_keras_flavor_is_derived_the_same_way(tracking_uri, workdir):
    version = _log(tracking_uri, _classifier(), "flavor-keras", flavor=mlflow.keras)
    request = ValidationRequest(source=f"models:/flavor-keras/{version}", tracking_uri=tracking_uri)
    source = resolve_source.fn(request, str(workdir))
    assert (source.keras_flavor, source.keras_file.endswith("data/model.keras")) == ("keras", True)
    derived = derive_saved_model.fn(source, request, str(workdir))
    assert derived.derived_from.flavor == "keras"
    assert (workdir / "derived_saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("data, expected", [
    ("data", "the tensorflow flavor holds an HDF5 file, which Keras loads without safe mode"),
    ("../elsewhere", "the tensorflow flavor's data folder lies outside the version's files"),
], ids=["hdf5", "outside"])
def test_a_flavor_keras_cannot_load_safely_from_the_files_is_refused(data, expected, tmp_path):
    # As older MLflow and TensorFlow versions logged it: save_format h5, a model.h5 in the data folder.
    files = tmp_path / "files"
    (tmp_path / "data").mkdir()
    (files / "data").mkdir(parents=True)
    for folder in (files / "data", tmp_path / "data"):
        _classifier().save(folder / "model.h5")
    mlmodel = Model()
    mlmodel.add_flavor("tensorflow", data=data, model_type="keras", save_format="h5")
    mlmodel.save(str(files / "MLmodel"))
    with pytest.raises(RegistryError, match=expected):
        keras_file_of(files)

"""A registered version is an MLflow model: its MLmodel carries the signature's tensor-spec schema, a pyfunc flavor
that runs the signature and, beside it, ONNX's file as MLflow's onnx flavor. MLflow's own API loads it, in a fresh
interpreter (loading runs the model's code: never in modelgate's process), and its predictions are TensorFlow's."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from modelgate.model.flavors import version_model
from modelgate.model.savedmodel import inspect_saved_model
from modelgate.report import ConversionRecord, MlflowSection, TargetSection, ValidationReport
from modelgate.request import ValidationRequest
from modelgate.service import cli
from modelgate.tracking.mlflow_model import CODE_FOLDER, ENVIRONMENT_FILES, LOADER, MLMODEL_FILE, write_mlmodel
from modelgate.tracking.registry import download_version, register_files, registered_copy, registry_client, resolve_version
from tests import models
from tests.flows import run_flow
from tests.tracking.test_registry import FAST, _register

# What a user of the registry runs: MLflow's API only, against the version's URI; TensorFlow on the same inputs.
LOAD_AND_COMPARE = """
import json, sys
import mlflow, mlflow.onnx, mlflow.pyfunc, numpy as np
tracking_uri, model_uri, saved_model, signature_key, inputs_npz, runner = sys.argv[1:7]
mlflow.set_tracking_uri(tracking_uri)
mlflow.set_registry_uri(tracking_uri)
model = mlflow.pyfunc.load_model(model_uri)
schema = model.metadata.get_input_schema()
inputs = dict(np.load(inputs_npz))
predicted = model.predict(inputs)
import tensorflow as tf
if runner == "session":  # a TF1 graph, as TF Serving runs it
    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default():
        signature = tf.compat.v1.saved_model.load(session, ["serve"], saved_model).signature_def[signature_key]
    expected = session.run({name: info.name for name, info in signature.outputs.items()},
                           {signature.inputs[name].name: value for name, value in inputs.items()})
else:
    function = tf.saved_model.load(saved_model).signatures[signature_key]
    expected = {name: value.numpy() for name, value in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
found = {
    "inputs": {spec.name: [str(spec.type), list(spec.shape)] for spec in schema.inputs},
    "outputs": {spec.name: list(spec.shape) for spec in model.metadata.get_output_schema().inputs},
    "max_abs_diff": {name: float(np.abs(predicted[name] - expected[name]).max()) for name in expected},
    "shapes": {name: list(value.shape) for name, value in predicted.items()},
}
if "onnx" in model.metadata.flavors:
    found["onnx_outputs"] = [output.name for output in mlflow.onnx.load_model(model_uri).graph.output]
print(json.dumps(found))
"""


def _load_and_compare(tracking_uri: str, model_uri: str, saved_model: Path, signature_key: str, inputs: Path,
                      runner: str = "function") -> dict:
    command = [sys.executable, "-c", LOAD_AND_COMPARE, tracking_uri, model_uri, str(saved_model), signature_key,
               str(inputs), runner]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _onnx_file(path: Path) -> Path:
    """A real ONNX file standing for the onnx target's artifact (its conversion is not what is tested here)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input1"], ["output"])], "registered",
        [helper.make_tensor_value_info("input1", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _report(saved_model: Path, signature: str, tracking_uri: str, tmp_path: Path, **fields) -> ValidationReport:
    """The report of a validation that passed, as far as a version's MLmodel reads it, with a real MLflow run."""
    meta_graph = inspect_saved_model(saved_model)[0]
    client = registry_client(tracking_uri)
    experiment = client.create_experiment(tmp_path.name, artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    return ValidationReport(
        source=str(saved_model), request=ValidationRequest(source=str(saved_model)), workdir=str(tmp_path),
        status="passed", signature=signature, signatures=meta_graph.signatures, tags=meta_graph.tags,
        mlflow=MlflowSection(tracking_uri=tracking_uri, experiment_id=experiment, run_id=run.info.run_id), **fields)


def test_a_registered_copy_is_an_mlflow_model_that_mlflow_loads_and_that_predicts_what_tensorflow_does(
    tmp_path, tracking_uri
):
    saved_model = models.custom_signature(tmp_path / "model")
    onnx_file = _onnx_file(tmp_path / "onnx" / "model.onnx")
    report = _report(saved_model, "my_custom_signature", tracking_uri, tmp_path, targets={"onnx": TargetSection(
        name="onnx", artifact_format="onnx", status="passed", conversion=ConversionRecord(path=str(onnx_file)))})
    folder = registered_copy(saved_model, report.targets, tmp_path / "registered_model")
    written = write_mlmodel(folder, report, folder, report.targets)
    assert {path.relative_to(folder).as_posix() for path in written} == {
        MLMODEL_FILE, *ENVIRONMENT_FILES, f"{CODE_FOLDER}/{LOADER.name}"}
    mlmodel = Model.load(str(folder / MLMODEL_FILE))
    pyfunc = mlmodel.flavors["python_function"]
    assert pyfunc["loader_module"] == "modelgate_pyfunc" and "data" not in pyfunc  # the SavedModel is the root
    assert pyfunc["config"] == {"signature_key": "my_custom_signature", "tags": ["serve"], "op_libraries": [],
                                "runner": "function"}
    assert mlmodel.flavors["onnx"]["data"] == "model.onnx"
    assert "tensorflow==" in (folder / "requirements.txt").read_text()
    assert version_model(folder) == (folder, None)  # validating the version again finds its SavedModel
    version = register_files(registry_client(tracking_uri), report.mlflow.run_id, folder, "mlmodel-copy")

    rng = np.random.default_rng(0)
    np.savez(inputs := tmp_path / "inputs.npz", input1=rng.standard_normal((3, 4), dtype=np.float32),
             input2=rng.standard_normal((3, 1), dtype=np.float32))
    found = _load_and_compare(tracking_uri, version.uri, saved_model, "my_custom_signature", inputs)
    assert found["inputs"] == {"input1": ["float32", [-1, 4]], "input2": ["float32", [-1, 1]]}
    assert found["outputs"] == {"output": [-1, 3], "auxiliary_output": [-1]}
    assert found["shapes"] == {"output": [3, 3], "auxiliary_output": [3]}
    assert found["max_abs_diff"] == {"output": 0.0, "auxiliary_output": 0.0}
    assert found["onnx_outputs"] == ["output"]


def test_a_tf1_graph_s_version_runs_in_a_session_as_tf_serving_runs_it(tmp_path, tracking_uri):
    # Its weight is a reference-typed variable, which TF2's loader refuses: the pyfunc feeds a TF1 Session.
    saved_model = models.tf1_graph(tmp_path / "tf1")
    report = _report(saved_model, "weights", tracking_uri, tmp_path, model_format="tf1-graph")
    folder = registered_copy(saved_model, {}, tmp_path / "registered_model")
    write_mlmodel(folder, report, folder)
    assert Model.load(str(folder / MLMODEL_FILE)).flavors["python_function"]["config"]["runner"] == "session"
    version = register_files(registry_client(tracking_uri), report.mlflow.run_id, folder, "mlmodel-tf1")
    np.savez(inputs := tmp_path / "inputs.npz", x=np.arange(6, dtype=np.float32).reshape(2, 3))
    found = _load_and_compare(tracking_uri, version.uri, saved_model, "weights", inputs, runner="session")
    assert found["inputs"] == {"x": ["float32", [-1, 3]]}
    assert found["shapes"] == {"y": [2, 2], "weight": [3, 2]}
    assert found["max_abs_diff"] == {"y": 0.0, "weight": 0.0}


_validate = partial(run_flow, **FAST)


@pytest.mark.usefixtures("prefect_server")
def test_a_validated_registry_version_becomes_an_mlflow_model_still_signed_and_predicting_as_tensorflow(
    model_dirs, tracking_uri, workdir, signing_keys, capsys
):
    private, public = signing_keys
    version = _register(tracking_uri, "pyfunc-gate", model_dirs["keras_export"])
    uri = f"models:/pyfunc-gate/{version}"
    report = _validate(uri, tracking_uri, workdir, signing_key=str(private), alias=None)
    assert report.status == "passed", report.first_error() or report.failed_checks()

    client = registry_client(tracking_uri)
    files = download_version(client, tracking_uri, resolve_version(client, uri), workdir / "downloaded")
    assert {MLMODEL_FILE, *ENVIRONMENT_FILES, "saved_model.pb"} <= {path.name for path in files.iterdir()}
    signature = Model.load(str(files / MLMODEL_FILE)).signature
    assert set(signature.inputs.input_names()) == set(report.signatures["serving_default"].inputs)
    capsys.readouterr()
    assert cli.main(["verify", uri, "--public-key", str(public), "--tracking-uri", tracking_uri]) == 0  # MLmodel signed

    # The validation's own inputs, through MLflow's pyfunc, against TensorFlow's signature on the same rows.
    found = _load_and_compare(tracking_uri, uri, model_dirs["keras_export"], "serving_default",
                              Path(report.inputs.path))
    assert set(found["max_abs_diff"]) == {"scores", "probabilities"}
    assert max(found["max_abs_diff"].values()) < 1e-6
    run = MlflowClient(tracking_uri).get_run(report.mlflow.run_id)
    assert not [key for key in run.data.metrics if key.startswith("latency_")]

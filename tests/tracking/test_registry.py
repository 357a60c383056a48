"""The registry gate against a real MLflow registry (SQLite store) and a real Prefect server."""

from functools import partial

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from modelgate.model.samples import build_sample_model
from modelgate.request import ValidationRequest
from modelgate.tracking.registry import validator_version
from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

FAST = {"export_onnx": False, "benchmark_batch_sizes": [1], "benchmark_max_windows": 3, "benchmark_warmup": 1}


def _register(tracking_uri, name, model_dir):
    """As a training pipeline would: log the SavedModel folder to a run, register that folder."""
    client = MlflowClient(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="saved_model")
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    return str(client.create_model_version(name, f"{run.info.artifact_uri}/saved_model", run_id=run.info.run_id).version)


_validate = partial(run_flow, **FAST)


def test_a_registry_version_is_validated_tagged_described_and_aliased(model_dirs, tracking_uri, workdir, signing_keys):
    client = MlflowClient(tracking_uri)
    champion = _register(tracking_uri, "gate-pass", model_dirs["keras_export"])
    client.set_registered_model_alias("gate-pass", "champion", champion)
    version = _register(tracking_uri, "gate-pass", model_dirs["keras_export"])

    report = _validate(f"models:/gate-pass/{version}", tracking_uri, workdir, signing_key=str(signing_keys[0]))
    assert report.status == "passed", report.first_error() or report.failed_checks()
    assert (report.registry.name, report.registry.version) == ("gate-pass", version)
    mv = client.get_model_version("gate-pass", version)
    assert mv.tags["modelgate.status"] == "passed"
    assert mv.tags["modelgate.validator_version"] == validator_version()
    assert mv.tags["modelgate.run_id"] == report.mlflow.run_id
    assert float(mv.tags["modelgate.p50_ms.tensorflow.cpu.bs1"]) > 0
    assert "PASSED" in mv.description and report.mlflow.run_id in mv.description
    assert str(client.get_model_version_by_alias("gate-pass", "validated").version) == version
    assert str(client.get_model_version_by_alias("gate-pass", "champion").version) == champion  # never moved
    # The same model behind champion: compatible, no drift, latency measured side by side.
    assert report.baseline.source == f"models:/gate-pass/{champion}"
    assert {d["max_abs_diff"] for d in report.baseline.drift.values()} == {0.0}
    assert report.baseline.latency_change_pct is not None
    assert mv.tags["modelgate.baseline"] == f"models:/gate-pass/{champion}"
    assert mv.tags["modelgate.baseline_compatible"] == "true"
    assert "Compared with baseline" in mv.description
    artifacts = {a.path for a in client.list_artifacts(report.mlflow.run_id)}
    assert "report.html" in artifacts
    html = (workdir / "out").glob("*/report.html")
    assert "PASSED" in next(html).read_text()


def test_the_baseline_comparison_catches_drift_and_a_breaking_signature(
    model_dirs, tracking_uri, workdir, tmp_path, signing_keys
):
    client = MlflowClient(tracking_uri)
    champion = _register(tracking_uri, "gate-drift", model_dirs["keras_export"])
    client.set_registered_model_alias("gate-drift", "champion", champion)
    retrained = _register(tracking_uri, "gate-drift", build_sample_model(tmp_path / "retrained", seed=8))
    report = _validate(f"models:/gate-drift/{retrained}", tracking_uri, workdir, signing_key=str(signing_keys[0]))
    assert report.status == "passed", report.first_error() or report.failed_checks()
    assert report.baseline.drift["scores"]["max_abs_diff"] > 0.01  # other weights, other outputs
    assert float(client.get_model_version("gate-drift", retrained).tags["modelgate.drift_max_abs"]) > 0.01

    breaking = _register(tracking_uri, "gate-drift", model_dirs["custom_signature"])
    report = _validate(f"models:/gate-drift/{breaking}", tracking_uri, workdir)
    assert report.status == "failed"
    assert [c.name for c in report.failed_checks()] == ["signature_compatibility"]
    mv = client.get_model_version("gate-drift", breaking)
    assert mv.tags["modelgate.baseline_compatible"] == "false"
    assert "serving_default' removed" in mv.description
    assert report.baseline.skipped_reason == "the baseline has no signature 'my_custom_signature'"
    assert str(client.get_model_version_by_alias("gate-drift", "validated").version) == retrained


def test_alias_source_resolves_to_its_version(model_dirs, tracking_uri, workdir):
    client = MlflowClient(tracking_uri)
    version = _register(tracking_uri, "gate-alias", model_dirs["custom_signature"])
    client.set_registered_model_alias("gate-alias", "candidate", version)
    report = _validate("models:/gate-alias@candidate", tracking_uri, workdir, alias=None)
    assert report.status == "passed", report.first_error()
    assert report.registry.version == version
    assert client.get_model_version("gate-alias", version).tags["modelgate.status"] == "passed"
    assert "validated" not in client.get_registered_model("gate-alias").aliases


def test_a_failing_path_source_is_registered_tagged_failed_without_alias(model_dirs, tracking_uri, workdir):
    report = _validate(str(model_dirs["nan_outputs"]), tracking_uri, workdir, register_as="gate-fail", benchmark=False)
    assert report.status == "failed"
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version("gate-fail", report.registry.version)
    assert mv.tags["modelgate.status"] == "failed"
    assert mv.tags["modelgate.failed_checks"] == "finite_outputs"
    assert "finite_outputs" in mv.description and "FAILED" in mv.description
    assert client.get_registered_model("gate-fail").aliases == {}
    files = {a.path for a in client.list_artifacts(report.mlflow.run_id, "registered_model")}
    assert "registered_model/saved_model.pb" in files  # the SavedModel at the root: a TF Serving version folder


def test_an_unknown_registry_version_is_an_error_that_says_so(tracking_uri, workdir):
    report = _validate("models:/no-such-model/3", tracking_uri, workdir)
    assert report.status == "error"
    assert "models:/no-such-model/3" in report.first_error()
    assert MlflowClient(tracking_uri).get_run(report.mlflow.run_id).info.status == "FAILED"


def test_champion_is_refused_as_the_alias_to_set():
    with pytest.raises(ValueError, match="champion"):
        ValidationRequest(source="x", alias="champion")

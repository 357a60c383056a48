"""validate-new-versions against served deployments: a real Prefect server, runner and MLflow registry."""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client

from flows.new_versions import VALIDATE_DEPLOYMENT, validate_new_versions
from tests.signing_keys import key_pair
from tests.tracking.test_registry import FAST, _register

pytestmark = pytest.mark.slow  # `modelgate serve` as a process, and five validations through it


def _tick(tracking_uri, workdir, name, base_paths=()):
    fields = {**FAST, "output_dir": str(workdir / "out"), "report_path": str(workdir / "report.json"),
              "signing_key": str(key_pair(workdir / "keys")[0])}
    return validate_new_versions(model_names=[name], base_paths=[str(p) for p in base_paths], request_fields=fields,
                                 tracking_uri=tracking_uri, timeout_s=900)


def _flow_runs_for(source):
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(VALIDATE_DEPLOYMENT)
        runs = client.read_flow_runs(limit=200)
    return [r for r in runs if r.deployment_id == deployment.id and r.parameters["request"]["source"] == source]


def test_each_new_version_is_validated_once_per_validator_version(served, model_dirs, tracking_uri, workdir):
    first = _register(tracking_uri, "scheduled", model_dirs["keras_export"])
    second = _register(tracking_uri, "scheduled", model_dirs["nan_outputs"])

    rows = _tick(tracking_uri, workdir, "scheduled")
    verdicts = {row["version"]: (row["flow_run_state"], row["verdict"]) for row in rows}
    assert verdicts == {f"models:/scheduled/{first}": ("COMPLETED", "passed"),
                        f"models:/scheduled/{second}": ("FAILED", "failed")}  # a rejection fails its flow run
    client = MlflowClient(tracking_uri)
    assert str(client.get_model_version_by_alias("scheduled", "validated").version) == first
    assert "finite_outputs" in client.get_model_version("scheduled", second).description

    assert _tick(tracking_uri, workdir, "scheduled") == []  # nothing new: nothing validated

    third = _register(tracking_uri, "scheduled", model_dirs["custom_signature"])
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda _: _tick(tracking_uri, workdir, "scheduled"), range(2)))
    assert [len(rows) for rows in together] == [1, 1]
    assert together[0][0]["flow_run"] == together[1][0]["flow_run"]
    assert len(_flow_runs_for(f"models:/scheduled/{third}")) == 1
    assert client.get_model_version("scheduled", third).tags["modelgate.status"] == "passed"


def test_new_folders_of_a_tf_serving_base_path_are_validated_once(served, model_dirs, tracking_uri, workdir):
    base = workdir / "serving"
    base.mkdir()
    shutil.copytree(model_dirs["custom_signature"], base / "1")
    rows = _tick(tracking_uri, workdir, "no-such-model", base_paths=[base])
    assert [(Path(r["version"]).name, r["verdict"]) for r in rows] == [("1", "passed")]
    shutil.copytree(model_dirs["nan_outputs"], base / "2")
    rows = _tick(tracking_uri, workdir, "no-such-model", base_paths=[base])
    assert [(Path(r["version"]).name, r["verdict"]) for r in rows] == [("2", "failed")]
    assert _tick(tracking_uri, workdir, "no-such-model", base_paths=[base]) == []

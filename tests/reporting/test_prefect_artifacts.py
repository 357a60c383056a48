"""The artifacts a flow run shows in Prefect's UI, read back through Prefect's API: links to the MLflow run and
the registry version where the tracking store is a server, figures rounded as people read them."""

import json

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.runtime import flow_run

from modelgate.numerics.benchmark_plan import SAMPLES_PREFIX
from modelgate.report import MlflowSection, RegistrySection
from tasks.benchmark_report import benchmark_report
from tasks.render_report import link_registry_version, render_report
from tests.target_reports import targets_report

pytestmark = pytest.mark.usefixtures("prefect_server")


@flow(name="artifacts-of-a-report")
def _show(report, workdir: str) -> str:
    benchmark_report(report, workdir)
    render_report(report, workdir, None)
    link_registry_version(report)
    return flow_run.id


def _artifacts(report, workdir) -> dict:
    samples = {f"{b.runtime}/{b.device}/bs{b.batch_size}": [b.p50_ms, b.p90_ms] for b in report.benchmarks}
    (workdir / f"{SAMPLES_PREFIX}all.json").write_text(json.dumps(samples))
    flow_run_id = _show(report, str(workdir))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def test_on_a_tracking_server_the_run_and_the_version_are_links_and_the_figures_are_rounded(tmp_path):
    report = targets_report(tmp_path, tracking_uri="http://mlflow.example:5000/")
    report.mlflow = MlflowSection(tracking_uri="http://mlflow.example:5000/", experiment_id="4", run_id="abc123")
    report.registry = RegistrySection(name="fraud", version="7")
    artifacts = _artifacts(report, tmp_path)

    # Prefect keeps a link artifact as the markdown of a link.
    assert artifacts["mlflow-run"].data == "[MLflow run abc123](http://mlflow.example:5000/#/experiments/4/runs/abc123)"
    assert artifacts["mlflow-model-version"].data.endswith("](http://mlflow.example:5000/#/models/fraud/versions/7)")
    table = artifacts["benchmark-figures"]
    assert len(table.description) < 120
    rows = json.loads(table.data)
    assert len(rows) == len(report.benchmarks)
    figures = [value for row in rows for value in row.values() if isinstance(value, float)]
    assert figures and all(len(repr(value)) <= 7 for value in figures), figures  # 2.2, not 2.2000000000000002
    assert rows[0]["p90_ms"] == 2.2 and rows[0]["throughput"] == 476.2


def test_without_a_tracking_server_the_run_says_where_it_is_kept_and_links_nothing(tmp_path):
    report = targets_report(tmp_path, tracking_uri="sqlite:///mlflow.db")
    report.mlflow = MlflowSection(tracking_uri="sqlite:///mlflow.db", experiment_id="4", run_id="abc123")
    report.registry = RegistrySection(name="fraud", version="7")
    artifacts = _artifacts(report, tmp_path)

    text = artifacts["mlflow-run"].data
    assert artifacts["mlflow-run"].type == "markdown" and "](" not in text
    assert "abc123" in text and f"mlflow ui --backend-store-uri sqlite:///{tmp_path.cwd()}/mlflow.db" in text
    assert "mlflow-model-version" not in artifacts

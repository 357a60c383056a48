from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.report import ValidationReport
from modelgate.reporting import html_report
from modelgate.reporting.recorder import run_logger
from modelgate.stages import Artifacts
from modelgate.tracking.registry import describe, run_url


def mlflow_server(report: ValidationReport) -> str | None:
    """The tracking server's address, when the run is on one (a file or database store has no web page)."""
    uri = report.mlflow.tracking_uri or ""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def version_url(report: ValidationReport) -> str | None:
    """The registry version's page in MLflow's UI, on a tracking server."""
    server = mlflow_server(report)
    if server and report.registry.name and report.registry.version:
        return f"{server}/#/models/{report.registry.name}/versions/{report.registry.version}"
    return None


def local_store(report: ValidationReport) -> str:
    """Where a run without a server is kept, and how to open it in MLflow's UI."""
    uri = report.mlflow.tracking_uri or ""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        uri = f"sqlite:///{database}"
        where = f"the local database `{database}`"
    else:
        where = f"the tracking store `{uri}`"
    return (f"MLflow run `{report.mlflow.run_id}` (experiment `{report.request.mlflow.experiment_name}`) is kept in "
            f"{where}, which has no web address. To browse it: `mlflow ui --backend-store-uri {uri}`.")


@task(name="render-report", cache_policy=NO_CACHE)
def render_report(report: ValidationReport, workdir: str, flow_run_url: str | None) -> Artifacts:
    """report.html (written again when the last stage is done), and the verdict as Prefect artifacts on the flow
    run, with a link to the MLflow run where the tracking store is a server."""
    page = html_report.write(report, Path(workdir) / "report.html")
    create_markdown_artifact(key="validation-report", markdown=describe(report, flow_run_url),
                             description=f"modelgate verdict for {report.source}")
    url = run_url(report)
    if url:
        create_link_artifact(key="mlflow-run", link=url, link_text=f"MLflow run {report.mlflow.run_id}")
    else:
        create_markdown_artifact(key="mlflow-run", markdown=local_store(report))
    return Artifacts(artifacts={"report.html": str(page)})


def link_registry_version(report: ValidationReport) -> None:
    """After publish-registry: a link to the version's page in MLflow's registry, where the tracking store is a
    server. Called from the flow, so the artifact is the flow run's."""
    url = version_url(report)
    if not url:
        return
    try:
        create_link_artifact(key="mlflow-model-version", link=url,
                             link_text=f"{report.registry.name} version {report.registry.version} in MLflow's registry")
    except Exception as exc:  # noqa: BLE001 - a link is no part of the verdict
        run_logger().warning("could not link the registry version: %s", exc)

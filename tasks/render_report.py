from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.report import ValidationReport
from modelgate.reporting import html_report
from modelgate.stages import Artifacts
from modelgate.tracking.registry import describe, run_link, run_url


@task(name="render-report", cache_policy=NO_CACHE)
def render_report(report: ValidationReport, workdir: str, flow_run_url: str | None) -> Artifacts:
    """report.html for MLflow, and the verdict as Prefect artifacts on the flow run."""
    page = html_report.write(report, Path(workdir) / "report.html")
    create_markdown_artifact(key="validation-report", markdown=describe(report, flow_run_url),
                             description=f"modelgate verdict for {report.source}")
    url = run_url(report)
    if url:
        create_link_artifact(key="mlflow-run", link=url, link_text="MLflow run")
    else:
        create_markdown_artifact(key="mlflow-run", markdown=run_link(report))
    return Artifacts(artifacts={"report.html": str(page)})

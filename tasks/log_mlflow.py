from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.report import ValidationReport
from modelgate.request import ValidationRequest
from modelgate.stages import LoggedModels, MlflowRunOpened
from modelgate.tracking import mlflow_store


@task(name="open-mlflow-run", cache_policy=NO_CACHE)
def open_mlflow_run(request: ValidationRequest, workdir: str, flow_run_url: str | None) -> MlflowRunOpened:
    """Open the run first, so that every later stage's report lands in MLflow as it is written."""
    return MlflowRunOpened(section=mlflow_store.open_run(request, workdir, flow_run_url))


@task(name="log-mlflow", cache_policy=NO_CACHE)
def log_to_mlflow(report: ValidationReport) -> LoggedModels:
    """Params, metrics, artifacts (report, signatures, each target's files, plots, logs), the matrix and the
    status tag; the targets logged as MLflow models say where."""
    return LoggedModels(uris=mlflow_store.log_results(report))

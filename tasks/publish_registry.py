from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.registry import RegistryVersion, register_files, registry_client, write_back
from modelgate.schemas import RegistryOutcome, RegistrySection, ResolvedSource, ValidationReport, ValidationRequest


@task(name="publish-registry", cache_policy=NO_CACHE)
def publish_registry(
    report: ValidationReport, source: ResolvedSource, request: ValidationRequest, flow_run_url: str | None
) -> RegistryOutcome:
    """Write the verdict to the registry version validated, or register a path source first (register_as)."""
    client = registry_client(report.mlflow.tracking_uri)
    actions = []
    # flows/validate.py runs this stage only for a registry source or with register_as.
    if source.registry_name:
        version = RegistryVersion(source.registry_name, source.registry_version)
    else:
        version = register_files(client, report.mlflow.run_id, Path(source.model_dir), report.onnx.path,
                                 request.register_as)
        actions.append(f"registered {version.uri}")
    actions += write_back(client, version, report, request.alias, flow_run_url)
    return RegistryOutcome(section=RegistrySection(name=version.name, version=version.version, actions=actions))

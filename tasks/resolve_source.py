from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.model.flavors import version_model
from modelgate.request import ValidationRequest
from modelgate.stages import ResolvedSource
from modelgate.tracking.registry import download_version, is_registry_uri, registry_client, resolve_version


@task(name="resolve-source", cache_policy=NO_CACHE)
def resolve_source(request: ValidationRequest, workdir: str) -> ResolvedSource:
    """A local SavedModel directory for the source: the path itself, or a registry version's files; for a
    version logged with a Keras flavor, its Keras file (derive-saved-model exports the SavedModel)."""
    if not is_registry_uri(request.source):
        return ResolvedSource(source=request.source, model_dir=request.source)
    tracking_uri = request.resolved_tracking_uri()
    client = registry_client(tracking_uri)
    version = resolve_version(client, request.source)
    files = download_version(client, tracking_uri, version, Path(workdir) / "source")
    model_dir, keras_file = version_model(files)
    return ResolvedSource(
        source=request.source, model_dir=str(model_dir), registry_name=version.name, registry_version=version.version,
        version_files=str(files),
        keras_flavor=keras_file.flavor if keras_file else None, keras_file=str(keras_file.path) if keras_file else None,
    )

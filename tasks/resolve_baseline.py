from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelRejected
from modelgate.execution.sandbox import limits_of
from modelgate.model.flavors import derive_from_keras_file, version_model
from modelgate.request import ValidationRequest
from modelgate.stages import BaselineChoice, ResolvedSource
from modelgate.tracking.registry import RegistryVersion, download_version, is_registry_uri, registry_client, resolve_version


@task(name="resolve-baseline", cache_policy=NO_CACHE)
def resolve_baseline(request: ValidationRequest, source: ResolvedSource, workdir: str) -> BaselineChoice:
    """The version to compare with: a path or models:/ URI as asked, or the version behind an alias
    (default champion) of the same registered model. No baseline is a skip, not an error; a baseline logged
    with a Keras flavor is derived as the source would be (see derive-saved-model), and one Keras refuses is a skip."""
    spec = request.baseline
    if not spec:
        return BaselineChoice(skipped_reason="no baseline asked")
    tracking_uri = request.resolved_tracking_uri()
    client = registry_client(tracking_uri)
    destination = Path(workdir) / "baseline"
    if is_registry_uri(spec):
        version = resolve_version(client, spec)
    elif Path(spec).exists():
        return BaselineChoice(source=spec, model_dir=spec)
    else:
        name = source.registry_name or request.mlflow.register_as
        if not name:
            return BaselineChoice(skipped_reason=f"alias '{spec}' needs a registry source or --register-as")
        try:
            version = RegistryVersion(name, str(client.get_model_version_by_alias(name, spec).version))
        except MlflowException:
            return BaselineChoice(skipped_reason=f"registered model '{name}' has no version behind '{spec}'")
        if version.version == source.registry_version:
            return BaselineChoice(skipped_reason=f"the version validated is '{spec}' itself")
    model_dir, keras_file = version_model(download_version(client, tracking_uri, version, destination))
    derived = None
    if keras_file:
        try:
            derived = derive_from_keras_file(keras_file, Path(workdir) / "derived_baseline", limits_of(request),
                                             "resolve-baseline", Path(workdir) / "resolve-baseline.log")
        except ModelRejected as exc:
            return BaselineChoice(skipped_reason=f"baseline {version.uri}: {exc}")
        model_dir = derived.saved_model_dir
    return BaselineChoice(
        source=version.uri, model_dir=str(model_dir), registry_name=version.name, registry_version=version.version,
        derived_from=derived,
    )

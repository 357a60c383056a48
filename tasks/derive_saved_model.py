from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.sandbox import limits_of
from modelgate.model.flavors import KerasFile, derive_from_keras_file
from modelgate.request import ValidationRequest
from modelgate.stages import DerivedSavedModel, ResolvedSource


@task(name="derive-saved-model", cache_policy=NO_CACHE)
def derive_saved_model(source: ResolvedSource, request: ValidationRequest, workdir: str) -> DerivedSavedModel:
    """The SavedModel of a registry version's Keras flavor, exported by Keras in a sandboxed model process."""
    keras_file = KerasFile(source.keras_flavor, Path(source.keras_file), Path(source.model_dir))
    target = Path(workdir) / "derived_saved_model"
    derived = derive_from_keras_file(keras_file, target, limits_of(request), "derive-saved-model",
                                     Path(workdir) / "derive-saved-model.log")
    return DerivedSavedModel(model_dir=str(target), derived_from=derived)

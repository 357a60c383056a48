"""MLflow's Keras flavors: a model logged with `mlflow.tensorflow.log_model` (or `mlflow.keras.log_model`) under
Keras 3 holds a Keras file, `data/model.keras`, not a SavedModel.

modelgate derives the SavedModel from it: Keras loads the file with safe_mode=True (no Lambda bytecode, no class
it does not know; compile=False, so no optimizer or loss is rebuilt) and `model.export` writes the SavedModel.
Loading builds the model's layers, so both run in a sandboxed model process; the SavedModel is then inspected
and scanned like any other before anything loads it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from modelgate.execution.jobs import keras_export_job
from modelgate.execution.sandbox import Limits, run_isolated
from modelgate.report import DerivedFrom
from modelgate.tracking.registry import RegistryError, find_saved_model_dir

KERAS_FLAVORS = ("tensorflow", "keras")
KERAS_FILE = "model.keras"
HDF5_FILE = "model.h5"


@dataclass(frozen=True)
class KerasFile:
    flavor: str
    path: Path
    files: Path  # the version's files, where MLmodel is


def keras_file_of(files: Path) -> KerasFile | None:
    """The Keras file the version's MLmodel points to; None where no Keras flavor holds one (a flavor that
    saved a SavedModel instead is found as any SavedModel is)."""
    from mlflow.models import Model

    mlmodel = files / "MLmodel"
    if not mlmodel.is_file():
        return None
    flavors = Model.load(str(mlmodel)).flavors
    for flavor in (name for name in KERAS_FLAVORS if name in flavors):
        data = files / flavors[flavor].get("data", "data")
        if not data.resolve().is_relative_to(files.resolve()):
            raise RegistryError(f"{mlmodel}: the {flavor} flavor's data folder lies outside the version's files")
        if (data / HDF5_FILE).is_file():
            raise RegistryError(
                f"{data / HDF5_FILE}: the {flavor} flavor holds an HDF5 file, which Keras loads without safe mode; "
                "log the model as .keras, or register its SavedModel"
            )
        if (data / KERAS_FILE).is_file():
            if not zipfile.is_zipfile(data / KERAS_FILE):
                raise RegistryError(f"{data / KERAS_FILE}: not a Keras archive (a .keras file is a zip)")
            return KerasFile(flavor, data / KERAS_FILE, files)
    return None


def _saved_with_keras(path: Path) -> str | None:
    try:
        return json.loads(zipfile.ZipFile(path).read("metadata.json")).get("keras_version")
    except (KeyError, ValueError, AttributeError):
        return None


def derive_from_keras_file(keras_file: KerasFile, target: Path, limits: Limits, label: str, log_path: Path) -> DerivedFrom:
    """Export the SavedModel of the Keras file to target, in a sandboxed model process (ModelRejected on a file
    Keras cannot load safely or export)."""
    keras_version = run_isolated(keras_export_job, str(keras_file.path), str(target), limits=limits, label=label,
                                 log_path=log_path).value
    return DerivedFrom(
        flavor=keras_file.flavor, keras_file=str(keras_file.path.relative_to(keras_file.files)),
        keras_version=keras_version, saved_with_keras=_saved_with_keras(keras_file.path), saved_model_dir=str(target),
    )


def version_model(files: Path) -> tuple[Path, KerasFile | None]:
    """What a registry version's files hold to validate: their Keras flavor's file, else their SavedModel."""
    keras_file = keras_file_of(files)
    return (files, keras_file) if keras_file else (find_saved_model_dir(files), None)

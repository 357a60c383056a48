"""A registered version as an MLflow model: its `MLmodel` names the validated signature's input and output schema
(MLflow's tensor-spec schema, which the version page shows), a pyfunc flavor whose loader runs that signature
(modelgate.tracking.modelgate_pyfunc, shipped in the version's code/ folder), and a flavor per target artifact
beside it whose module declares one (`mlmodel_flavor`: ONNX's model.onnx as MLflow's onnx flavor).

Written in the flow's process from the report alone: nothing here imports TensorFlow or a target's framework,
and nothing loads the model (MLflow is given no input example to check).
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

from modelgate.description import SignatureSpec
from modelgate.model.savedmodel import TF1_GRAPH
from modelgate.report import TargetSection, ValidationReport
from modelgate.targets import registry as target_registry

MLMODEL_FILE = "MLmodel"
CODE_FOLDER = "code"
LOADER = Path(__file__).with_name("modelgate_pyfunc.py")
LOADER_MODULE = LOADER.stem
ENVIRONMENT_FILES = ("python_env.yaml", "requirements.txt", "conda.yaml")


def mlflow_signature(signature: SignatureSpec):
    """The TF signature in MLflow's terms: one named tensor per input and output, -1 for dynamic dims (and a
    single -1 for unknown rank); string tensors as object arrays."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def dtype(tf_dtype: str) -> np.dtype:
        return np.dtype(object) if tf_dtype == "string" else np.dtype(tf_dtype)

    def schema(specs) -> Schema | None:
        # MLflow refuses an empty schema: a signature that takes nothing is saved without an input schema.
        return Schema([
            TensorSpec(dtype(spec.dtype), (-1,) if spec.shape is None else tuple(
                -1 if dim is None else dim for dim in spec.shape), name)
            for name, spec in specs.items()
        ]) if specs else None

    return ModelSignature(inputs=schema(signature.inputs), outputs=schema(signature.outputs))


@cache
def _distribution_of(package: str) -> str:
    """The installed distribution that provides an import name (tensorflow-cpu provides tensorflow), without
    importing it."""
    return next(iter(metadata.packages_distributions().get(package, [])), package)


def requirements(op_libraries: list[str] = ()) -> list[str]:
    """What loading the pyfunc takes: this environment's TensorFlow (pinned under its usual name, so the version
    serves on a GPU host too), the op libraries' packages, NumPy and MLflow."""
    libraries = [_distribution_of(module.split(".")[0]) for module in op_libraries]
    return [f"tensorflow=={metadata.version(_distribution_of('tensorflow'))}",
            *(f"{name}=={metadata.version(name)}" for name in dict.fromkeys(libraries)),
            f"numpy=={metadata.version('numpy')}", f"mlflow=={metadata.version('mlflow')}"]


def _write_environment(folder: Path, pip_requirements: list[str]) -> None:
    """requirements.txt, python_env.yaml and conda.yaml, as mlflow.pyfunc.save_model writes them."""
    import yaml
    from mlflow.utils.environment import _PythonEnv

    (folder / "requirements.txt").write_text("\n".join(pip_requirements) + "\n")
    _PythonEnv(python=platform.python_version(), dependencies=["-r requirements.txt"]).to_yaml(
        folder / "python_env.yaml")
    conda = {"name": "mlflow-env", "channels": ["conda-forge"],
             "dependencies": [f"python={platform.python_version()}", "pip", {"pip": pip_requirements}]}
    (folder / "conda.yaml").write_text(yaml.safe_dump(conda, default_flow_style=False, sort_keys=False))


def target_flavors(targets: Mapping[str, TargetSection]) -> dict[str, dict]:
    """The MLflow flavors of the targets' artifacts in a registered version, as each target's module declares
    them (its mlmodel_flavor); a target without that hook, or without a usable artifact, adds none."""
    flavors = {}
    for name, section in targets.items():
        declared = target_registry().get(name)
        conversion = section.conversion
        if (declared is None or conversion is None or not conversion.path or conversion.failure
                or not Path(conversion.path).exists()):
            continue
        if flavor := declared.mlmodel_flavor(conversion.path):
            flavors[flavor[0]] = flavor[1]
    return flavors


def written_files(folder: Path) -> list[Path]:
    """The files write_mlmodel writes in folder."""
    return [folder / MLMODEL_FILE, *(folder / name for name in ENVIRONMENT_FILES), folder / CODE_FOLDER / LOADER.name]


def write_mlmodel(folder: Path, report: ValidationReport, saved_model_dir: Path,
                  targets: Mapping[str, TargetSection] | None = None) -> list[Path]:
    """MLmodel, its environment files and the loader (code/modelgate_pyfunc.py) written into folder, a version's
    files, whose SavedModel lies in saved_model_dir (folder itself, or a folder under it); the targets' flavors
    name their files in folder. Returns the files written."""
    from mlflow.models import Model
    from mlflow.pyfunc import add_to_model

    relative = saved_model_dir.resolve().relative_to(folder.resolve())
    op_libraries = report.request.model.op_libraries
    signature = report.signatures[report.signature]
    model = Model(signature=mlflow_signature(signature), metadata={
        "modelgate_run_id": report.mlflow.run_id or "", "modelgate_signature": signature.key})
    (folder / CODE_FOLDER).mkdir(exist_ok=True)
    shutil.copy2(LOADER, folder / CODE_FOLDER / LOADER.name)
    add_to_model(
        model, loader_module=LOADER_MODULE, code=CODE_FOLDER, python_env="python_env.yaml", conda_env="conda.yaml",
        model_config={"signature_key": signature.key, "tags": list(report.tags or []),
                      "op_libraries": list(op_libraries),
                      # a TF1 graph runs in a TF1 Session, as TF Serving and modelgate's reference runtime run it
                      "runner": "session" if report.model_format == TF1_GRAPH else "function"},
        # the loader's path: the SavedModel's folder under the version's root (none: the root itself)
        data=None if str(relative) == "." else relative.as_posix(),
    )
    for name, conf in target_flavors(targets or {}).items():
        model.add_flavor(name, **conf)
    _write_environment(folder, requirements(op_libraries))
    model.save(str(folder / MLMODEL_FILE))
    return written_files(folder)

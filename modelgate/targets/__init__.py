"""Conversion targets: each turns the validated SavedModel (or a parent target's artifact) into one serving
format, which the runtimes of that format then run against TensorFlow.

A target is one module in this package defining `TARGET` (its name, format, parent, packages and default
criteria) and `convert(source: ConversionSource) -> ConversionRecord`, which runs in a bounded, sandboxed child
process of its own, writes its artifact under `source.output_dir`, checks the file, and says how to redo the
conversion (`reproduce`). A conversion the model cannot have (an op the format lacks) is a `failure`; a
converter crash or a limit is an exception. A target may also define `warm_up()` (its child then starts as the
validation does, see modelgate.execution.pools), or declare that it converts in the reference process (TensorFlow's
child, which closes after that conversion), and `process_environment(source) -> dict` (variables a conversion needs
set before its frameworks import: such a conversion gets a child of its own). The registry finds the modules
itself: adding a target is adding its file (and, for a new format, one runtime file in modelgate/runtimes/).

What the rest of modelgate does with a target's artifact, the target says in its own module too, so that nothing
outside it names it. Each of these is optional, and a target without one is simply left out of that step:

- `TARGET.file_checks`: the names of the checks its conversion writes about its file (the catalogue of checks
  lists them, modelgate.reporting.check_catalogue);
- `log_model(source: LoggedModelSource) -> str`: logs the artifact to MLflow as a logged model and returns its
  URI; run in a child process of its own (modelgate.tracking.mlflow_store), never in a runtime's pool;
- `registered_files(artifact: str) -> list[Path]`: the files of the artifact that go into a registered model
  version beside the SavedModel (modelgate.tracking.registry.registered_copy);
- `mlmodel_flavor(artifact: str) -> tuple[str, dict] | None`: the MLflow flavor (name and configuration) that
  names those files in the registered version's MLmodel, so that MLflow's own loader for the format reads them
  (modelgate.tracking.mlflow_model); called in the flow's process, so it imports no framework;
- `variants(options: TargetOptions, localisation: Localisation | None) -> list[Variant]`: other ways of converting,
  tried in this order (fastest expected first) by the remediation search (tasks/remediate_target.py) when the
  target's comparison fails; `localisation` says where the default conversion diverged, when that is known.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from modelgate.criteria import Criteria
from modelgate.declarations import declared_in, missing_packages
from modelgate.description import SignatureSpec
from modelgate.runtimes import Runtime, runtimes_for

ALL = "all"
# Each conversion target runs these stages, named "<kind>-<target>" (export-onnx, compare-litert, ...).
TARGET_STAGE_KINDS = ("export", "compare", "localise", "remediate", "benchmark")
# Stages that explain a target's outcome and never decide the verdict by themselves: a localisation that cannot
# run leaves the comparison's verdict as it was (a variant that passes changes it through the parity check).
DIAGNOSTIC_STAGE_KINDS = ("localise", "remediate")

def target_stage(kind: str, target: str) -> str:
    return f"{kind}-{target}"


def target_check(target: str, kind: str) -> str:
    """A target's own check: `conversion` (its converter made a usable file) or `parity` (its runtimes met its
    criteria against TensorFlow)."""
    return f"{target.replace('-', '_')}_{kind}"



class TargetOptions(BaseModel):
    """A target's own settings, typed: each target subclasses this beside its converter (ONNX's opset,
    int8's calibration), and the request's section for the target holds one. Every field has a default, a
    title and a description (it renders in Prefect's form and as a CLI flag `--<target>-<field>`)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ConversionSource:
    """Everything a converter may read; plain values, so it travels to the converter's child process."""

    model_dir: str
    tags: list[str]
    signature: SignatureSpec
    model_format: str  # tf1-graph, tf2, keras2
    output_dir: str  # the target's own folder in the validation's working folder
    log_path: str  # the child's stdout and stderr go here; converters may read it back
    parent_artifact: str | None = None  # the parent target's artifact, for targets with a parent
    calibration_inputs: list[str] = field(default_factory=list)  # .npz files of the validation's inputs
    # More input batches (.npz), the comparison batches' inputs, which the remediation search hands over for a
    # variant that calibrates on more (onnx-int8's extra_calibration_batches); a validation's own conversion has none.
    extra_calibration_inputs: list[str] = field(default_factory=list)
    options: TargetOptions | None = None  # the request's settings for this target; None: the target's defaults


@dataclass(frozen=True)
class LoggedModelSource:
    """Everything a target's `log_model` may read; plain values, so it travels to the child process that logs."""

    tracking_uri: str
    run_id: str  # the validation's MLflow run, named explicitly: the fluent API's active run is per thread
    artifact: str  # the target's artifact, which passed its checks
    signature: SignatureSpec
    inputs_path: str | None = None  # an .npz of the validation's inputs, for an input example
    details: dict = field(default_factory=dict)  # the conversion's own facts (ConversionRecord.details)


@dataclass(frozen=True)
class Variant:
    """Another way of converting a target, for the remediation search: the options it converts with."""

    label: str  # as the format matrix shows it, after the target's name: "3 ops kept in float32"
    options: TargetOptions
    why: str = ""  # what it changes and why it may pass, in one line

    def settings(self, defaults: TargetOptions) -> dict:
        """The options that differ from the defaults the failed conversion used."""
        chosen, base = self.options.model_dump(), defaults.model_dump()
        return {key: value for key, value in chosen.items() if base.get(key) != value}


@dataclass(frozen=True)
class Target:
    name: str
    artifact_format: str
    packages: tuple[str, ...]  # import names; a target missing one is skipped, and says which
    module: str
    description: str
    parent: str | None = None
    criteria: Criteria = field(default_factory=Criteria)
    options: type[TargetOptions] = TargetOptions
    file_checks: tuple[str, ...] = ()  # the checks its conversion writes about its file, by name
    asked_by_default: bool = False  # converted when a request names no targets
    # Its converter needs what TensorFlow's child imported (tf2onnx): the first such conversion is that child's last
    # job, after it dropped the loaded model (modelgate.execution.pools); its `warm_up` is then not used.
    converts_in_reference_process: bool = False
    # How localisation freezes TensorFlow's graph so that its tensor names are the ones the converter kept:
    # "tf2onnx" (tf2onnx's own freezing, constant folding included) or "inlined" (functions inlined, nothing folded,
    # as TFLite's and OpenVINO's converters keep names). A target with a parent reads its parent's file: its parent's.
    traced_graph: str = "inlined"

    def traced_graph_of(self) -> str:
        chosen = self
        while chosen.parent:
            chosen = registry()[chosen.parent]
        return chosen.traced_graph

    def options_for(self, source: ConversionSource) -> TargetOptions:
        """The options a conversion runs with: the request's, else this target's defaults."""
        if source.options is None:
            return self.options()
        if not isinstance(source.options, self.options):
            raise TypeError(f"{self.name} takes {self.options.__name__}, not {type(source.options).__name__}")
        return source.options

    @property
    def check_name(self) -> str:
        """The check that fails when this target cannot be converted (its comparison's is `<target>_parity`)."""
        return target_check(self.name, "conversion")

    def missing_packages(self) -> list[str]:
        return missing_packages(self.packages)

    def runtimes(self) -> list[Runtime]:
        return runtimes_for(self.artifact_format)

    def implementation(self):
        return importlib.import_module(self.module)

    @property
    def logs_model(self) -> bool:
        """Whether the artifact goes to MLflow as a logged model (its module defines `log_model`)."""
        return callable(getattr(self.implementation(), "log_model", None))

    def log_model(self, source: LoggedModelSource) -> str:
        """The artifact as an MLflow logged model; returns its URI. Call it in a child process: it imports the
        target's frameworks, and MLflow may run the model to check its input example."""
        return self.implementation().log_model(source)

    def variants(self, options: TargetOptions, localisation=None) -> list[Variant]:
        """Its remediation variants, fastest expected first; none unless its module defines `variants`."""
        chosen = getattr(self.implementation(), "variants", None)
        return list(chosen(options, localisation)) if chosen else []

    def registered_files(self, artifact: str) -> list[Path]:
        """The files of the artifact that go into a registered model version beside the SavedModel; none
        unless its module defines `registered_files`."""
        chosen = getattr(self.implementation(), "registered_files", None)
        return list(chosen(artifact)) if chosen else []

    def mlmodel_flavor(self, artifact: str) -> tuple[str, dict] | None:
        """The MLflow flavor of the artifact's registered files in a registered version's MLmodel (name and
        configuration); none unless its module defines `mlmodel_flavor`."""
        chosen = getattr(self.implementation(), "mlmodel_flavor", None)
        return chosen(artifact) if chosen else None


@cache
def registry() -> dict[str, Target]:
    return declared_in(__path__, __name__, "TARGET")


def target(name: str) -> Target:
    return registry()[name]


def in_conversion_order(names: list[str]) -> list[Target]:
    """The targets asked ('all': every registered one), each after its parent, which is added when missing."""
    known = registry()
    if ALL in names:
        names = sorted(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown target {', '.join(unknown)}; the targets are {', '.join(sorted(known))}")
    ordered: list[Target] = []

    def add(name: str) -> None:
        chosen = known[name]
        if chosen.parent:
            add(chosen.parent)
        if chosen not in ordered:
            ordered.append(chosen)

    for name in names:
        add(name)
    # A target that converts in TensorFlow's child goes first (its children after it): only the first conversion
    # can be that child's last job.
    first = next((chosen for chosen in ordered if chosen.converts_in_reference_process), None)
    if first is None:
        return ordered
    lineage = [chosen for chosen in ordered if _descends_from(chosen, first.name, known)]
    return lineage + [chosen for chosen in ordered if chosen not in lineage]


def _descends_from(chosen: Target, ancestor: str, known: dict[str, Target]) -> bool:
    while chosen is not None:
        if chosen.name == ancestor:
            return True
        chosen = known.get(chosen.parent) if chosen.parent else None
    return False

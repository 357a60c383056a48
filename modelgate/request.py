"""What to validate and how: the request people fill in (the Prefect form, the CLI's flags)."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelgate.criteria import Criteria, Tolerance, normalized_tolerance

DEFAULT_REPORT_PATH = "modelgate-report.json"


DEFAULT_OUTPUT_DIR = "modelgate-out"


MIN_MEMORY_LIMIT_MB = 64


LATEST = "latest"  # the TF Serving version folder with the highest number
PROTECTED_ALIASES = frozenset({"champion"})  # aliases people move; modelgate never sets them


class BenchmarkSettings(BaseModel):
    """Latency and throughput measurement: which runtimes, batch sizes and devices, and for how long."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, title="Measure", description="Measure latency and throughput.")
    batch_sizes: list[int] = Field(
        default=[],
        title="Batch sizes",
        description="Batch sizes to measure. Empty: powers of two from 1 until throughput gains under 5 % twice "
        "in a row, or the maximum batch size.",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=65536, title="Largest batch size of the sweep", description="Upper end of the sweep."
    )
    runtimes: list[str] = Field(
        default=[],
        title="Runtimes to benchmark",
        description="Of tensorflow (the raw signature), keras (the wrapper) and each target's runtimes (onnxruntime, "
        "litert, openvino). Empty: all of them.",
    )
    gpu: bool = Field(default=True, title="On a GPU too", description="Also measure on a GPU where one is present.")
    intra_op_threads: int = Field(
        default=0, ge=0, title="Intra-op threads", description="Threads inside one op. 0: one per CPU core."
    )
    inter_op_threads: int = Field(default=1, ge=1, title="Inter-op threads", description="Ops run in parallel.")
    warmup: int = Field(default=10, ge=0, title="Warm-up calls", description="Untimed calls before measuring.")
    window: int = Field(default=25, ge=1, title="Calls per window", description="Timed calls per measurement window.")
    max_windows: int = Field(
        default=10, ge=3, title="Maximum windows", description="Stop measuring after this many windows, stable or not."
    )
    budget_s: float = Field(
        default=30, gt=0,
        title="Budget per runtime and device (s)",
        description="Each runtime's sweep on each device stops when this is spent; the batch sizes left are "
        "reported as unmeasured, and no cut-short window counts.",
    )

    @field_validator("batch_sizes", "intra_op_threads", mode="before")
    @classmethod
    def _none_is_empty(cls, value, info):
        # Requests of earlier releases wrote null for "sweep" and "one thread per core".
        if value is None:
            return [] if info.field_name == "batch_sizes" else 0
        return value

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batch_sizes(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("benchmark batch sizes must be positive")
        return sorted(set(sizes))


class SandboxLimits(BaseModel):
    """Bounds on each stage that runs model code in its child process."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(
        default=600, gt=0,
        title="Time limit per model stage (s)",
        description="Wall-clock limit for each stage that runs model code in its child process.",
    )
    memory_limit_mb: int = Field(
        default=0, ge=0,
        title="Memory limit per model stage (MiB)",
        description="Kill a model process whose resident memory passes this (at least 64). "
        "0: half of this machine's memory.",
    )
    require_sandbox: bool = Field(
        default=False,
        title="Require the OS sandbox",
        description="Run no model code where the kernel cannot confine it (no Landlock): the validation ends in error "
        "instead of a warning.",
    )

    @field_validator("memory_limit_mb", mode="before")
    @classmethod
    def _none_is_auto(cls, value):
        return 0 if value is None else value  # earlier releases wrote null for "half of this machine's memory"

    @field_validator("memory_limit_mb")
    @classmethod
    def _room_to_load(cls, value: int) -> int:
        if 0 < value < MIN_MEMORY_LIMIT_MB:
            raise ValueError(f"a memory limit under {MIN_MEMORY_LIMIT_MB} MiB leaves no room to load a model; 0 is automatic")
        return value


class ModelSelection(BaseModel):
    """Which graph of the SavedModel is validated, and what it needs to load."""

    model_config = ConfigDict(extra="forbid")

    signature: str = Field(
        default="", title="Signature key",
        description="Signature to validate. Empty: serving_default, else the single predict-style signature.",
    )
    tags: list[str] = Field(
        default=[], title="Tag-set",
        description="MetaGraph tag-set to load, for example ['serve']. Empty: the only one, or the 'serve' one.",
    )
    version: str = Field(
        default=LATEST, pattern=r"^(latest|\d+)$", title="TF Serving version",
        description="For a TF Serving base path (base/1, base/2, ...): the version folder to validate, or latest.",
    )
    op_libraries: list[str] = Field(
        default=[], title="Op libraries",
        description="Python packages that register custom ops (e.g. tensorflow_text), imported before the op scan "
        "and in every model process before the model loads.",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _number_or_latest(cls, value):
        return LATEST if value is None else str(value)

    @property
    def version_number(self) -> int | None:
        return None if self.version == LATEST else int(self.version)


class InputSettings(BaseModel):
    """The inputs every check, comparison and benchmark runs on."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default="", title="File (.npz or tf.Example records)",
        description="NumPy .npz keyed by signature input name, or a TFRecord file of serialized tf.Example "
        "records for the signature's string input. Empty: seeded synthetic inputs.",
    )
    value_range: dict[str, list[float]] = Field(
        default={}, title="Value ranges of synthetic inputs",
        description='[low, high] per input name (or tf.Example feature), "" for the rest: {"": [0, 1], '
        '"token_ids": [0, 999]}. Empty: integer inputs take the rows of the tables they index in the graph, '
        'else [0, 1]; floats are standard normal. A named range wins over the graph\'s, the graph\'s over "".',
    )
    batch_size: int = Field(
        default=4, ge=1, le=4096, title="Batch size for checks",
        description="Size given to dynamic batch dimensions of synthetic inputs.",
    )
    unknown_dim_size: int = Field(
        default=8, ge=1, le=4096, title="Size for other unknown dimensions",
        description="Size given to unknown non-batch dimensions of synthetic inputs.",
    )
    seed: int = Field(default=0, title="Seed", description="Seed of the synthetic inputs.")

    @field_validator("value_range")
    @classmethod
    def _valid_ranges(cls, ranges: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, bounds in ranges.items():
            if len(bounds) != 2 or not all(math.isfinite(b) for b in bounds) or bounds[0] > bounds[1]:
                raise ValueError(f"the range of '{name}' must be [low, high] with low <= high, found {bounds}")
        return ranges


class CheckSettings(BaseModel):
    """What the signature and its outputs are held to, and the tolerances every target is compared with
    (a target's own criteria may set others)."""

    model_config = ConfigDict(extra="forbid")

    contract_path: str = Field(
        default="", title="Expected contract (YAML or JSON)",
        description="Input and output names, dtypes and shapes (null for a dynamic dimension) the signature must have.",
    )
    atol: float = Field(
        default=0, ge=0, title="Absolute tolerance",
        description="Of every target against TensorFlow. 0: by the graph's lowest float precision (1e-4 for "
        "float32, 1e-2 for float16, 1e-1 for bfloat16).",
    )
    rtol: float = Field(
        default=0, ge=0, title="Relative tolerance",
        description="Of every target against TensorFlow. 0: by the graph's lowest float precision (1e-3 for "
        "float32, 1e-2 for float16, 1e-1 for bfloat16).",
    )
    output_atol: dict[str, float] = Field(
        default={}, title="Absolute tolerance per output", description='By output name: {"logits": 0.001}.',
    )
    output_rtol: dict[str, float] = Field(
        default={}, title="Relative tolerance per output", description='By output name: {"logits": 0.01}.',
    )
    comparison_batches: int = Field(
        default=8, ge=1, le=256, title="Comparison batches",
        description="Seeded synthetic input batches every target is compared on (plus the inputs file, if given).",
    )
    localise: bool = Field(
        default=False, title="Localise every target",
        description="Find where each target's error comes from even when it passes (a failing target is always "
        "localised): the first op whose output leaves the criteria, by comparing intermediate tensors.",
    )
    remediation_budget_s: float = Field(
        default=180, ge=0, title="Remediation budget (s)",
        description="Time for trying other conversions of each failing target, fastest expected first. 0: none tried.",
    )
    allow_ops: list[str] = Field(
        default=[], title="Allowed ops",
        description="Op types the op scan refuses (outside its allowlist, or breaking an op's rule) which this "
        "model may use anyway.",
    )

    @field_validator("output_atol", "output_rtol")
    @classmethod
    def _not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        normalized_tolerance(value)
        return value

    def tolerance(self, figure: Literal["atol", "rtol"]) -> Tolerance:
        """As the comparators take it: {} (every output by the graph's precision), one number, or per output
        with "" as the default."""
        default, per_output = getattr(self, figure), getattr(self, f"output_{figure}")
        if not per_output:
            return default or {}
        return {**({"": default} if default else {}), **per_output}


class TargetRequest(BaseModel):
    """One conversion target asked: whether it decides the verdict, its criteria and its own options."""

    model_config = ConfigDict(extra="forbid")

    convert: bool = Field(default=True, title="Convert", description="Convert to this format and hold it against "
                          "TensorFlow.")
    requirement: Literal["required", "optional"] = Field(
        default="required", title="Requirement",
        description="required: a failure or mismatch decides the validation; optional: it is reported only.",
    )
    criteria: dict[str, float | dict[str, float] | bool] = Field(
        default={}, title="Criteria",
        description='Overrides of the target\'s own criteria, e.g. {"min_cosine_similarity": 0.98}.',
    )
    options: dict[str, Any] = Field(default={}, title="Options", description="The target's own settings.")
    remediation: Literal["auto", "apply", "report"] = Field(
        default="auto", title="Remediation",
        description="When its comparison fails and another conversion of it passes: apply: that conversion stands as "
        "the target; report: it is reported beside the failure, which stands; auto: apply for an optional target, "
        "report for a required one.",
    )

    @field_validator("criteria")
    @classmethod
    def _known_criteria(cls, criteria: dict) -> dict:
        Criteria.model_validate(criteria)
        return criteria

    def criteria_over(self, defaults: Criteria) -> Criteria:
        return defaults.model_copy(update=Criteria.model_validate(self.criteria).model_dump(include=set(self.criteria)))


class TrackingSettings(BaseModel):
    """Where the run is logged, and what a validation that passed does in the model registry."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str = Field(
        default="", title="MLflow tracking URI",
        description="Empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory.",
    )
    experiment_name: str = Field(default="modelgate", title="MLflow experiment", description="Experiment of the run.")
    register_as: str = Field(
        default="", title="Register as",
        description="For a path source: register the SavedModel (and the converted files) under this registered model "
        "name. Empty: not registered.",
    )
    alias: str = Field(
        default="validated", title="Alias on success",
        description="Registry alias set on the version when the validation passed and the version is signed "
        "(see Signing key). Never 'champion'. Empty: none.",
    )
    signing_key: str = Field(
        default="", title="Signing key",
        description="A PEM elliptic-curve private key (its password, if any, in MODELGATE_SIGNING_KEY_PASSWORD): "
        "a version that passed is signed with it (OpenSSF model signing) before the alias moves. Empty: the "
        "version is not signed and gets no alias.",
    )
    signing_certificate: str = Field(
        default="", title="Signing certificate",
        description="The signing key's PEM certificate, the chain that issued it after it in the same file: the "
        "version is signed in model-signing's certificate mode, verified with that chain. Empty: the key alone.",
    )

    @field_validator("alias")
    @classmethod
    def _not_champion(cls, alias: str) -> str:
        if alias in PROTECTED_ALIASES:
            raise ValueError(f"'{alias}' is moved by people, never by modelgate")
        return alias

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()


class OutputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_path: str = Field(default=DEFAULT_REPORT_PATH, title="Report path", description="Where report.json is written.")
    output_dir: str = Field(
        default=DEFAULT_OUTPUT_DIR, title="Working directory",
        description="Working files of each validation (inputs, converted models, plots) go to a subfolder here.",
    )


class DeprecatedRequestKey(FutureWarning):
    """A request key of an earlier release, accepted for one more release (FutureWarning: shown to people)."""


SECTIONS = {"model": ModelSelection, "inputs": InputSettings, "checks": CheckSettings, "benchmark": BenchmarkSettings,
            "limits": SandboxLimits, "mlflow": TrackingSettings, "output": OutputSettings}
# Keys of earlier releases, by the (section, key) that replaced them. Accepted for one release (until 0.9), each
# with a warning naming its new place; remove with upgraded().
MOVED_KEYS: dict[str, tuple[str, str]] = {
    **{key: ("model", key) for key in ("signature", "tags", "op_libraries")},
    "model_version": ("model", "version"),
    "inputs_path": ("inputs", "path"),
    **{key: ("inputs", key) for key in ("value_range", "batch_size", "unknown_dim_size", "seed")},
    **{key: ("checks", key) for key in ("contract_path", "allow_ops")},
    "onnx_batches": ("checks", "comparison_batches"),
    **{key: ("mlflow", key) for key in ("tracking_uri", "experiment_name", "register_as", "alias", "signing_key",
                                         "signing_certificate")},
    **{key: ("output", key) for key in ("report_path", "output_dir")},
    **{f"benchmark_{key}": ("benchmark", key) for key in (
        "batch_sizes", "max_batch_size", "runtimes", "gpu", "warmup", "window", "max_windows", "budget_s")},
    "intra_op_threads": ("benchmark", "intra_op_threads"),
    "inter_op_threads": ("benchmark", "inter_op_threads"),
    "model_timeout_s": ("limits", "timeout_s"),
    "memory_limit_mb": ("limits", "memory_limit_mb"),
    "require_sandbox": ("limits", "require_sandbox"),
}
# Earlier releases wrote null where an empty value now says the same; the rest read null as their default.
EMPTY_WHEN_NULL = {"signature": "", "tags": [], "inputs_path": "", "contract_path": "", "tracking_uri": "",
                   "register_as": "", "alias": "", "signing_key": "", "signing_certificate": ""}
# The first target's keys of earlier releases (it was the only one), now its section of `targets`.
FIRST_TARGET = "onnx"
FIRST_TARGET_KEYS = {"onnx_opset": ("options", "opset"), "onnx_external_data": ("options", "external_data"),
                     "onnx_requirement": ("requirement", None)}


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"request key '{old}' is deprecated: use '{new}'", DeprecatedRequestKey, stacklevel=6)


def _section(data: dict, name: str) -> dict:
    settings = data.get(name) or {}
    return settings.model_dump(exclude_unset=True) if isinstance(settings, BaseModel) else dict(settings)


def _put(data: dict, old: str, section: str, key: str, value) -> None:
    settings = _section(data, section)
    if key in settings and settings[key] != value:
        raise ValueError(f"{old} (kept from earlier releases) and {section}.{key} disagree")
    settings[key] = value
    data[section] = settings


def _tolerances(value) -> tuple[float, dict[str, float]]:
    """A tolerance of earlier releases (one number, or per output with "" as the default) as a number and a mapping."""
    if isinstance(value, dict):
        return float(value.get("", 0)), {name: v for name, v in value.items() if name}
    return float(value), {}


def upgraded(data: dict) -> dict:
    """A request in the shape of earlier releases (flat keys, the first target's own keys, targets as a list)
    in today's: the one place old keys are read."""
    data = dict(data)
    if isinstance(data.get("benchmark"), bool):  # the flat switch of earlier releases
        _deprecated("benchmark: true/false", "benchmark.enabled")
        data["benchmark"] = {"enabled": data["benchmark"]}
    if data.get("baseline", "") is None:
        data["baseline"] = ""  # earlier releases wrote null for "none"
    for old, (section, key) in MOVED_KEYS.items():
        if old in data:
            _deprecated(old, f"{section}.{key}")
            value = data.pop(old)
            if value is None and old in EMPTY_WHEN_NULL:  # earlier releases wrote null for the empty value
                value = type(EMPTY_WHEN_NULL[old])()
            _put(data, old, section, key, value)
    for figure in ("atol", "rtol"):
        if figure in data:
            _deprecated(figure, f"checks.{figure} and checks.output_{figure}")
            default, per_output = _tolerances(data.pop(figure))
            _put(data, figure, "checks", figure, default)
            if per_output:
                _put(data, figure, "checks", f"output_{figure}", per_output)
    targets = target_mapping(data.get("targets", default_targets()))
    for old in ("optional_targets", "target_criteria"):
        if unknown := sorted(set(data.get(old) or []) - set(known_targets())):
            raise ValueError(f"{old}: unknown target {', '.join(unknown)}; the targets are {', '.join(known_targets())}")
    if "optional_targets" in data:
        _deprecated("optional_targets", "targets.<name>.requirement")
        for name in data.pop("optional_targets") or []:
            if name in targets:  # an optional target that was not asked was not converted either
                targets[name] = {**targets[name], "requirement": "optional"}
    if "target_criteria" in data:
        _deprecated("target_criteria", "targets.<name>.criteria")
        for name, criteria in (data.pop("target_criteria") or {}).items():
            if name in targets:
                criteria = criteria.model_dump(exclude_unset=True) if isinstance(criteria, BaseModel) else criteria
                targets[name] = {**targets[name], "criteria": criteria}
    if "export_onnx" in data:
        _deprecated("export_onnx", "targets")
        if not data.pop("export_onnx"):
            targets.pop(FIRST_TARGET, None)
    for old, (place, key) in FIRST_TARGET_KEYS.items():
        if old not in data:
            continue
        _deprecated(old, f"targets.{FIRST_TARGET}.{place}" + (f".{key}" if key else ""))
        value = data.pop(old)
        if value is None or FIRST_TARGET not in targets:
            continue
        first = targets[FIRST_TARGET]
        targets[FIRST_TARGET] = {**first, place: {**first.get(place, {}), key: value} if key else value}
    data["targets"] = targets
    return data


def target_mapping(targets) -> dict:
    """Targets as a mapping of plain dicts, a list of names taken as a mapping and 'all' as every target."""
    from modelgate.targets import ALL, registry

    if isinstance(targets, (list, tuple)):
        targets = {name: {} for name in targets}
    targets = {name: asked.model_dump(exclude_unset=True) if isinstance(asked, BaseModel) else dict(asked or {})
               for name, asked in dict(targets).items()}
    if ALL in targets:  # every target that can run here
        asked = targets.pop(ALL)
        targets = {name: targets.get(name, asked) for name, target in registry().items() if not target.missing_packages()}
    return targets


def known_targets() -> list[str]:
    from modelgate.targets import registry

    return sorted(registry())


def default_targets() -> list[str]:
    from modelgate.targets import registry

    return [name for name, target in registry().items() if target.asked_by_default]


def _targets_form(schema: dict) -> None:
    """Prefect's form: a section per registered target (convert, requirement, remediation where it declares variants,
    its typed options) instead of a JSON editor of the mapping."""
    from modelgate.targets import registry

    asked = default_targets()
    plain = TargetRequest.model_json_schema()["properties"]
    properties = {}
    for name, target in sorted(registry().items()):
        options = target.options.model_json_schema()
        fields = {"convert": {**plain["convert"], "default": name in asked}, "requirement": plain["requirement"]}
        if callable(getattr(target.implementation(), "variants", None)):
            fields["remediation"] = plain["remediation"]
        if options.get("properties"):
            fields["options"] = {"type": "object", "title": "Options", "properties": options["properties"],
                                 **({"$defs": options["$defs"]} if "$defs" in options else {})}
        properties[name] = {"type": "object", "title": name, "description": target.description, "properties": fields}
    schema.clear()
    schema.update({"type": "object", "title": "Targets", "properties": properties,
                   "description": "The serving formats to convert to and hold against TensorFlow."})


class ValidationRequest(BaseModel):
    """What to validate and how, in sections people scan (the Prefect form's, the CLI's flags); it names no
    format: each target's settings are the target's own (modelgate.targets)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        title="Model source",
        description="A SavedModel directory (holding saved_model.pb or .pbtxt), a TF Serving base path, or a registry "
        "version: models:/NAME/VERSION or models:/NAME@ALIAS.",
    )
    model: ModelSelection = Field(default=ModelSelection(), title="Model", description="Which graph, and what it needs.")
    inputs: InputSettings = Field(default=InputSettings(), title="Inputs", description="What the model is run on.")
    checks: CheckSettings = Field(default=CheckSettings(), title="Checks and tolerances",
                                  description="The contract, the op scan's exceptions, every target's tolerances.")
    baseline: str = Field(
        default="champion",
        title="Baseline",
        description="The version to compare with: a SavedModel path (or TF Serving base path), models:/NAME/VERSION, "
        "or an alias of the same registered model (default champion, when there is one). Removed inputs, dtype or "
        "rank changes are breaking; output drift and latency change are measured. Empty: no baseline.",
    )
    targets: dict[str, TargetRequest] = Field(
        default_factory=lambda: {name: TargetRequest() for name in default_targets()},
        title="Targets",
        description='By target name: {"onnx": {}, "litert": {"requirement": "optional"}}; a list of names is also '
        'taken, ["all"] for every target.',
        json_schema_extra=_targets_form,
    )
    benchmark: BenchmarkSettings = Field(
        default=BenchmarkSettings(), title="Benchmark", description="Latency and throughput measurement."
    )
    limits: SandboxLimits = Field(
        default=SandboxLimits(), title="Sandbox limits", description="Bounds on each stage that runs model code."
    )
    mlflow: TrackingSettings = Field(default=TrackingSettings(), title="MLflow and registry",
                                     description="Where the run is logged; registering, signing and the alias.")
    output: OutputSettings = Field(default=OutputSettings(), title="Output", description="Where files are written.")

    @model_validator(mode="before")
    @classmethod
    def _upgraded(cls, data):
        return upgraded(data) if isinstance(data, dict) else data

    @field_validator("targets", mode="before")
    @classmethod
    def _every_target(cls, targets):
        return target_mapping(targets)

    @model_validator(mode="after")
    def _known_targets(self) -> ValidationRequest:
        from modelgate.targets import registry

        known = registry()
        unknown = sorted(set(self.targets) - set(known))
        if unknown:
            raise ValueError(f"targets: unknown target {', '.join(unknown)}; the targets are {', '.join(known_targets())}")
        self.targets = {name: asked for name, asked in self.targets.items() if asked.convert}
        for name, asked in self.targets.items():
            try:
                known[name].options.model_validate(asked.options)
            except ValueError as exc:
                raise ValueError(f"targets.{name}.options: {exc}") from None
        return self

    @property
    def atol(self) -> Tolerance:
        return self.checks.tolerance("atol")

    @property
    def rtol(self) -> Tolerance:
        return self.checks.tolerance("rtol")

    def benchmarks_runtime(self, runtime: str) -> bool:
        return self.benchmark.enabled and (not self.benchmark.runtimes or runtime in self.benchmark.runtimes)

    def as_parameters(self) -> dict:
        """The request as a deployment run's parameters: in the current shape whatever keys built it (Prefect
        holds run parameters to the flow's schema, which knows no keys of earlier releases)."""
        parameters = self.model_dump(mode="json", exclude_defaults=True)
        parameters["targets"] = {name: asked.model_dump(mode="json", exclude_defaults=True)
                                 for name, asked in self.targets.items()}
        return parameters

    def conversion_targets(self) -> list[str]:
        return list(self.targets)

    def options_of(self, target):
        """The target's typed options (its TargetOptions), as the request set them."""
        asked = self.targets.get(target.name)
        return target.options.model_validate(asked.options if asked else {})

    def criteria_of(self, target) -> Criteria:
        asked = self.targets.get(target.name)
        return asked.criteria_over(target.criteria) if asked else target.criteria

    def requirement_of(self, target: str) -> Literal["required", "optional"]:
        asked = self.targets.get(target)
        return asked.requirement if asked else "required"

    def applies_remediation(self, target: str) -> bool:
        """Whether a variant that passes stands as the target (targets.<name>.remediation)."""
        asked = self.targets.get(target)
        setting = asked.remediation if asked else "auto"
        return setting == "apply" or (setting == "auto" and self.requirement_of(target) == "optional")

    def severity_of(self, target: str) -> Literal["error", "warning"]:
        """What a target's failed check costs: the verdict for a required target, a warning for an optional one."""
        return "error" if self.requirement_of(target) == "required" else "warning"

    def resolved_tracking_uri(self) -> str:
        return self.mlflow.resolved_tracking_uri()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"

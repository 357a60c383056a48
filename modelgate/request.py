"""What to validate and how: the request people fill in (the Prefect form, the CLI's flags)."""

from __future__ import annotations

import math
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_REPORT_PATH = "modelgate-report.json"


DEFAULT_OUTPUT_DIR = "modelgate-out"


MIN_MEMORY_LIMIT_MB = 64


PROTECTED_ALIASES = frozenset({"champion"})  # aliases people move; modelgate never sets them


# One tolerance for every output, or per output name with "" as the default (Polygraphy's convention). An
# output a dict does not cover, and every output under the empty default {}, gets the default of the precision
# the graph computes in (modelgate.precision).
Tolerance = float | dict[str, float]


def _normalized_tolerance(value: Tolerance) -> Tolerance:
    values = [value] if isinstance(value, (int, float)) else list(value.values())
    if any(v < 0 for v in values):
        raise ValueError("tolerances must not be negative")
    return dict(value) if isinstance(value, dict) else float(value)


class Criteria(BaseModel):
    """How a target's outputs are judged against TensorFlow's. Exact-precision targets hold every element
    within atol or rtol; reduced-precision ones (float16, int8) are judged on figures that fit them. Each
    figure is one number or per output {"": default, "output_name": value}; None leaves it unjudged."""

    model_config = ConfigDict(extra="forbid")

    elementwise: bool = Field(default=True, description="Every element within atol or rtol.")
    atol: Tolerance = Field(default={}, description="Empty: by the graph's float precision (modelgate.precision).")
    rtol: Tolerance = Field(default={}, description="Empty: by the graph's float precision (modelgate.precision).")
    min_cosine_similarity: Tolerance | None = None
    min_top1_agreement: Tolerance | None = Field(default=None, description="Class-score outputs only.")
    max_p99_rel_diff: Tolerance | None = None

    @field_validator("atol", "rtol", "min_cosine_similarity", "min_top1_agreement", "max_p99_rel_diff")
    @classmethod
    def _valid_figure(cls, value: Tolerance | None) -> Tolerance | None:
        return None if value is None else _normalized_tolerance(value)


class BenchmarkSettings(BaseModel):
    """Latency and throughput measurement: which runtimes, batch sizes and devices, and for how long."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, title="Benchmark", description="Measure latency and throughput.")
    batch_sizes: list[int] = Field(
        default=[],
        title="Benchmark batch sizes",
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
    gpu: bool = Field(default=True, title="Benchmark on GPU too", description="Also measure on a GPU where one is present.")
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
        title="Benchmark budget per runtime and device (s)",
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


# Flat keys of earlier releases, accepted into the groups for one release: deployments (prefect.yaml, the
# request_fields of validate-new-versions) and scripts still send them. Remove in the release after.
FLAT_REQUEST_KEYS: dict[str, tuple[str, str]] = {
    **{f"benchmark_{name}": ("benchmark", name) for name in (
        "batch_sizes", "max_batch_size", "runtimes", "gpu", "warmup", "window", "max_windows", "budget_s")},
    "intra_op_threads": ("benchmark", "intra_op_threads"),
    "inter_op_threads": ("benchmark", "inter_op_threads"),
    "model_timeout_s": ("limits", "timeout_s"),
    "memory_limit_mb": ("limits", "memory_limit_mb"),
    "require_sandbox": ("limits", "require_sandbox"),
}


# Earlier releases wrote null where an empty value now says the same; a request saved or deployed then still loads.
EMPTY_WHEN_NULL = {"signature": "", "tags": [], "inputs_path": "", "contract_path": "", "baseline": "",
                   "tracking_uri": "", "register_as": "", "alias": "", "signing_key": "", "signing_certificate": ""}


def _grouped(data: dict) -> dict:
    data = dict(data)
    if isinstance(data.get("benchmark"), bool):  # the flat switch of earlier releases
        data["benchmark"] = {"enabled": data["benchmark"]}
    for old, (group, name) in FLAT_REQUEST_KEYS.items():
        if old not in data:
            continue
        value = data.pop(old)
        settings = data.get(group) or {}
        settings = settings.model_dump(exclude_unset=True) if isinstance(settings, BaseModel) else dict(settings)
        if name in settings and settings[name] != value:
            raise ValueError(f"{old} (kept from earlier releases) and {group}.{name} disagree")
        settings[name] = value
        data[group] = settings
    for key, empty in EMPTY_WHEN_NULL.items():
        if key in data and data[key] is None:
            data[key] = type(empty)()
    return data


class ValidationRequest(BaseModel):
    """What to validate and how. Every field has a title and description so Prefect's UI renders a form."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        title="Model source",
        description="A SavedModel directory (holding saved_model.pb or .pbtxt), or a registry version: "
        "models:/NAME/VERSION or models:/NAME@ALIAS.",
    )
    signature: str = Field(
        default="",
        title="Signature key",
        description="Signature to validate. Empty: serving_default, else the single predict-style signature.",
    )
    targets: list[str] = Field(
        default=["onnx"],
        title="Conversion targets",
        description="Serving formats to convert to and hold against TensorFlow: onnx, onnx-fp16, onnx-int8, litert, "
        "openvino; ['all'] for every target whose packages are installed; [] for none.",
    )
    inputs_path: str = Field(
        default="",
        title="Inputs file (.npz or tf.Example records)",
        description="NumPy .npz keyed by signature input name, or a TFRecord file of serialized tf.Example "
        "records for the signature's string input. Empty: seeded synthetic inputs.",
    )
    contract_path: str = Field(
        default="",
        title="Expected contract (YAML or JSON)",
        description="Input and output names, dtypes and shapes (null for a dynamic dimension) the signature must have.",
    )
    baseline: str = Field(
        default="champion",
        title="Baseline",
        description="The version to compare with: a SavedModel path (or TF Serving base path), models:/NAME/VERSION, "
        "or an alias of the same registered model (default champion, when there is one). Removed inputs, dtype or "
        "rank changes are breaking; output drift and latency change are measured. Empty: no baseline.",
    )
    tracking_uri: str = Field(
        default="",
        title="MLflow tracking URI",
        description="Empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory.",
    )
    register_as: str = Field(
        default="",
        title="Register as",
        description="For a path source: register the SavedModel (and ONNX model) under this registered model name. "
        "Empty: not registered.",
    )
    alias: str = Field(
        default="validated",
        title="Alias on success",
        description="Registry alias set on the version when the validation passed and the version is signed "
        "(see Signing key). Never 'champion'. Empty: none.",
    )
    signing_key: str = Field(
        default="",
        title="Signing key",
        description="A PEM elliptic-curve private key (its password, if any, in MODELGATE_SIGNING_KEY_PASSWORD): "
        "a version that passed is signed with it (OpenSSF model signing) before the alias moves. Empty: the "
        "version is not signed and gets no alias.",
    )
    signing_certificate: str = Field(
        default="",
        title="Signing certificate",
        description="The signing key's PEM certificate, the chain that issued it after it in the same file: the "
        "version is signed in model-signing's certificate mode, verified with that chain. Empty: the key alone.",
    )

    tags: list[str] = Field(
        default=[],
        title="Tag-set",
        description="MetaGraph tag-set to load, for example ['serve']. Empty: the only one, or the 'serve' one.",
    )
    model_version: int | None = Field(
        default=None, ge=0,
        title="Model version",
        description="For a TF Serving base path (base/1, base/2, ...): the version to validate. Empty: the latest.",
    )
    value_range: dict[str, list[float]] = Field(
        default={},
        title="Value ranges of synthetic inputs",
        description='[low, high] per input name (or tf.Example feature), "" for the rest: {"": [0, 1], '
        '"token_ids": [0, 999]}. Empty: integer inputs take the rows of the tables they index in the graph, '
        'else [0, 1]; floats are standard normal. A named range wins over the graph\'s, the graph\'s over "".',
    )
    batch_size: int = Field(
        default=4, ge=1, le=4096,
        title="Batch size for checks",
        description="Size given to dynamic batch dimensions of synthetic inputs.",
    )
    unknown_dim_size: int = Field(
        default=8, ge=1, le=4096,
        title="Size for other unknown dimensions",
        description="Size given to unknown non-batch dimensions of synthetic inputs.",
    )
    seed: int = Field(default=0, title="Seed", description="Seed of the synthetic inputs.")
    export_onnx: bool = Field(
        default=True, title="Export to ONNX", description="Convert with tf2onnx and compare ONNX Runtime with TensorFlow."
    )
    onnx_opset: int | None = Field(
        default=None, ge=7,
        title="ONNX opset",
        description="Opset for tf2onnx. Empty: the highest that tf2onnx and ONNX Runtime both support.",
    )
    optional_targets: list[str] = Field(
        default=[],
        title="Optional targets",
        description="Targets whose failures are reported without deciding the validation.",
    )
    target_criteria: dict[str, Criteria] = Field(
        default={},
        title="Criteria per target",
        description='Overrides of a target\'s default criteria, e.g. {"onnx-int8": {"min_cosine_similarity": 0.98}}.',
    )
    atol: Tolerance = Field(
        default={},
        title="Absolute tolerance",
        description='ONNX vs TensorFlow atol: one number, or per output {"": default, "output_name": value}. '
        "Empty: by the graph's lowest float precision (1e-4 for float32, 1e-2 for float16, 1e-1 for bfloat16).",
    )
    rtol: Tolerance = Field(
        default={},
        title="Relative tolerance",
        description='ONNX vs TensorFlow rtol: one number, or per output {"": default, "output_name": value}. '
        "Empty: by the graph's lowest float precision (1e-3 for float32, 1e-2 for float16, 1e-1 for bfloat16).",
    )
    onnx_requirement: Literal["required", "optional"] = Field(
        default="required",
        title="ONNX requirement",
        description="required: an ONNX error or mismatch decides the validation; optional: it is reported only.",
    )
    onnx_external_data: Literal["auto", "always"] = Field(
        default="auto",
        title="ONNX external data",
        description="auto: weights go to model.onnx.data only when the file would pass 2 GB; always: every time.",
    )
    onnx_batches: int = Field(
        default=8, ge=1, le=256,
        title="ONNX comparison batches",
        description="Seeded synthetic input batches ONNX Runtime is compared on (plus the inputs file, if given).",
    )
    allow_ops: list[str] = Field(
        default=[],
        title="Allowed ops",
        description="Op types the op scan refuses (outside its allowlist, or breaking an op's rule) which this "
        "model may use anyway.",
    )
    op_libraries: list[str] = Field(
        default=[],
        title="Op libraries",
        description="Python packages that register custom ops (e.g. tensorflow_text), imported before the op scan "
        "and in every model process before the model loads.",
    )
    report_path: str = Field(
        default=DEFAULT_REPORT_PATH, title="Report path", description="Where report.json is written."
    )
    output_dir: str = Field(
        default=DEFAULT_OUTPUT_DIR,
        title="Output directory",
        description="Working files of each validation (inputs, ONNX model, plots) go to a subfolder here.",
    )
    experiment_name: str = Field(default="modelgate", title="MLflow experiment", description="Experiment of the run.")
    benchmark: BenchmarkSettings = Field(
        default=BenchmarkSettings(), title="Benchmark", description="Latency and throughput measurement."
    )
    limits: SandboxLimits = Field(
        default=SandboxLimits(), title="Sandbox limits", description="Bounds on each stage that runs model code."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_flat_keys(cls, data):
        return _grouped(data) if isinstance(data, dict) else data

    def benchmarks_runtime(self, runtime: str) -> bool:
        return self.benchmark.enabled and (not self.benchmark.runtimes or runtime in self.benchmark.runtimes)

    @field_validator("atol", "rtol")
    @classmethod
    def _valid_tolerance(cls, value: Tolerance) -> Tolerance:
        return _normalized_tolerance(value)

    @field_validator("value_range")
    @classmethod
    def _valid_ranges(cls, ranges: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, bounds in ranges.items():
            if len(bounds) != 2 or not all(math.isfinite(b) for b in bounds) or bounds[0] > bounds[1]:
                raise ValueError(f"the range of '{name}' must be [low, high] with low <= high, found {bounds}")
        return ranges

    @model_validator(mode="after")
    def _known_targets(self) -> ValidationRequest:
        from modelgate.targets import ALL, registry

        known = set(registry())
        for field, names in (("targets", self.targets), ("optional_targets", self.optional_targets),
                             ("target_criteria", list(self.target_criteria))):
            unknown = sorted(set(names) - known - ({ALL} if field == "targets" else set()))
            if unknown:
                raise ValueError(f"{field}: unknown target {', '.join(unknown)}; the targets are {', '.join(sorted(known))}")
        return self

    def as_parameters(self) -> dict:
        """The request as a deployment run's parameters: in the current shape whatever keys built it (Prefect
        holds run parameters to the flow's schema, which knows no flat keys of earlier releases)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def conversion_targets(self) -> list[str]:
        """The targets asked; export_onnx=False (--no-onnx, kept from earlier releases) takes onnx out."""
        return [name for name in self.targets if self.export_onnx or name != "onnx"]

    def requirement_of(self, target: str) -> Literal["required", "optional"]:
        optional = target in self.optional_targets or (target == "onnx" and self.onnx_requirement == "optional")
        return "optional" if optional else "required"

    def severity_of(self, target: str) -> Literal["error", "warning"]:
        """What a target's failed check costs: the verdict for a required target, a warning for an optional one."""
        return "error" if self.requirement_of(target) == "required" else "warning"

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    @field_validator("alias")
    @classmethod
    def _not_champion(cls, alias: str) -> str:
        if alias in PROTECTED_ALIASES:
            raise ValueError(f"'{alias}' is moved by people, never by modelgate")
        return alias


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"

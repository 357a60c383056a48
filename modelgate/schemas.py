"""Typed data that flows between stages: the request users fill in, the report they read."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

DEFAULT_REPORT_PATH = "modelgate-report.json"
DEFAULT_OUTPUT_DIR = "modelgate-out"
MIN_MEMORY_LIMIT_MB = 64
# Each conversion target runs these stages, named "<kind>-<target>" (export-onnx, compare-litert, ...).
TARGET_STAGE_KINDS = ("export", "compare", "benchmark")
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


class SparseTensorNames(BaseModel):
    indices: str
    values: str
    dense_shape: str


class TensorSpec(BaseModel):
    dtype: str
    shape: list[int | None] | None = Field(description="None for unknown rank; None entries for unknown dims.")
    declared_dtype: str | None = Field(
        default=None,
        description="The dtype as the SavedModel declares it, where it differs from dtype: a TF1 reference "
        "type such as float32_ref, whose values are plain float32.",
    )
    tensor_name: str | None = Field(default=None, description="The graph tensor the signature binds, e.g. x:0.")
    declared_shape: list[int | None] | None = Field(
        default=None,
        description="The shape as the signature declares it, where the TF1 graph's own tensor disagrees: shape "
        "is then the graph's, which a TF1 Session and TF Serving feed and return.",
    )
    sparse: SparseTensorNames | None = Field(
        default=None,
        description="A SparseTensor (TF1 coo_sparse): its component tensors. Inputs and outputs carry it dense, "
        "zeros being absent entries; runners feed it as its components.",
    )

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


class ExampleFeature(BaseModel):
    """One feature of the tf.Example spec a serialized input is parsed with."""

    key: str
    kind: Literal["dense", "sparse", "ragged"]
    dtype: str = Field(description="float32, int64 or string: the kinds of list a tf.Example holds.")
    shape: list[int] = Field(default=[], description="Dense features: the shape of one example's value (-1: any).")


class InputFacts(BaseModel):
    """What the graph says about one input's values, read statically at inspection; synthesis follows it."""

    value_range: list[int] = Field(
        default=[], description="[low, high] an integer input may take: it indexes tables with high + 1 rows."
    )
    range_detail: str = Field(default="", description="The tables the input indexes, with their rows.")
    vocabulary: list[str] = Field(default=[], description="A sample of the keys of the model's string lookup tables.")
    example_features: list[ExampleFeature] = Field(
        default=[], description="A serialized tf.Example input: the features its parse op reads."
    )
    parsed_by: str = Field(default="", description="The parse op a serialized tf.Example input feeds.")


class SignatureSpec(BaseModel):
    key: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    input_facts: dict[str, InputFacts] = Field(
        default={}, description="By input name, where the graph says something about its values (tables, "
        "vocabulary, tf.Example spec)."
    )


class ReachableCode(BaseModel):
    """What one entry point (a signature, the init ops, the loader's restore, the loaded object) can run."""

    functions: list[str] = Field(description="Functions of the library it reaches, transitively.")
    ops: list[str] = Field(description="Op types of the graph nodes and functions it reaches.")


class OpFinding(BaseModel):
    """One op the scan refuses or cannot judge: where it is and what reaches it."""

    op: str
    node: str
    function: str | None = Field(description="The library function holding the node; None for the graph itself.")
    reached_from: list[str] = Field(description="Entry points that reach it: 'signature KEY', 'init', 'restore', ...")
    rule: str = ""

    def describe(self) -> str:
        where = f"function {self.function}" if self.function else "the graph"
        rule = f": {self.rule}" if self.rule else ""
        return f"{self.op} (node {self.node} in {where}, reached from {', '.join(self.reached_from)}){rule}"


class OpScan(BaseModel):
    """The default-deny scan of what loading and serving can execute (modelgate.op_scan)."""

    reachable: dict[str, ReachableCode] = {}
    refused: list[OpFinding] = Field(default=[], description="Ops outside the allowlist or breaking a one-form rule.")
    unregistered: list[OpFinding] = Field(default=[], description="Ops this TensorFlow and its op libraries lack.")


class MetaGraphInfo(BaseModel):
    tags: list[str]
    signatures: dict[str, SignatureSpec]
    ops: list[str] = Field(description="Every op type in the graph and its function library, sorted.")
    op_scan: OpScan = OpScan()
    float_precision: str = Field(
        default="float32", description="The lowest float precision an op computes in: float32, float16 or bfloat16."
    )
    devices: list[str] = Field(
        default=[], description="The devices the graph's ops were pinned to when it was exported (/device:GPU:0, "
        "...); loaded with soft placement, as TF Serving does, they run where this machine can."
    )
    functions: list[str] = Field(
        default=[], description="The tf.functions TF2's loader restores, by their path in the saved object graph "
        "(none in a TF1 graph): what a SavedModel without signatures still holds."
    )


CheckStatus = Literal["passed", "failed", "warning", "skipped"]


Severity = Literal["error", "warning", "info"]
STATUS_WHEN_BROKEN: dict[str, CheckStatus] = {"error": "failed", "warning": "warning", "info": "passed"}


class Check(BaseModel):
    """One named rule. Its severity says what breaking it costs: `error` fails the validation (status
    `failed`), `warning` does not (status `warning`), `info` is a note (status `passed`)."""

    name: str
    status: CheckStatus
    message: str
    severity: Severity = Field(default=None, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _severity_from_status(cls, values):
        if isinstance(values, dict) and values.get("severity") is None:
            values = {**values, "severity": "warning" if values.get("status") == "warning" else "error"}
        return values


class BenchmarkResult(BaseModel):
    target: str = Field(default="savedmodel", description="What ran: the SavedModel itself, or a conversion target.")
    runtime: str
    device: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput: float = Field(description="Samples per second at this batch size, from the mean latency.")
    iterations: int
    windows: int
    stable: bool = Field(description="False: the window means never settled within 10 %; the figures are kept.")
    cut_by_budget: bool = Field(
        default=False, description="The benchmark budget ended this measurement after its fewest whole windows."
    )
    intra_op_threads: int
    inter_op_threads: int
    providers: list[str] = Field(default=[], description="ONNX Runtime's providers, in the order used.")


class UnmeasuredBenchmark(BaseModel):
    """A batch size the sweep planned and did not measure, and why."""

    target: str = "savedmodel"
    runtime: str
    device: str
    batch_size: int
    reason: str


class OutputComparison(BaseModel):
    """One output of one runtime against the reference, over every compared batch."""

    # An infinite error written as JSON null would read as 'not computed'.
    model_config = ConfigDict(ser_json_inf_nan="strings")

    max_abs_diff: float | None
    max_rel_diff: float | None
    mean_abs_diff: float | None = None
    median_abs_diff: float | None = None
    p99_abs_diff: float | None = None
    mean_rel_diff: float | None = None
    median_rel_diff: float | None = None
    p99_rel_diff: float | None = None
    failing_elements: int = 0
    total_elements: int = 0
    failing_share: float | None = None
    min_passing_atol: float | None = Field(
        default=None, description="Smallest atol that would have passed every element, rtol as set."
    )
    min_passing_rtol: float | None = Field(
        default=None, description="Smallest rtol that would have passed every element, atol as set."
    )
    cosine_similarity: float | None = None
    top1_agreement: float | None = Field(
        default=None, description="Rank-2 outputs with several classes: share of rows with the same arg-max."
    )
    top5_agreement: float | None = Field(
        default=None, description="More than 5 classes: share of rows whose reference top-1 is in the top 5."
    )
    atol: float | None = None
    rtol: float | None = None
    passed: bool
    message: str = ""


class RuntimeComparison(BaseModel):
    """One runtime on one device, running a target's artifact, against TensorFlow."""

    runtime: str = "onnxruntime"
    device: str = "cpu"
    providers: list[str] = Field(description="Where the runtime actually ran (ONNX Runtime's providers, OpenVINO's "
                                 "device), in priority order.")
    graph_optimization_level: str = ""
    outputs: dict[str, OutputComparison]
    batches: int
    histograms: dict[str, str] = Field(default={}, description="PNG of absolute errors, by output name.")

    def failing(self) -> list[str]:
        return [name for name, result in self.outputs.items() if not result.passed]


class ConversionRecord(BaseModel):
    """What one target's converter made of the model, and what the checks of its file found; kept as
    <target>/conversion.json."""

    path: str | None = Field(description="The artifact (file or folder); None when the conversion failed.")
    size_bytes: int | None = Field(default=None, description="The artifact on disk, external data included.")
    duration_s: float | None = None
    checks: list[Check] = []
    converter_message: str = Field(default="", description="What the converter itself said.")
    failure: str | None = Field(default=None, description="Why the file cannot be used, in one line; None if it can.")
    details: dict[str, str | int | float | bool | dict[str, int] | None] = Field(
        default={}, description="The target's own facts: opset, external data, unsupported ops, precision.")
    reproduce: str = Field(default="", description="Shell commands that redo the conversion.")
    artifacts: dict[str, str] = {}


class TargetSection(BaseModel):
    """One conversion target: its conversion, its file's checks, and each runtime and device against TensorFlow."""

    name: str
    artifact_format: str
    parent: str | None = Field(default=None, description="The target whose artifact this one converts from.")
    requirement: Literal["required", "optional"] = "required"
    status: Literal["passed", "failed", "error", "skipped"] = "skipped"
    message: str = ""
    conversion: ConversionRecord | None = None
    criteria: Criteria = Criteria()
    batches: int = 0
    comparisons: dict[str, RuntimeComparison] = Field(default={}, description="By 'runtime/device'.")
    not_compared: dict[str, str] = Field(default={}, description="'runtime/device' left out, and why.")
    mlflow_model_uri: str | None = None

    @property
    def checks(self) -> list[Check]:
        return self.conversion.checks if self.conversion else []


class OnnxSection(BaseModel):
    status: Literal["passed", "failed", "error", "skipped"] = "skipped"
    opset: int | None = None
    path: str | None = None
    external_data: bool = False
    message: str = ""
    unsupported_ops: dict[str, int] = Field(default={}, description="Op types tf2onnx could not convert, with counts.")
    converter_message: str = Field(default="", description="What tf2onnx itself said about the conversion.")
    checks: list[Check] = Field(default=[], description="Checks of the ONNX file: checker, shape inference, I/O.")
    atol: Tolerance | None = None
    rtol: Tolerance | None = None
    batches: int = 0
    providers: list[str] = []
    graph_optimization_level: str | None = None
    outputs: dict[str, OutputComparison] = {}
    cuda: RuntimeComparison | None = Field(default=None, description="The same comparison on the CUDA provider.")
    cuda_message: str = ""
    mlflow_model_uri: str | None = None


def target_stage(kind: str, target: str) -> str:
    return f"{kind}-{target}"


def target_check(target: str, kind: str) -> str:
    """A target's own check: `conversion` (its converter made a usable file) or `parity` (its runtimes met its
    criteria against TensorFlow)."""
    return f"{target.replace('-', '_')}_{kind}"


def onnx_alias(section: TargetSection) -> OnnxSection:
    conversion = section.conversion or ConversionRecord(path=None)
    cpu, gpu = section.comparisons.get("onnxruntime/cpu"), section.comparisons.get("onnxruntime/gpu")
    return OnnxSection(
        status=section.status, message=section.message, path=conversion.path,
        opset=conversion.details.get("opset"), external_data=bool(conversion.details.get("external_data")),
        unsupported_ops=conversion.details.get("unsupported_ops") or {}, converter_message=conversion.converter_message,
        checks=conversion.checks, atol=section.criteria.atol, rtol=section.criteria.rtol, batches=section.batches,
        providers=cpu.providers if cpu else [], graph_optimization_level=cpu.graph_optimization_level if cpu else None,
        outputs=cpu.outputs if cpu else {}, cuda=gpu, cuda_message=section.not_compared.get("onnxruntime/gpu", ""),
        mlflow_model_uri=section.mlflow_model_uri,
    )


class MlflowSection(BaseModel):
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None


class DerivedFrom(BaseModel):
    """A SavedModel modelgate exported itself from the Keras file of a registry version's MLflow flavor."""

    flavor: str = Field(description="The MLflow flavor holding the Keras file: tensorflow or keras.")
    keras_file: str = Field(description="The Keras file, relative to the version's files (data/model.keras).")
    keras_version: str = Field(description="The Keras that loaded it (safe_mode=True) and exported the SavedModel.")
    saved_with_keras: str | None = Field(default=None, description="The Keras version the file says saved it.")
    saved_model_dir: str = Field(description="Where the derived SavedModel was written, in the working folder.")


class BaselineSection(BaseModel):
    source: str | None = None
    derived_from: DerivedFrom | None = None
    skipped_reason: str | None = None
    drift: dict[str, dict[str, float | str | None]] = Field(
        default={}, description="Per output: max abs and rel difference from the baseline's outputs, same inputs."
    )
    current_p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    latency_change_pct: float | None = Field(default=None, description="p50 of this version against the baseline's.")


class RegistrySection(BaseModel):
    name: str | None = None
    version: str | None = None
    actions: list[str] = []


class StageRecord(BaseModel):
    """failed: the stage judged the model and it missed a requirement (its check says which); error: the
    stage could not judge; interrupted: stopped by a signal (Ctrl-C, a cancelled flow run)."""

    name: str
    status: Literal["running", "ok", "failed", "error", "skipped", "interrupted"]
    duration_s: float = 0.0
    message: str = ""


class ValueRange(BaseModel):
    """The range synthetic values of an input (or a tf.Example feature) were drawn from, and why."""

    low: float
    high: float
    origin: Literal["graph", "user", "default"] = Field(
        description="graph: the tables the input indexes; user: --value-range; default: [0, 1] for integers."
    )
    detail: str = ""


class InputsSection(BaseModel):
    source: Literal["synthetic", "file", "warmup", "unavailable"] = Field(
        description="Synthesized, the inputs file asked, or the TF Serving warm-up records the SavedModel ships."
    )
    path: str | None = None
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    seed: int | None = None
    message: str = ""
    value_ranges: dict[str, ValueRange] = Field(
        default={}, description="Synthetic numeric inputs and tf.Example features given a range, by name "
        "(floats without one are standard normal)."
    )
    samples: dict[str, list[str]] = Field(
        default={}, description="Synthetic string inputs: the first strings; tf.Example inputs: the first Example."
    )
    example_features: dict[str, list[ExampleFeature]] = Field(
        default={}, description="Synthetic tf.Example inputs: the parse spec read from the graph."
    )
    working_batch_size: int | None = Field(
        default=None,
        description="Set when the declared dynamic batch fails at these inputs' batch size (see dynamic_batch_runs): "
        "the batch size the checks, comparisons and benchmarks run at instead.",
    )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ValidationReport(BaseModel):
    status: Literal["running", "passed", "failed", "error"] = "running"
    source: str
    model_dir: str | None = Field(default=None, description="The local SavedModel directory validated.")
    resolved_model_dir: str | None = Field(
        default=None, description="The SavedModel directory validated: model_dir, or its TF Serving version folder."
    )
    model_version: int | None = Field(default=None, description="The TF Serving version folder chosen, if any.")
    model_format: str | None = Field(default=None, description="tf1-graph, tf2, or keras2 (tf_keras model.save).")
    derived_from: DerivedFrom | None = Field(
        default=None, description="Set when the SavedModel validated was exported from a Keras flavor's file."
    )
    started_at: str = Field(default_factory=utc_now)
    finished_at: str | None = None
    tags: list[str] | None = None
    signature: str | None = None
    signatures: dict[str, SignatureSpec] = {}
    ops: list[str] = []
    reachable_code: dict[str, ReachableCode] = Field(
        default={}, description="What each entry point of the chosen MetaGraph can execute, as the op scan walked it."
    )
    inputs: InputsSection | None = None
    checks: list[Check] = []
    benchmarks: list[BenchmarkResult] = []
    benchmarks_unmeasured: list[UnmeasuredBenchmark] = Field(
        default=[], description="Batch sizes a sweep planned and left unmeasured (its time budget spent)."
    )
    targets: dict[str, TargetSection] = Field(
        default={}, description="Each conversion target asked: its conversion, checks and comparisons, by name."
    )
    mlflow: MlflowSection = MlflowSection()
    registry: RegistrySection = RegistrySection()
    baseline: BaselineSection = BaselineSection()
    stages: list[StageRecord] = []
    artifacts: dict[str, str] = Field(default={}, description="Files this validation produced, by artifact name.")
    environment: dict[str, str] = {}
    request: ValidationRequest
    workdir: str

    @computed_field(description="Deprecated alias of targets.onnx in the shape of earlier releases; read targets.")
    @property
    def onnx(self) -> OnnxSection:
        section = self.targets.get("onnx")
        if section is None:
            return OnnxSection(message="not asked")
        return onnx_alias(section)

    def deciding_stages(self) -> list[StageRecord]:
        """Every stage but those of optional targets, whose outcome is reported only."""
        optional = {target_stage(kind, name) for name, section in self.targets.items()
                    if section.requirement == "optional" for kind in TARGET_STAGE_KINDS}
        return [stage for stage in self.stages if stage.name not in optional]

    def failed_targets(self) -> list[TargetSection]:
        return [t for t in self.targets.values() if t.status == "failed" and t.requirement == "required"]

    @model_validator(mode="after")
    def _failed_names_its_check(self) -> ValidationReport:
        if self.status == "failed" and not self.failed_checks():
            raise ValueError("a failed verdict names the check that failed; this report has none")
        return self

    def first_error(self) -> str | None:
        return next((stage.message for stage in self.deciding_stages() if stage.status == "error"), None)

    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    def verdict_line(self) -> str:
        """The verdict in one line, as the Prefect flow run's state message and notifications carry it."""
        if self.status == "error":
            return f"error: {self.first_error() or 'the validation did not complete'}"
        failed = self.failed_checks()
        if failed:
            return f"failed: {', '.join(c.name for c in failed)}: {failed[0].message}"
        return self.status

    def conclude(self) -> None:
        """The verdict: `failed` comes only from failed checks, so every failed verdict names its check; a
        required target that failed without one is a defect of modelgate's, never a verdict on the model."""
        if any(stage.status == "error" for stage in self.deciding_stages()):
            self.status = "error"
        elif self.failed_checks():
            self.status = "failed"
        elif unchecked := [target.name for target in self.failed_targets()]:
            raise AssertionError(f"target {', '.join(unchecked)} failed without a failed check")
        else:
            self.status = "passed"
        self.finished_at = utc_now()


class StageResult(BaseModel):
    """What a stage hands back; it knows which part of the report it fills."""

    def apply_to(self, report: ValidationReport) -> str | None:
        """Fill the report; return why the stage failed where its result is a failed check (the stage itself
        completed)."""
        raise NotImplementedError


class Inspection(StageResult):
    model_dir: str = Field(description="The directory model code loads: the resolved SavedModel, or its loadable copy.")
    resolved_model_dir: str
    model_version: int | None = None
    model_format: str
    saved_model_file: str
    meta_graphs: list[MetaGraphInfo]
    checks: list[Check] = []

    def apply_to(self, report: ValidationReport) -> None:
        """The choice of MetaGraph and signature, a later stage, decides what else of this the report shows."""
        report.resolved_model_dir = self.resolved_model_dir
        report.model_version = self.model_version
        report.model_format = self.model_format
        report.checks.extend(self.checks)


class SignatureChoice(StageResult):
    model_dir: str
    model_format: str = Field(description="tf1-graph, tf2 or keras2: decides the reference runtime.")
    tags: list[str]
    signature: SignatureSpec
    meta_graph: MetaGraphInfo
    checks: list[Check]
    atol: Tolerance = Field(description="The request's atol, its defaults set by the graph's float precision.")
    rtol: Tolerance = Field(description="The request's rtol, its defaults set by the graph's float precision.")

    def apply_to(self, report: ValidationReport) -> None:
        report.tags = self.tags
        report.signature = self.signature.key
        report.signatures = self.meta_graph.signatures
        report.ops = self.meta_graph.ops
        report.reachable_code = self.meta_graph.op_scan.reachable
        report.checks.extend(self.checks)


class CheckList(StageResult):
    checks: list[Check]

    def apply_to(self, report: ValidationReport) -> None:
        report.checks.extend(self.checks)


class PreparedInputs(StageResult):
    section: InputsSection
    checks: list[Check] = []

    @property
    def path(self) -> str | None:
        return self.section.path

    def batch_size(self, request: ValidationRequest) -> int:
        """The size for dynamic batch dimensions of inputs synthesized after these."""
        return self.section.working_batch_size or request.batch_size

    def apply_to(self, report: ValidationReport) -> None:
        report.inputs = self.section
        report.checks.extend(self.checks)
        if self.section.path:
            report.artifacts["inputs.npz"] = self.section.path


class ReferenceOutputs(StageResult):
    checks: list[Check]
    path: str | None

    def apply_to(self, report: ValidationReport) -> None:
        report.checks.extend(self.checks)
        if self.path:
            report.artifacts["reference_outputs.npz"] = self.path


class BenchmarkRun(StageResult):
    results: list[BenchmarkResult]
    unmeasured: list[UnmeasuredBenchmark] = []
    checks: list[Check] = []
    artifacts: dict[str, str] = {}

    @classmethod
    def merged(cls, runs: list[BenchmarkRun]) -> BenchmarkRun:
        return cls(
            results=[r for run in runs for r in run.results], unmeasured=[u for run in runs for u in run.unmeasured],
            checks=[c for run in runs for c in run.checks], artifacts={k: v for run in runs for k, v in run.artifacts.items()},
        )

    def apply_to(self, report: ValidationReport) -> None:
        report.benchmarks.extend(self.results)
        report.benchmarks_unmeasured.extend(self.unmeasured)
        report.checks.extend(self.checks)
        report.artifacts.update(self.artifacts)


class ComparisonBatches(StageResult):
    """The batches every target is compared on: the checked inputs and seeded ones, each with TensorFlow's
    outputs (inputs .npz, reference outputs .npz)."""

    batches: list[tuple[str, str]] = []
    skipped_reason: str | None = None

    def apply_to(self, report: ValidationReport) -> None:
        pass  # the targets' comparisons report them


class TargetPlan(StageResult):
    sections: dict[str, TargetSection]
    runnable: list[str] = Field(description="The targets to convert, each after its parent.")

    def apply_to(self, report: ValidationReport) -> None:
        report.targets = self.sections


class TargetArtifact(StageResult):
    """A target's converted artifact, usable: its file may still fail a check that does not stop it from running
    (an output's dimension fixed where the signature's is dynamic), which then fails the target by name."""

    target: str
    conversion: ConversionRecord

    @property
    def path(self) -> str:
        return self.conversion.path

    def apply_to(self, report: ValidationReport) -> str | None:
        section = report.targets[self.target]
        section.conversion = self.conversion
        report.artifacts.update(self.conversion.artifacts)
        failed = [check for check in self.conversion.checks if check.status == "failed"]
        severity = report.request.severity_of(self.target)
        report.checks += [
            Check(name=check.name, status=STATUS_WHEN_BROKEN[severity], severity=severity,
                  message=f"{self.target}: {check.message}")
            for check in failed
        ]
        if failed:
            section.message = f"converted; its file failed {', '.join(check.name for check in failed)}"
            return section.message
        section.message = "converted; its file passed every check"
        return None


def _tolerance_text(name: str, value: Tolerance) -> str:
    if isinstance(value, dict):
        per_output = ", ".join(f"{k}: {v:g}" for k, v in value.items() if k)
        return f"{name}={value['']:g}" + (f" ({per_output})" if per_output else "")
    return f"{name}={value:g}"


def _missed(name: str, result: OutputComparison) -> str:
    return name if result.max_abs_diff is None else f"{name} (max abs diff {result.max_abs_diff:.3g})"


class TargetComparison(StageResult):
    """Every runtime of a target's format, on every device, against TensorFlow, judged by its criteria."""

    target: str
    criteria: Criteria
    batches: int = 0
    comparisons: dict[str, RuntimeComparison] = {}
    not_compared: dict[str, str] = {}
    skipped_reason: str | None = None
    artifacts: dict[str, str] = {}

    def apply_to(self, report: ValidationReport) -> str | None:
        section = report.targets[self.target]
        section.criteria, section.batches = self.criteria, self.batches
        section.comparisons, section.not_compared = self.comparisons, self.not_compared
        report.artifacts.update(self.artifacts)
        if self.skipped_reason:
            section.status, section.message = "skipped", f"comparison skipped: {self.skipped_reason}"
            return None
        figures = f"{_tolerance_text('atol', self.criteria.atol)} and {_tolerance_text('rtol', self.criteria.rtol)}"
        if not self.criteria.elementwise:
            figures = "its criteria"
        mismatches = [
            f"{'' if key.endswith('/cpu') else f'on {key}, '}outputs "
            + ", ".join(_missed(name, run.outputs[name]) for name in run.failing())
            + f" miss {figures}"
            for key, run in self.comparisons.items() if run.failing()
        ]
        if not self.comparisons:
            mismatches.append("no runtime could run it: " + "; ".join(f"{k}: {v}" for k, v in self.not_compared.items()))
        parity = "; ".join(mismatches) or (
            f"every output within {figures} on {self.batches} batches ("
            + "; ".join(f"{key}: {', '.join(run.providers)}" for key, run in self.comparisons.items()) + ")"
        )
        # The file's own failed checks (named in the report by the export) fail the target too.
        problems = mismatches + [f"check {check.name} failed" for check in section.checks if check.status == "failed"]
        section.status = "failed" if problems else "passed"
        section.message = "; ".join(problems) if problems else parity
        severity = report.request.severity_of(self.target)
        report.checks.append(Check(
            name=target_check(self.target, "parity"), status=STATUS_WHEN_BROKEN[severity] if mismatches else "passed",
            severity=severity, message=f"{self.target}: {parity}",
        ))
        return parity if mismatches else None


class MlflowRunOpened(StageResult):
    section: MlflowSection

    def apply_to(self, report: ValidationReport) -> None:
        report.mlflow = self.section


class LoggedModels(StageResult):
    uris: dict[str, str] = Field(description="The MLflow logged model of each target logged as one, by target.")

    def apply_to(self, report: ValidationReport) -> None:
        for name, uri in self.uris.items():
            report.targets[name].mlflow_model_uri = uri


class Artifacts(StageResult):
    """Files a stage wrote for people to read (benchmark figures, report.html): name -> path."""

    artifacts: dict[str, str]

    def apply_to(self, report: ValidationReport) -> None:
        report.artifacts.update(self.artifacts)


class BaselineChoice(StageResult):
    source: str | None = None
    model_dir: str | None = None
    registry_name: str | None = None
    registry_version: str | None = None
    derived_from: DerivedFrom | None = None
    skipped_reason: str | None = None

    def apply_to(self, report: ValidationReport) -> None:
        report.baseline.source, report.baseline.skipped_reason = self.source, self.skipped_reason
        report.baseline.derived_from = self.derived_from


class BaselineComparison(StageResult):
    drift: dict[str, dict[str, float | str | None]] = {}
    current_p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    latency_change_pct: float | None = None
    skipped_reason: str | None = None

    def apply_to(self, report: ValidationReport) -> None:
        section = report.baseline
        if self.skipped_reason:
            section.skipped_reason = section.skipped_reason or self.skipped_reason
            return
        section.drift, section.latency_change_pct = self.drift, self.latency_change_pct
        section.current_p50_ms, section.baseline_p50_ms = self.current_p50_ms, self.baseline_p50_ms


class ResolvedSource(StageResult):
    source: str
    model_dir: str = Field(description="The SavedModel; for a Keras flavor, the version's files it is derived from.")
    keras_flavor: str | None = Field(default=None, description="The MLflow flavor whose Keras file keras_file is.")
    keras_file: str | None = None
    registry_name: str | None = None
    registry_version: str | None = None
    version_files: str | None = Field(default=None, description="A registry version's files, as downloaded.")

    def apply_to(self, report: ValidationReport) -> None:
        report.model_dir = self.model_dir
        report.registry.name, report.registry.version = self.registry_name, self.registry_version


class DerivedSavedModel(StageResult):
    model_dir: str
    derived_from: DerivedFrom

    def apply_to(self, report: ValidationReport) -> None:
        report.model_dir, report.derived_from = self.model_dir, self.derived_from


class RegistryOutcome(StageResult):
    section: RegistrySection
    checks: list[Check] = Field(default=[], description="signature_valid, where the version was signed.")

    def apply_to(self, report: ValidationReport) -> str | None:
        report.registry = self.section
        report.checks.extend(self.checks)
        failed = [check.message for check in self.checks if check.status == "failed"]
        return "; ".join(failed) or None

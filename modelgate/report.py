"""The report people read: every check, figure, target and stage of one validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelgate.criteria import Criteria
from modelgate.description import ExampleFeature, ReachableCode, SignatureSpec
from modelgate.request import ValidationRequest
from modelgate.targets import DIAGNOSTIC_STAGE_KINDS, TARGET_STAGE_KINDS, target_stage

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


class TensorDivergence(BaseModel):
    """One intermediate tensor of TensorFlow's graph against its match in the converted model, on one batch."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    tensorflow_name: str = Field(description="The tensor's name in TensorFlow's frozen graph (op:output).")
    op_type: str = Field(description="The TensorFlow op that computes it.")
    position: int = Field(description="The op's place in TensorFlow's graph order (0: nearest the inputs).")
    target_name: str | None = Field(default=None, description="The tensor's name in the converted model.")
    target_node: str | None = Field(
        default=None, description="The converted model's node that computes it: what a block or exclusion list names.")
    max_abs_diff: float | None = None
    relative_error: float | None = Field(
        default=None, description="The largest absolute difference over the reference's largest magnitude: an error "
        "that compares across tensors of any scale.")
    cosine_similarity: float | None = None
    reference_max_abs: float | None = Field(
        default=None, description="The largest magnitude TensorFlow's tensor holds (a float16 file overflows past 65504).")
    nonfinite: Literal["", "tensorflow", "target", "both"] = Field(
        default="", description="Which side holds NaN or infinity in this tensor, if either does.")
    passed: bool = Field(description="Within the target's criteria (its default tolerances, as for an output).")


class NonFiniteOrigin(BaseModel):
    """The first op that made a NaN or an infinity from finite inputs."""

    side: Literal["tensorflow", "target"]
    name: str = Field(description="The tensor it wrote, as its own side names it.")
    op_type: str
    tensorflow_name: str | None = Field(default=None, description="For the target's side: the TensorFlow tensor it "
                                        "matches, if any.")


class Localisation(BaseModel):
    """Where a target's error comes from: its intermediate tensors against TensorFlow's, in graph order."""

    runtime: str
    device: str = "cpu"
    rows: int = Field(default=0, description="Samples of the comparison batch both sides ran.")
    verdict: Literal["localised", "spread", "agrees", "nonfinite", "unmatched"] = Field(description=(
        "localised: one op's output misses the criteria while everything upstream agrees; spread: the error grows "
        "evenly, no single op is first; agrees: every matched tensor is within the criteria; nonfinite: a NaN or "
        "infinity starts at nonfinite_origin; unmatched: too few tensors could be matched to say."))
    summary: str = Field(default="", description="The finding in one line, as the console and MLflow say it.")
    first: TensorDivergence | None = Field(default=None, description="The first op whose output diverges.")
    upstream: list[TensorDivergence] = Field(default=[], description="The matched tensors the first op reads.")
    downstream: list[TensorDivergence] = Field(
        default=[], description="From the first op to the outputs: how the error grows.")
    nonfinite_origin: NonFiniteOrigin | None = None
    reference_tensors: int = Field(default=0, description="TensorFlow's intermediate tensors compared for.")
    target_tensors: int = Field(default=0, description="The converted model's tensors read back.")
    matched: int = Field(default=0, description="Tensors matched by name on both sides.")
    unmatched: list[str] = Field(
        default=[], description="The converted model's tensors that match no TensorFlow tensor (the first 50).")
    left_out: list[str] = Field(
        default=[], description="Tensors neither side's trace kept (past its byte cap, the first 50): not compared.")
    plot: str | None = Field(default=None, description="PNG: each matched tensor's error in graph order.")


class VariantResult(BaseModel):
    """One way of converting the target differently, tried by the remediation search."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    label: str = Field(description="As the format matrix shows it after the target's name: '3 ops kept in float32'.")
    settings: dict[str, Any] = Field(default={}, description="The target options it changes, and their values.")
    status: Literal["passed", "failed", "error", "untried"] = "untried"
    message: str = ""
    conversion: ConversionRecord | None = None
    comparisons: dict[str, RuntimeComparison] = Field(default={}, description="By 'runtime/device'.")
    p50_ms: float | None = Field(default=None, description="Its latency on CPU at the comparison batch's size.")
    batch_size: int | None = None
    duration_s: float = 0.0


class Remediation(BaseModel):
    """The remediation search: the target's own variants, fastest expected first, until one passes."""

    budget_s: float
    spent_s: float = 0.0
    variants: list[VariantResult] = []
    chosen: str | None = Field(default=None, description="The label of the fastest variant that passed, if any.")
    applied: bool = Field(default=False, description="Whether the chosen variant stands as the target (see "
                          "targets.<name>.remediation); the original failure is kept in original_message.")
    original_message: str = Field(default="", description="What the target's default conversion failed on.")
    summary: str = ""


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
    localisation: Localisation | None = Field(
        default=None, description="Where its error comes from (a failed comparison, or --localise).")
    remediation: Remediation | None = Field(default=None, description="The variants tried after a failed comparison.")

    @property
    def checks(self) -> list[Check]:
        return self.conversion.checks if self.conversion else []



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


class RecommendationSection(BaseModel):
    """The format to serve, as the format matrix (modelgate.reporting.matrix) ranks the targets: the passing target
    that beats TensorFlow by the most on the same device, at the largest batch size both measured."""

    target: str | None = Field(default=None, description="The target to serve; None: none recommended (see reason).")
    variant: str | None = Field(default=None, description="The remediation variant of it to serve, if one stands.")
    runtime: str | None = None
    device: str | None = None
    batch_size: int | None = None
    p50_ms: float | None = None
    reference_runtime: str | None = Field(default=None, description="The TensorFlow runtime it was measured against.")
    reference_p50_ms: float | None = None
    speedup: float | None = Field(default=None, description="TensorFlow's p50 over the target's.")
    line: str = Field(default="", description="The recommendation in words, as the console and MLflow's tags say it.")
    reason: str = Field(default="", description="Why no format is recommended, when none is.")


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
    matrix: list[dict[str, Any]] = Field(
        default=[], description="The format matrix, set with the verdict: one row per target, runtime and device (the "
        "SavedModel's own runtimes first, target 'savedmodel'), with the conversion's cost, parity, worst errors "
        "against TensorFlow and speeds by batch size (modelgate.reporting.matrix.MatrixRow)."
    )
    recommendation: RecommendationSection | None = Field(
        default=None, description="The format to serve, set with the verdict; its target is None when none is."
    )
    mlflow: MlflowSection = MlflowSection()
    registry: RegistrySection = RegistrySection()
    baseline: BaselineSection = BaselineSection()
    stages: list[StageRecord] = []
    artifacts: dict[str, str] = Field(default={}, description="Files this validation produced, by artifact name.")
    environment: dict[str, str] = {}
    request: ValidationRequest
    workdir: str

    def deciding_stages(self) -> list[StageRecord]:
        """Every stage but those of optional targets, whose outcome is reported only, and the diagnostic ones."""
        left_out = {target_stage(kind, name) for name, section in self.targets.items() for kind in TARGET_STAGE_KINDS
                    if section.requirement == "optional" or kind in DIAGNOSTIC_STAGE_KINDS}
        return [stage for stage in self.stages if stage.name not in left_out]

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

"""Typed data that flows between stages: the request users fill in, the report they read."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_REPORT_PATH = "modelgate-report.json"
DEFAULT_OUTPUT_DIR = "modelgate-out"


class ValidationRequest(BaseModel):
    """What to validate and how. Every field has a title and description so Prefect's UI renders a form."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(
        title="SavedModel directory",
        description="Path to a directory that holds saved_model.pb (or saved_model.pbtxt).",
    )
    signature: str | None = Field(
        default=None,
        title="Signature key",
        description="Signature to validate. Empty: serving_default, else the single predict-style signature.",
    )
    tags: list[str] | None = Field(
        default=None,
        title="Tag-set",
        description="MetaGraph tag-set to load, for example ['serve']. Empty: the only one, or the 'serve' one.",
    )
    model_version: int | None = Field(
        default=None, ge=0,
        title="Model version",
        description="For a TF Serving base path (base/1, base/2, ...): the version to validate. Empty: the latest.",
    )
    inputs_path: str | None = Field(
        default=None,
        title="Inputs file (.npz or tf.Example records)",
        description="NumPy .npz keyed by signature input name, or a TFRecord file of serialized tf.Example "
        "records for the signature's string input. Empty: seeded synthetic inputs.",
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
    benchmark_batch_sizes: list[int] = Field(
        default=[1],
        title="Benchmark batch sizes",
        description="Batch sizes at which CPU latency is measured. Empty list: no benchmark.",
    )
    benchmark_warmup: int = Field(default=10, ge=0, title="Warm-up calls", description="Untimed calls before measuring.")
    benchmark_window: int = Field(
        default=25, ge=1, title="Calls per window", description="Timed calls per measurement window."
    )
    benchmark_max_windows: int = Field(
        default=10, ge=3, title="Maximum windows", description="Stop measuring after this many windows, stable or not."
    )
    export_onnx: bool = Field(
        default=True, title="Export to ONNX", description="Convert with tf2onnx and compare ONNX Runtime with TensorFlow."
    )
    onnx_opset: int | None = Field(
        default=None, ge=7,
        title="ONNX opset",
        description="Opset for tf2onnx. Empty: the highest that tf2onnx and ONNX Runtime both support.",
    )
    atol: float = Field(default=1e-4, ge=0, title="Absolute tolerance", description="ONNX vs TensorFlow atol.")
    rtol: float = Field(default=1e-3, ge=0, title="Relative tolerance", description="ONNX vs TensorFlow rtol.")
    model_timeout_s: float = Field(
        default=600, gt=0,
        title="Time limit per model stage (s)",
        description="Wall-clock limit for each stage that runs model code in its child process.",
    )
    memory_limit_mb: int | None = Field(
        default=None, ge=64,
        title="Memory limit per model stage (MiB)",
        description="Kill a model process whose resident memory passes this. Empty: no limit.",
    )
    allow_ops: list[str] = Field(
        default=[],
        title="Allowed risky ops",
        description="Op types that touch files, run Python or reach the network which this model may use anyway.",
    )
    contract_path: str | None = Field(
        default=None,
        title="Expected contract (YAML or JSON)",
        description="Input and output names, dtypes and shapes (null for a dynamic dimension) the signature must have.",
    )
    previous_model_dir: str | None = Field(
        default=None,
        title="Previous version",
        description="A SavedModel (or TF Serving base path) to diff the signature against: removed inputs, "
        "dtype or rank changes are breaking.",
    )
    report_path: str = Field(
        default=DEFAULT_REPORT_PATH, title="Report path", description="Where report.json is written."
    )
    output_dir: str = Field(
        default=DEFAULT_OUTPUT_DIR,
        title="Output directory",
        description="Working files of each validation (inputs, ONNX model, plots) go to a subfolder here.",
    )
    tracking_uri: str | None = Field(
        default=None,
        title="MLflow tracking URI",
        description="Empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory.",
    )
    experiment_name: str = Field(default="modelgate", title="MLflow experiment", description="Experiment of the run.")

    @field_validator("benchmark_batch_sizes")
    @classmethod
    def _positive_batch_sizes(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("benchmark batch sizes must be positive")
        return sorted(set(sizes))

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


class TensorSpec(BaseModel):
    dtype: str
    shape: list[int | None] | None = Field(description="None for unknown rank; None entries for unknown dims.")
    declared_dtype: str | None = Field(
        default=None,
        description="The dtype as the SavedModel declares it, where it differs from dtype: a TF1 reference "
        "type such as float32_ref, whose values are plain float32.",
    )
    tensor_name: str | None = Field(default=None, description="The graph tensor the signature binds, e.g. x:0.")

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


class SignatureSpec(BaseModel):
    key: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class MetaGraphInfo(BaseModel):
    tags: list[str]
    signatures: dict[str, SignatureSpec]
    ops: list[str] = Field(description="Every op type in the graph and its function library, sorted.")
    risky_ops: dict[str, list[str]] = Field(
        default={}, description="Op types that touch files, run Python or reach the network, with where they occur."
    )
    unregistered_ops: list[str] = Field(default=[], description="Op types this TensorFlow does not know (custom ops).")


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
    stable: bool
    intra_op_threads: int
    inter_op_threads: int


class OutputComparison(BaseModel):
    max_abs_diff: float | None
    max_rel_diff: float | None
    mean_abs_diff: float | None = None
    failing_elements: int = 0
    total_elements: int = 0
    passed: bool
    message: str = ""


class OnnxSection(BaseModel):
    status: Literal["passed", "failed", "error", "skipped"] = "skipped"
    opset: int | None = None
    path: str | None = None
    message: str = ""
    atol: float | None = None
    rtol: float | None = None
    providers: list[str] = []
    outputs: dict[str, OutputComparison] = {}


class MlflowSection(BaseModel):
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None


class StageRecord(BaseModel):
    name: str
    status: Literal["running", "ok", "error", "skipped"]
    duration_s: float = 0.0
    message: str = ""


class InputsSection(BaseModel):
    source: Literal["synthetic", "file", "unavailable"]
    path: str | None = None
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    seed: int | None = None
    message: str = ""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ValidationReport(BaseModel):
    status: Literal["running", "passed", "failed", "error"] = "running"
    model_dir: str
    resolved_model_dir: str | None = Field(
        default=None, description="The SavedModel directory validated: model_dir, or its version folder."
    )
    model_version: int | None = Field(default=None, description="The TF Serving version folder chosen, if any.")
    model_format: str | None = Field(default=None, description="tf1-graph, tf2, or keras2 (tf_keras model.save).")
    started_at: str = Field(default_factory=utc_now)
    finished_at: str | None = None
    tags: list[str] | None = None
    signature: str | None = None
    signatures: dict[str, SignatureSpec] = {}
    ops: list[str] = []
    inputs: InputsSection | None = None
    checks: list[Check] = []
    benchmarks: list[BenchmarkResult] = []
    onnx: OnnxSection = OnnxSection()
    mlflow: MlflowSection = MlflowSection()
    stages: list[StageRecord] = []
    artifacts: dict[str, str] = Field(default={}, description="Files this validation produced, by artifact name.")
    environment: dict[str, str] = {}
    request: ValidationRequest
    workdir: str

    def first_error(self) -> str | None:
        return next((stage.message for stage in self.stages if stage.status == "error"), None)

    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    def conclude(self) -> None:
        if any(stage.status == "error" for stage in self.stages):
            self.status = "error"
        elif self.failed_checks() or self.onnx.status == "failed":
            self.status = "failed"
        else:
            self.status = "passed"
        self.finished_at = utc_now()


class StageResult(BaseModel):
    """What a stage hands back; it knows which part of the report it fills."""

    def apply_to(self, report: ValidationReport) -> None:
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
    tags: list[str]
    signature: SignatureSpec
    meta_graph: MetaGraphInfo
    checks: list[Check]

    def apply_to(self, report: ValidationReport) -> None:
        report.tags = self.tags
        report.signature = self.signature.key
        report.signatures = self.meta_graph.signatures
        report.ops = self.meta_graph.ops
        report.checks.extend(self.checks)


class CheckList(StageResult):
    checks: list[Check]

    def apply_to(self, report: ValidationReport) -> None:
        report.checks.extend(self.checks)


class PreparedInputs(StageResult):
    section: InputsSection

    @property
    def path(self) -> str | None:
        return self.section.path

    def apply_to(self, report: ValidationReport) -> None:
        report.inputs = self.section
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
    checks: list[Check] = []
    artifacts: dict[str, str] = {}

    def apply_to(self, report: ValidationReport) -> None:
        report.benchmarks.extend(self.results)
        report.checks.extend(self.checks)
        report.artifacts.update(self.artifacts)


class OnnxExport(StageResult):
    path: str
    opset: int
    artifacts: dict[str, str]

    def apply_to(self, report: ValidationReport) -> None:
        report.onnx.path = self.path
        report.onnx.opset = self.opset
        report.onnx.message = "converted; the ONNX checker and ONNX Runtime accept the model"
        report.artifacts.update(self.artifacts)


class OnnxComparison(StageResult):
    outputs: dict[str, OutputComparison]
    atol: float
    rtol: float
    providers: list[str]
    graph_optimization_level: str
    skipped_reason: str | None = None

    def apply_to(self, report: ValidationReport) -> None:
        onnx = report.onnx
        onnx.outputs, onnx.atol, onnx.rtol, onnx.providers = self.outputs, self.atol, self.rtol, self.providers
        if self.skipped_reason:
            onnx.status, onnx.message = "skipped", f"comparison skipped: {self.skipped_reason}"
            return
        failing = [name for name, result in self.outputs.items() if not result.passed]
        onnx.status = "failed" if failing else "passed"
        onnx.message = (
            f"outputs {', '.join(failing)} exceed atol={self.atol:g} and rtol={self.rtol:g}"
            if failing
            else f"every output within atol={self.atol:g} or rtol={self.rtol:g} "
            f"(providers {', '.join(self.providers)}, optimisation {self.graph_optimization_level})"
        )


class MlflowRunOpened(StageResult):
    section: MlflowSection

    def apply_to(self, report: ValidationReport) -> None:
        report.mlflow = self.section

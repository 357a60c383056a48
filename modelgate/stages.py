"""What each stage hands back, and which part of the report it fills (the messages people read)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from modelgate.criteria import Criteria, Tolerance
from modelgate.description import MetaGraphInfo, SignatureSpec
from modelgate.report import (
    STATUS_WHEN_BROKEN,
    BenchmarkResult,
    Check,
    ConversionRecord,
    DerivedFrom,
    InputsSection,
    Localisation,
    MlflowSection,
    OutputComparison,
    RegistrySection,
    Remediation,
    RuntimeComparison,
    TargetSection,
    UnmeasuredBenchmark,
    ValidationReport,
)
from modelgate.request import ValidationRequest
from modelgate.targets import target_check


class StageResult(BaseModel):
    """What a stage hands back; it knows which part of the report it fills."""

    def apply_to(self, report: ValidationReport) -> str | None:
        """Fill the report; return why the stage failed where its result is a failed check (the stage itself
        completed)."""
        raise NotImplementedError

    def finding(self) -> str | None:
        """What the stage found that people should read in the run's log beside its outcome, if anything."""
        return None


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
        return self.section.working_batch_size or request.inputs.batch_size

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

    @property
    def mismatched(self) -> bool:
        """Some runtime's outputs missed the criteria (a file check failing is no comparison's mismatch)."""
        return any(run.failing() for run in self.comparisons.values())

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


class TargetLocalisation(StageResult):
    """Where a target's error starts, as its first CPU runtime finds it (modelgate.numerics.divergence)."""

    target: str
    localisation: Localisation

    def apply_to(self, report: ValidationReport) -> None:
        report.targets[self.target].localisation = self.localisation
        if self.localisation.plot:
            report.artifacts[f"{self.target}/{Path(self.localisation.plot).name}"] = self.localisation.plot

    def finding(self) -> str | None:
        return self.localisation.summary or None


class TargetRemediation(StageResult):
    """The remediation search of a failed target. A variant that passed stands as the target only where the
    request applies remediation to it: the target's artifact, comparisons and parity check are then the variant's,
    and the default conversion's failure stays in remediation.original_message."""

    target: str
    remediation: Remediation
    artifact: TargetArtifact | None = Field(default=None, description="The chosen variant's artifact, if one passed.")
    artifacts: dict[str, str] = {}

    def apply_to(self, report: ValidationReport) -> None:
        section = report.targets[self.target]
        section.remediation = self.remediation
        self.remediation.original_message = self.remediation.original_message or section.message
        report.artifacts.update(self.artifacts)
        chosen = next((v for v in self.remediation.variants if v.label == self.remediation.chosen), None)
        if not (self.remediation.applied and chosen and self.artifact):
            return
        # The default conversion's plots stay, under a name that says whose they are.
        for run in section.comparisons.values():
            for path in run.histograms.values():
                old = f"{self.target}/{Path(path).name}"
                if report.artifacts.get(old) == path:
                    report.artifacts[f"{self.target}/as-converted-by-default/{Path(path).name}"] = report.artifacts.pop(old)
        section.conversion, section.comparisons = self.artifact.conversion, chosen.comparisons
        section.status = "passed"
        section.message = f"the variant '{chosen.label}' stands; as converted by default it failed: {section.message}"
        report.artifacts.update(self.artifact.conversion.artifacts)
        parity = target_check(self.target, "parity")
        for check in report.checks:
            if check.name == parity and check.status != "passed":
                check.status, check.message = "passed", f"{self.target}: {section.message}"

    def finding(self) -> str | None:
        return self.remediation.summary or None

    def served(self, default: TargetArtifact) -> TargetArtifact:
        """The artifact the target's benchmark, its children and MLflow take: the variant's where it stands."""
        return self.artifact if self.remediation.applied and self.artifact else default


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

"""remediate-<target>: the target's own variants, fastest expected first, until one passes its criteria.

Each variant is a conversion with other options (its module's `variants`, see modelgate.targets), run as the
export runs it (a bounded, sandboxed child) into <target>/variants/<n>-<slug>/ with its own reproduce.sh,
convert.log and conversion.json; compared against TensorFlow on the validation's comparison batches on every
runtime and device the default conversion was compared on, judged by the target's own criteria (never
loosened); and timed on CPU at the comparison batch's size. The search stops at the first that passes, and at the budget
(checks.remediation_budget_s): a variant it cannot start is reported untried. Whether a passing variant stands as
the target is the request's (targets.<name>.remediation, ValidationRequest.applies_remediation)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelRunError
from modelgate.execution.pools import conversion_pool
from modelgate.execution.sandbox import Limits, limits_of, run_isolated
from modelgate.execution.target_jobs import benchmark_job, comparison_job, conversion_job
from modelgate.numerics.benchmark import Measured, SweepPlan
from modelgate.numerics.benchmark_plan import thread_counts
from modelgate.numerics.inputs import no_batch_dimension, read_npz
from modelgate.numerics.timing import MeasurementPlan
from modelgate.report import ConversionRecord, Remediation, RuntimeComparison, VariantResult
from modelgate.request import ValidationRequest
from modelgate.runtimes import CPU
from modelgate.stages import (
    ComparisonBatches,
    PreparedInputs,
    SignatureChoice,
    TargetArtifact,
    TargetComparison,
    TargetLocalisation,
    TargetRemediation,
)
from modelgate.targets import ConversionSource, Variant, target
from tasks.compare_target import resolved_criteria, write_table
from tasks.export_target import RECORD

# A variant is not started with less than this left of the budget: no conversion finishes in less.
MIN_START_S = 2.0
# Its latency: a few short windows at the comparison batch's size, enough to rank variants, not a benchmark.
LATENCY_BUDGET_S = 3.0
LATENCY_PLAN = MeasurementPlan(warmup=3, window=10, min_windows=3, max_windows=3)


def remediation_wanted(comparison: TargetComparison, request: ValidationRequest) -> bool:
    return (isinstance(comparison, TargetComparison) and comparison.mismatched
            and request.checks.remediation_budget_s > 0)


def served_artifact(remedy: TargetRemediation, default: TargetArtifact) -> TargetArtifact:
    """What the target's benchmark and its children take: the chosen variant's artifact where it stands."""
    return remedy.served(default) if isinstance(remedy, TargetRemediation) else default


@dataclass
class Attempt:
    """One variant's outcome: its result for the report, its artifact where it converted, its files for MLflow."""

    result: VariantResult
    artifact: TargetArtifact | None = None
    files: dict[str, str] = field(default_factory=dict)


def search(variants: list[Variant], attempt: Callable[[int, Variant, float], Attempt], budget_s: float,
           settings: Callable[[Variant], dict], clock: Callable[[], float] = time.monotonic) -> tuple[list[Attempt], float]:
    """Each variant in order (attempt(index, variant, seconds left)) until one passes or the budget is spent; the
    rest are listed untried, saying why. Returns the attempts and the seconds spent."""
    started = clock()
    attempts: list[Attempt] = []
    passed: str | None = None
    for index, variant in enumerate(variants):
        left = budget_s - (clock() - started)
        if passed is None and left >= MIN_START_S:
            attempts.append(attempt(index, variant, left))
            passed = variant.label if attempts[-1].result.status == "passed" else None
            continue
        why = (f"not needed: {passed} passed first" if passed is not None
               else f"not started: the remediation budget of {budget_s:g} s was spent")
        attempts.append(Attempt(VariantResult(label=variant.label, settings=settings(variant), message=why)))
    return attempts, clock() - started


def _figures(result: VariantResult, latency: bool = True) -> str:
    outputs = [output for run in result.comparisons.values() for output in run.outputs.values()]
    cosines = [output.cosine_similarity for output in outputs if output.cosine_similarity is not None]
    diffs = [output.max_abs_diff for output in outputs if output.max_abs_diff is not None]
    figures = [f"cosine {min(cosines):.5f}" if cosines else f"max abs diff {max(diffs):.3g}" if diffs else ""]
    if latency and result.p50_ms is not None:
        figures.append(f"p50 {result.p50_ms:.2f} ms at batch {result.batch_size}")
    return ", ".join(figure for figure in figures if figure)


def summary_of(name: str, results: list[VariantResult], chosen: VariantResult | None, applied: bool,
               budget_s: float) -> str:
    """The search in one line of plain words, as the console and MLflow say it."""
    if not results:
        return f"no variants: {name} declares no other conversion that could change its numerics"
    tried = [r for r in results if r.status != "untried"]
    spent = [r.label for r in results if r.status == "untried" and r.message.startswith("not started")]
    count = f"{len(tried)} variant{'s' if len(tried) != 1 else ''} tried"
    left = f"; left untried by the {budget_s:g} s budget: {', '.join(spent)}" if spent else ""
    if chosen is not None:
        stands = ("it stands as the target" if applied else
                  f"reported only, the default conversion's failure stands (targets.{name}.remediation: apply)")
        return f"{name} passes as {name} ({chosen.label}): {_figures(chosen)}; {count}; {stands}{left}"
    if not tried:
        return f"no variant tried: the remediation budget of {budget_s:g} s left too little to start one ({', '.join(spent)})"
    failures = "; ".join(f"{r.label}: {_figures(r, latency=False) or r.message}" for r in tried)
    return f"no variant passed ({count}){': ' + failures if failures else ''}{left}"


def _failure_message(comparisons: dict[str, RuntimeComparison]) -> str:
    return "; ".join(
        f"{key}: " + ", ".join(f"{output} ({run.outputs[output].message or 'missed the criteria'})"
                               for output in run.failing())
        for key, run in comparisons.items() if run.failing()
    )


def _slug(index: int, label: str) -> str:
    return f"{index + 1}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}"


def _keep_record(name: str, slug: str, folder: Path, conversion: ConversionRecord, log_path: Path) -> dict[str, str]:
    """reproduce.sh and conversion.json beside the variant's file, as export_target keeps the default's; returns
    the files for MLflow."""
    reproduce = folder / "reproduce.sh"
    reproduce.write_text(f"#!/bin/sh\n# The {name} conversion of the remediation variant {slug}, as commands.\n"
                         f"set -e\n{conversion.reproduce}\n")
    record = folder / RECORD
    prefix = f"{name}/variants/{slug}"
    files = {f"{prefix}/{path.name}": str(path) for path in (reproduce, log_path, record)}
    conversion.artifacts = dict(files)
    if conversion.path and not conversion.details.get("external_data"):
        # The file itself goes to MLflow only with the variant that stands (TargetRemediation.apply_to).
        conversion.artifacts[f"{prefix}/{Path(conversion.path).name}"] = conversion.path
    record.write_text(conversion.model_dump_json(indent=2))
    return files


@dataclass
class VariantTrial:
    """What every variant of one target is tried with: the validation's choices, inputs and limits."""

    name: str
    choice: SignatureChoice
    parent: TargetArtifact | None
    inputs: PreparedInputs
    batches: ComparisonBatches
    request: ValidationRequest
    workdir: str
    compared: tuple[str, ...] = ()  # 'runtime/device' of the default conversion's comparisons

    def limits(self, left: float) -> Limits:
        limits = limits_of(self.request)
        return Limits(timeout_s=max(1.0, min(left, limits.timeout_s)), memory_limit_mb=limits.memory_limit_mb)

    def attempt(self, index: int, variant: Variant, left: float) -> Attempt:
        started = time.monotonic()
        chosen = target(self.name)
        slug = _slug(index, variant.label)
        folder = Path(self.workdir) / self.name / "variants" / slug
        folder.mkdir(parents=True, exist_ok=True)
        result = VariantResult(label=variant.label, settings=variant.settings(self.request.options_of(chosen)))

        def remaining() -> float:
            return left - (time.monotonic() - started)

        try:
            conversion = self.convert(variant, folder, remaining())
        except ModelRunError as exc:  # a crash or a limit; a rejection (the OS sandbox's) is the validation's verdict
            result.status, result.message = "error", f"its conversion did not complete: {exc}"
            result.duration_s = time.monotonic() - started
            return Attempt(result)
        files = _keep_record(self.name, slug, folder, conversion, folder / "convert.log")
        result.conversion = conversion
        broken = [check.name for check in conversion.checks if check.status == "failed"]
        if conversion.failure or broken:
            # A file check that fails fails the target as converted by default too (TargetComparison.apply_to).
            result.status = "failed"
            result.message = f"its conversion failed: {conversion.failure or 'check ' + ', '.join(broken)}"
            result.duration_s = time.monotonic() - started
            return Attempt(result, files=files)
        try:
            result.comparisons = self.compare(conversion.path, folder, remaining())
        except ModelRunError as exc:
            result.status, result.message = "error", f"its comparison did not complete: {exc}"
            result.duration_s = time.monotonic() - started
            return Attempt(result, files=files)
        table = write_table(result.comparisons, folder / "comparison.csv")
        files[f"{self.name}/variants/{slug}/comparison.csv"] = str(table)
        files.update({f"{self.name}/variants/{slug}/{Path(path).name}": path
                      for run in result.comparisons.values() for path in run.histograms.values()})
        failing = _failure_message(result.comparisons)
        result.status = "failed" if failing or not result.comparisons else "passed"
        result.message = failing or ("no runtime could run it" if not result.comparisons else
                                     f"every output within the criteria on {len(self.batches.batches)} batches")
        if remaining() > LATENCY_BUDGET_S:
            self.time(result, conversion.path, folder, remaining())
        result.duration_s = time.monotonic() - started
        artifact = TargetArtifact(target=self.name, conversion=conversion) if result.status == "passed" else None
        return Attempt(result, artifact, files)

    def convert(self, variant: Variant, folder: Path, left: float) -> ConversionRecord:
        chosen = target(self.name)
        calibration = [self.inputs.path] if self.inputs.path else []
        source = ConversionSource(
            model_dir=str(Path(self.choice.model_dir).resolve()), tags=self.choice.tags,
            signature=self.choice.signature, model_format=self.choice.model_format, output_dir=str(folder),
            log_path=str(folder / "convert.log"), parent_artifact=self.parent.path if self.parent else None,
            calibration_inputs=calibration,
            # For a variant that calibrates on more (onnx-int8's extra_calibration_batches).
            extra_calibration_inputs=[inputs for inputs, _ in self.batches.batches],
            options=variant.options,
        )
        environment = getattr(chosen.implementation(), "process_environment", None)
        return run_isolated(
            conversion_job, self.name, source, limits=self.limits(left), label=f"remediate-{self.name} ({variant.label})",
            log_path=folder / "convert.log", pool=conversion_pool(chosen),
            environment=environment(source) if environment else None,
        ).value

    def compare(self, artifact: str, folder: Path, left: float) -> dict[str, RuntimeComparison]:
        """Every runtime and device the default conversion was compared on (a GPU's mismatch is judged on the GPU),
        as compare_target runs them; on CPU where it was compared on none."""
        chosen = target(self.name)
        criteria = resolved_criteria(chosen, self.request, self.choice)
        keys = list(self.compared) or [f"{r.name}/{CPU}" for r in chosen.runtimes() if not r.missing_packages()]
        pools = {runtime.name: runtime.pool for runtime in chosen.runtimes()}
        comparisons = {}
        for key in keys:
            runtime, device = key.split("/")
            comparisons[key] = run_isolated(
                comparison_job, runtime, artifact, device, self.batches.batches, criteria, str(folder),
                f"{runtime}_{device}", limits=self.limits(left), label=f"remediate-{self.name} ({key})",
                log_path=folder / "compare.log", pool=pools[runtime],
            ).value
        return comparisons

    def time(self, result: VariantResult, artifact: str, folder: Path, left: float) -> None:
        """p50 on the first CPU runtime at the comparison batch's size; a variant that cannot be timed keeps none."""
        runtime = next((r for r in target(self.name).runtimes() if f"{r.name}/{CPU}" in result.comparisons), None)
        if runtime is None:
            return
        inputs = self.batches.batches[0][0]
        unbatched = bool(no_batch_dimension(self.choice.signature))
        rows = 1 if unbatched else min(len(value) for value in read_npz(inputs).values() if value.ndim)
        plan = SweepPlan(measurement=LATENCY_PLAN, batch_sizes=[rows], budget_s=LATENCY_BUDGET_S,
                         declared_shapes=unbatched)
        intra, inter = thread_counts(self.request)
        try:
            measured = run_isolated(
                benchmark_job, runtime.name, artifact, inputs, plan, CPU, intra, inter, limits=self.limits(left),
                label=f"remediate-{self.name} (latency)", log_path=folder / "benchmark.log", pool=runtime.pool,
            ).value
        except ModelRunError:
            return
        timed = [m for m in measured if isinstance(m, Measured)]
        if timed:
            result.p50_ms, result.batch_size = timed[0].result.p50_ms, timed[0].result.batch_size


@task(name="remediate-target", cache_policy=NO_CACHE)
def remediate_target(
    name: str, choice: SignatureChoice, parent: TargetArtifact | None, inputs: PreparedInputs,
    batches: ComparisonBatches, comparison: TargetComparison, localisation: TargetLocalisation | None,
    request: ValidationRequest, workdir: str,
) -> TargetRemediation:
    """The target's variants (its module's `variants`, given where the default conversion diverged when that is
    known), fastest expected first, until one passes the target's criteria or the budget is spent."""
    chosen = target(name)
    defaults = request.options_of(chosen)
    found = localisation.localisation if isinstance(localisation, TargetLocalisation) else None
    budget = request.checks.remediation_budget_s
    trial = VariantTrial(name, choice, parent, inputs, batches, request, workdir, tuple(comparison.comparisons))
    attempts, spent = search(chosen.variants(defaults, found), trial.attempt, budget,
                             lambda variant: variant.settings(defaults))
    passed = next((a for a in attempts if a.result.status == "passed"), None)
    applied = passed is not None and request.applies_remediation(name)
    results = [a.result for a in attempts]
    remediation = Remediation(
        budget_s=budget, spent_s=round(spent, 3), variants=results, chosen=passed.result.label if passed else None,
        applied=applied, original_message=_failure_message(comparison.comparisons),
        summary=summary_of(name, results, passed.result if passed else None, applied, budget),
    )
    files = {key: path for a in attempts for key, path in a.files.items() if Path(path).is_file()}
    return TargetRemediation(target=name, remediation=remediation, artifact=passed.artifact if passed else None,
                             artifacts=files)

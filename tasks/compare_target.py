import csv
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.criteria import Criteria
from modelgate.errors import ModelRunError
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.execution.target_jobs import comparison_job
from modelgate.numerics.compare import check_tolerance_names
from modelgate.numerics.precision import DEFAULT_TOLERANCES, with_default
from modelgate.report import RuntimeComparison
from modelgate.reporting.environment import gpu_present
from modelgate.request import ValidationRequest
from modelgate.runtimes import CPU, GPU
from modelgate.stages import ComparisonBatches, SignatureChoice, TargetArtifact, TargetComparison
from modelgate.targets import Target, target

TABLE_FIGURES = [
    "passed", "max_abs_diff", "mean_abs_diff", "median_abs_diff", "p99_abs_diff", "max_rel_diff", "mean_rel_diff",
    "median_rel_diff", "p99_rel_diff", "failing_elements", "total_elements", "failing_share", "min_passing_atol",
    "min_passing_rtol", "cosine_similarity", "top1_agreement", "top5_agreement", "atol", "rtol", "message",
]


def resolved_criteria(chosen: Target, request: ValidationRequest, choice: SignatureChoice) -> Criteria:
    """The target's criteria with the request's overrides: its own (targets.<name>.criteria) first, then the
    request's atol and rtol, then the target's defaults; an output none of them covers gets the graph precision's."""
    criteria = request.criteria_of(chosen)
    asked = request.targets.get(chosen.name)
    explicit = set(asked.criteria) if asked else set()
    default_atol, default_rtol = DEFAULT_TOLERANCES[choice.meta_graph.float_precision]
    tolerances = {}
    for name, requested, default in (("atol", request.atol, default_atol), ("rtol", request.rtol, default_rtol)):
        setting = getattr(criteria, name)
        if name not in explicit and requested != {}:
            setting = requested
        tolerances[name] = with_default(setting, default)
    return criteria.model_copy(update=tolerances)


def write_table(comparisons: dict[str, RuntimeComparison], path: Path) -> Path:
    with path.open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["runtime", "device", "placement", "output", *TABLE_FIGURES])
        for run in comparisons.values():
            for name, result in run.outputs.items():
                writer.writerow([run.runtime, run.device, " ".join(run.providers), name,
                                 *(getattr(result, f) for f in TABLE_FIGURES)])
    return path


@task(name="compare-target", cache_policy=NO_CACHE)
def compare_target(
    name: str, choice: SignatureChoice, artifact: TargetArtifact, batches: ComparisonBatches,
    request: ValidationRequest, workdir: str,
) -> TargetComparison:
    """Every runtime of the target's format against TensorFlow on the same batches, by output name, judged
    by the target's criteria: on CPU always, and on the GPU where one is present and the runtime can use it."""
    chosen = target(name)
    criteria = resolved_criteria(chosen, request, choice)
    if batches.skipped_reason:
        return TargetComparison(target=name, criteria=criteria, skipped_reason=batches.skipped_reason)
    outputs = list(choice.signature.outputs)
    check_tolerance_names(criteria.atol, outputs, "atol")
    check_tolerance_names(criteria.rtol, outputs, "rtol")
    folder = Path(workdir) / name
    comparisons: dict[str, RuntimeComparison] = {}
    not_compared: dict[str, str] = {}
    for runtime in chosen.runtimes():
        for device in runtime.devices:
            key = f"{runtime.name}/{device}"
            if missing := runtime.missing_packages():
                not_compared[key] = f"this environment lacks {', '.join(missing)}"
                continue
            if device == GPU and not gpu_present():
                not_compared[key] = "no GPU on this machine"
                continue
            try:
                comparisons[key] = run_isolated(
                    comparison_job, runtime.name, artifact.path, device, batches.batches, criteria, str(folder),
                    f"{runtime.name}_{device}", limits=limits_of(request), label=f"compare-{name} ({key})",
                    log_path=folder / "compare.log", pool=runtime.pool,
                ).value
            except ModelRunError as exc:
                if device == CPU:
                    raise
                not_compared[key] = f"error: {exc}"  # the GPU path is reported beside the CPU figures
    table = write_table(comparisons, folder / "comparison.csv")
    histograms = {f"{name}/{Path(path).name}": path for run in comparisons.values() for path in run.histograms.values()}
    return TargetComparison(
        target=name, criteria=criteria, batches=len(batches.batches), comparisons=comparisons,
        not_compared=not_compared, artifacts={f"{name}/comparison.csv": str(table), **histograms},
    )

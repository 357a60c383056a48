"""localise-<target>: where a target's error starts (see modelgate.numerics.divergence).

TensorFlow's intermediate tensors come from a child of TensorFlow's kind (its pool has closed by now: a fresh one),
the target's from its first CPU runtime that can read them back, in that runtime's pool; the runtime's child holds
them against each other and sends back the figures only. The stage is diagnostic: what it finds, or an error of
its own, never changes the verdict."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.pools import TENSORFLOW
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.execution.trace_jobs import ReferenceTrace, target_trace_job, tensorflow_trace_job
from modelgate.report import Localisation
from modelgate.request import ValidationRequest
from modelgate.runtimes import CPU, Runtime
from modelgate.stages import ComparisonBatches, SignatureChoice, TargetArtifact, TargetComparison, TargetLocalisation
from modelgate.targets import Target, target

# TensorFlow's traces of this process's validations, by model, signature, batch and graph: the targets of one
# validation that read the same graph (onnx and its children) share one (in the folder of the first that asked).
_traced: dict[tuple, ReferenceTrace] = {}
TRACES_KEPT = 4


def localisation_wanted(comparison: TargetComparison, request: ValidationRequest) -> bool:
    """A comparison that missed its criteria is always localised; one that passed only when --localise asks."""
    if not isinstance(comparison, TargetComparison) or comparison.skipped_reason or not comparison.comparisons:
        return False
    return comparison.mismatched or request.checks.localise


def tracing_runtime(chosen: Target) -> tuple[Runtime | None, str]:
    """The target's first runtime that runs on CPU here and can read its intermediate tensors back; else why none."""
    reasons = []
    for runtime in chosen.runtimes():
        if CPU not in runtime.devices or runtime.missing_packages():
            reasons.append(f"{runtime.name} cannot run here")
            continue
        if not hasattr(runtime.implementation(), "trace"):
            reasons.append(f"{runtime.name} cannot read back its intermediate tensors")
            continue
        return runtime, ""
    return None, "; ".join(reasons) or f"no runtime runs {chosen.artifact_format} files"


@task(name="localise-target", cache_policy=NO_CACHE)
def localise_target(
    name: str, choice: SignatureChoice, artifact: TargetArtifact, batches: ComparisonBatches,
    comparison: TargetComparison, request: ValidationRequest, workdir: str,
) -> TargetLocalisation:
    """Intermediate tensors of the target's file against TensorFlow's on the first comparison batch's first rows,
    by name, in graph order, judged by the target's criteria: the first op that diverges, and how the error grows
    from there; a plot of each matched tensor's error in the target's folder."""
    chosen = target(name)
    runtime, why_not = tracing_runtime(chosen)
    if runtime is None:
        return TargetLocalisation(target=name, localisation=Localisation(
            runtime="", verdict="unmatched", summary=f"not localised: {why_not}"))
    folder = Path(workdir) / name
    log_path = folder / "localise.log"
    graph = chosen.traced_graph_of()
    inputs_path = batches.batches[0][0]
    key = (str(Path(choice.model_dir).resolve()), tuple(choice.tags), choice.signature.key, inputs_path, graph)
    reference = _traced.get(key)
    if reference is None or not Path(reference.values_path).is_file():
        while len(_traced) >= TRACES_KEPT:  # a long-lived worker runs validation after validation
            _traced.pop(next(iter(_traced)))
        reference = _traced[key] = run_isolated(
            tensorflow_trace_job, key[0], choice.tags, choice.signature.key, inputs_path, str(folder / "localise"),
            graph, limits=limits_of(request), label=f"localise-{name} (TensorFlow's tensors)", log_path=log_path,
            pool=TENSORFLOW,
        ).value
    localisation = run_isolated(
        target_trace_job, runtime.name, artifact.path, reference, comparison.criteria,
        choice.meta_graph.float_precision, str(folder), f"{name}_{runtime.name}", limits=limits_of(request),
        label=f"localise-{name} ({runtime.name}/{CPU})", log_path=log_path, pool=runtime.pool,
    ).value
    return TargetLocalisation(target=name, localisation=localisation)

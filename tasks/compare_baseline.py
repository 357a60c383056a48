from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelgateError
from modelgate.execution.jobs import loadable_baseline_job, meta_graphs_job
from modelgate.execution.sandbox import limits_of, reading_limits_of, run_isolated
from modelgate.model.model_source import resolve_model_source
from modelgate.model.op_scan import refuse_unsafe_ops
from modelgate.model.savedmodel import choose_meta_graph
from modelgate.numerics.baseline import baseline_job
from modelgate.request import ValidationRequest
from modelgate.stages import BaselineChoice, BaselineComparison, PreparedInputs, SignatureChoice


@task(name="compare-baseline", cache_policy=NO_CACHE)
def compare_baseline(
    choice: SignatureChoice, baseline: BaselineChoice, inputs: PreparedInputs,
    request: ValidationRequest, workdir: str,
) -> BaselineComparison:
    """Output drift and latency change against the baseline, both models on the same seeded inputs.

    The baseline is a model like any other: its ops are scanned before it is loaded."""
    if baseline.model_dir is None:
        return BaselineComparison(skipped_reason=baseline.skipped_reason)
    if inputs.path is None:
        return BaselineComparison(skipped_reason=inputs.section.message)
    baseline_dir = str(resolve_model_source(baseline.model_dir).model_dir)
    reading, log_path = reading_limits_of(request), Path(workdir) / "compare-baseline.log"
    meta_graphs = run_isolated(meta_graphs_job, baseline_dir, request.model.op_libraries, limits=reading,
                               label="compare-baseline", log_path=log_path, raises=(ModelgateError,)).value
    meta_graph = choose_meta_graph(meta_graphs, choice.tags)
    refuse_unsafe_ops(meta_graph.op_scan, request.checks.allow_ops)
    if choice.signature.key not in meta_graph.signatures:
        return BaselineComparison(skipped_reason=f"the baseline has no signature '{choice.signature.key}'")
    theirs = {n: (s.dtype, s.rank) for n, s in meta_graph.signatures[choice.signature.key].inputs.items()}
    ours = {n: (s.dtype, s.rank) for n, s in choice.signature.inputs.items()}
    if theirs != ours:
        return BaselineComparison(
            skipped_reason="the baseline takes other inputs (see signature_compatibility), so the same inputs "
            "cannot feed both: no drift or latency comparison"
        )
    loadable_dir, baseline_format = run_isolated(
        loadable_baseline_job, baseline_dir, str(Path(workdir) / "loadable_baseline"), limits=reading,
        label="compare-baseline", log_path=log_path, raises=(ModelgateError,),
    ).value
    measured = run_isolated(
        baseline_job, choice.model_dir, choice.tags, choice.model_format, choice.signature.key, loadable_dir,
        meta_graph.tags, baseline_format, inputs.path, request.model.op_libraries,
        limits=limits_of(request), label="compare-baseline", log_path=log_path,
    ).value
    change = 100.0 * (measured["current_p50_ms"] / measured["baseline_p50_ms"] - 1)
    return BaselineComparison(
        drift=measured["drift"], current_p50_ms=measured["current_p50_ms"],
        baseline_p50_ms=measured["baseline_p50_ms"], latency_change_pct=change,
    )

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelgateError, SignatureNotFound
from modelgate.execution.jobs import meta_graphs_job
from modelgate.execution.sandbox import reading_limits_of, run_isolated
from modelgate.model.contract import check_compatibility, check_contract, load_contract, signature_rules
from modelgate.model.model_source import resolve_model_source
from modelgate.model.savedmodel import choose_meta_graph
from modelgate.report import Check
from modelgate.request import ValidationRequest
from modelgate.stages import BaselineChoice, CheckList, SignatureChoice


def compatibility_with(
    previous_model_dir: str, label: str, choice: SignatureChoice, request: ValidationRequest, workdir: str,
) -> Check:
    source = resolve_model_source(previous_model_dir)
    meta_graphs = run_isolated(
        meta_graphs_job, str(source.model_dir), limits=reading_limits_of(request), label="check-signature",
        log_path=Path(workdir) / "check-signature.log", raises=(ModelgateError,),
    ).value
    try:
        previous = choose_meta_graph(meta_graphs, choice.tags)
    except SignatureNotFound as exc:
        return Check(name="signature_compatibility", status="failed",
                     message=f"expected the previous version {source.model_dir} to serve tag-set "
                     f"{','.join(choice.tags)} too, found: {exc}")
    return check_compatibility(previous, choice.meta_graph, f"baseline {label}")


@task(name="check-signature", cache_policy=NO_CACHE)
def check_signature(
    choice: SignatureChoice, request: ValidationRequest, baseline: BaselineChoice, workdir: str,
) -> CheckList:
    """Rules on what the signature declares, from the protobuf alone: dtypes, ranks, batch dimension, names,
    the expected contract and compatibility with the baseline version, when there is one."""
    checks = signature_rules(choice.signature)
    if request.checks.contract_path:
        checks.append(check_contract(choice.signature, load_contract(request.checks.contract_path), request.checks.contract_path))
    else:
        checks.append(Check(name="contract", status="skipped", message="no expected contract given"))
    if baseline.model_dir:
        checks.append(compatibility_with(baseline.model_dir, baseline.source or baseline.model_dir, choice, request,
                                         workdir))
    else:
        checks.append(Check(name="signature_compatibility", status="skipped", message=baseline.skipped_reason))
    return CheckList(checks=checks)

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.model.op_scan import refuse_unsafe_ops
from modelgate.report import Check
from modelgate.stages import CheckList, SignatureChoice


@task(name="scan-ops", cache_policy=NO_CACHE)
def scan_ops(choice: SignatureChoice, allowed_ops: list[str]) -> CheckList:
    """Refuse, before any model code runs, a model that can execute anything outside the op allowlist, or
    that uses ops this TensorFlow does not know."""
    scan = choice.meta_graph.op_scan
    allowed_here = refuse_unsafe_ops(scan, allowed_ops)
    entry_points = ", ".join(scan.reachable)
    reachable = len({op for code in scan.reachable.values() for op in code.ops})
    if allowed_here:
        return CheckList(checks=[Check(
            name="op_safety", status="warning",
            message=f"{reachable} op types reachable from {entry_points}; refused ops allowed by the request: "
            + "; ".join(finding.describe() for finding in allowed_here),
        )])
    return CheckList(checks=[Check(
        name="op_safety", status="passed",
        message=f"{reachable} op types reachable from {entry_points}, all on the allowlist in their allowed form",
    )])

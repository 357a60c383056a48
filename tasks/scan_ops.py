from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.savedmodel import refuse_risky_ops
from modelgate.schemas import Check, CheckList, SignatureChoice


@task(name="scan-ops", cache_policy=NO_CACHE)
def scan_ops(choice: SignatureChoice, allowed_ops: list[str]) -> CheckList:
    """Refuse, before any model code runs, a graph that touches files, runs Python or uses custom ops."""
    refuse_risky_ops(choice.meta_graph, allowed_ops)
    allowed_here = sorted(set(choice.meta_graph.risky_ops) & set(allowed_ops))
    message = f"{len(choice.meta_graph.ops)} op types, none that touch files, run Python or reach the network"
    if allowed_here:
        message = f"{len(choice.meta_graph.ops)} op types; risky ops allowed by the request: {', '.join(allowed_here)}"
    return CheckList(checks=[Check(name="op_safety", status="passed" if not allowed_here else "warning", message=message)])

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.criteria import Tolerance
from modelgate.model.savedmodel import choose_meta_graph, choose_signature
from modelgate.numerics.precision import effective_tolerances
from modelgate.report import Check
from modelgate.stages import Inspection, SignatureChoice


@task(name="select-signature", cache_policy=NO_CACHE)
def select_signature(
    inspection: Inspection, key: str | None, tags: list[str] | None,
    atol: Tolerance | None = None, rtol: Tolerance | None = None,
) -> SignatureChoice:
    """The asked signature, else serving_default, else the single predict-style one (with a warning); and the
    tolerances it is judged with, their defaults set by the precision its graph computes in."""
    meta_graph = choose_meta_graph(inspection.meta_graphs, tags)
    signature, checks = choose_signature(meta_graph, key)
    atol, rtol, note = effective_tolerances(atol or {}, rtol or {}, meta_graph.float_precision)
    checks.append(Check(name="tolerances", status="passed", severity="info", message=note))
    if accelerators := [device for device in meta_graph.devices if "CPU" not in device.upper()]:
        checks.append(Check(name="device_placement", status="passed", severity="info", message=(
            f"the graph pins ops to {', '.join(accelerators)}, as it was exported; it is loaded with soft "
            "placement, as TF Serving loads it, so they run where this machine can")))
    return SignatureChoice(
        model_dir=inspection.model_dir, model_format=inspection.model_format, tags=meta_graph.tags,
        signature=signature, meta_graph=meta_graph, checks=checks, atol=atol, rtol=rtol,
    )

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.savedmodel import choose_meta_graph, choose_signature
from modelgate.schemas import Inspection, SignatureChoice


@task(name="select-signature", cache_policy=NO_CACHE)
def select_signature(inspection: Inspection, key: str | None, tags: list[str] | None) -> SignatureChoice:
    """The asked signature, else serving_default, else the single predict-style one (with a warning)."""
    meta_graph = choose_meta_graph(inspection.meta_graphs, tags)
    signature, checks = choose_signature(meta_graph, key)
    return SignatureChoice(
        model_dir=inspection.model_dir, model_format=inspection.model_format, tags=meta_graph.tags,
        signature=signature, meta_graph=meta_graph, checks=checks,
    )

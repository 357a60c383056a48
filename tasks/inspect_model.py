from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.savedmodel import find_saved_model_file, inspect_saved_model
from modelgate.schemas import Inspection


@task(name="inspect", cache_policy=NO_CACHE)
def inspect_model(model_dir: str) -> Inspection:
    """Read saved_model.pb as a protobuf: tag-sets, signatures and ops, without running any graph."""
    return Inspection(
        model_dir=model_dir,
        saved_model_file=str(find_saved_model_file(model_dir)),
        meta_graphs=inspect_saved_model(model_dir),
    )

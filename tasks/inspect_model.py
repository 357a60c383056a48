from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelgateError
from modelgate.execution.jobs import inspection_job
from modelgate.execution.sandbox import reading_limits_of, run_isolated
from modelgate.request import ValidationRequest
from modelgate.stages import Inspection


@task(name="inspect", cache_policy=NO_CACHE)
def inspect_model(model_dir: str, request: ValidationRequest, workdir: str) -> Inspection:
    """The model read statically, without running any graph (see inspection_job), in the TensorFlow pool's
    child: parsing its protobufs and consulting the op registry need TensorFlow, which this process never
    imports. What the reading finds wrong (not a SavedModel, an op library that does not import) is raised
    here as it was there."""
    return run_isolated(
        inspection_job, model_dir, workdir, request.model.version_number, request.model.op_libraries,
        limits=reading_limits_of(request), label="inspect", log_path=Path(workdir) / "inspect.log", raises=(ModelgateError,),
    ).value

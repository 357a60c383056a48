from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.jobs import wrapper_parity_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.request import ValidationRequest
from modelgate.stages import CheckList, PreparedInputs, SignatureChoice


@task(name="load-and-wrap", cache_policy=NO_CACHE)
def load_and_wrap(
    choice: SignatureChoice, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> CheckList:
    """Load the SavedModel, wrap the signature as a Keras 3 model, and prove it matches the raw signature.
    """
    checks = run_isolated(
        wrapper_parity_job, choice.model_dir, choice.tags, choice.model_format, choice.signature, inputs.path,
        choice.rtol, inputs.section.message,
        limits=limits_of(request), label="load-and-wrap", log_path=Path(workdir) / "load-and-wrap.log",
    ).value
    return CheckList(checks=checks)

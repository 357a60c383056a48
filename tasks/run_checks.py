from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.jobs import output_checks_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.numerics.checks import OUTPUT_CHECK_NAMES, skipped
from modelgate.request import ValidationRequest
from modelgate.stages import PreparedInputs, ReferenceOutputs, SignatureChoice


@task(name="run-checks", cache_policy=NO_CACHE)
def run_checks(
    choice: SignatureChoice, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> ReferenceOutputs:
    """Outputs against the signature (names, dtypes, shapes), finite, deterministic, each row of the batch as
    it is alone; the outputs are kept as the reference."""
    if inputs.path is None:
        return ReferenceOutputs(checks=skipped(OUTPUT_CHECK_NAMES, inputs.section.message), path=None)
    outputs_path = str(Path(workdir) / "reference_outputs.npz")
    checks = run_isolated(
        output_checks_job, choice.model_dir, choice.tags, choice.model_format, choice.signature, inputs.path,
        outputs_path, choice.atol, choice.rtol, limits=limits_of(request), label="run-checks",
        log_path=Path(workdir) / "run-checks.log",
    ).value
    return ReferenceOutputs(checks=checks, path=outputs_path)

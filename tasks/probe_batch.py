from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelRunError
from modelgate.execution.jobs import batch_sizes_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.numerics.checks import no_dynamic_batch
from modelgate.numerics.inputs import batch_of, read_npz, save_npz
from modelgate.report import Check
from modelgate.request import ValidationRequest
from modelgate.stages import PreparedInputs, SignatureChoice

CHECK = "dynamic_batch_runs"
FALLBACK_BATCH_SIZE = 1


def _resliced(inputs: PreparedInputs, size: int, failure: str, check: Check, workdir: str) -> PreparedInputs:
    """The inputs' first rows, for the stages after the probe."""
    feeds = batch_of(read_npz(inputs.path), size)
    path = save_npz(feeds, Path(workdir) / f"inputs_batch{size}.npz")
    section = inputs.section.model_copy(update={
        "path": str(path), "working_batch_size": size,
        "shapes": {name: list(value.shape) for name, value in feeds.items()},
        "message": f"{inputs.section.message}; cut to the first {size} row(s): {failure}",
    })
    return PreparedInputs(section=section, checks=[check])


@task(name="probe-batch", cache_policy=NO_CACHE)
def probe_batch(
    choice: SignatureChoice, inputs: PreparedInputs, request: ValidationRequest, workdir: str
) -> PreparedInputs:
    """Run the signature once at the inputs' batch size, before the stages that need it to: a graph that
    declares a dynamic batch but breaks at that size fails dynamic_batch_runs, and the stages after it run
    at batch 1 instead, so every other check still judges the model."""
    if inputs.path is None:
        return PreparedInputs(section=inputs.section,
                              checks=[Check(name=CHECK, status="skipped", message=inputs.section.message)])
    feeds = read_npz(inputs.path)
    reason = no_dynamic_batch(choice.signature, feeds)
    if reason:
        return PreparedInputs(section=inputs.section, checks=[Check(name=CHECK, status="skipped", message=reason)])
    size = len(next(iter(feeds.values())))
    tried = run_isolated(
        batch_sizes_job, choice.model_dir, choice.tags, choice.model_format, choice.signature.key, inputs.path,
        [size, FALLBACK_BATCH_SIZE], limits=limits_of(request), label="probe-batch",
        log_path=Path(workdir) / "probe-batch.log",
    ).value
    if tried[0][1] is None:
        return PreparedInputs(section=inputs.section, checks=[Check(
            name=CHECK, status="passed", message=f"the signature runs at batch {size} on its dynamic batch dimension",
        )])
    failure = f"the signature declares a dynamic batch dimension but fails at batch {size} ({tried[0][1]})"
    if tried[-1][1] is not None:
        raise ModelRunError(f"{failure}, and at batch {FALLBACK_BATCH_SIZE} too ({tried[-1][1]})")
    sizes = ", ".join(str(tried_size) for tried_size, _ in tried)
    check = Check(name=CHECK, status="failed", message=f"{failure}; tried batch sizes {sizes}: it runs at "
                  f"{FALLBACK_BATCH_SIZE}, where the other checks, comparisons and benchmarks ran")
    return _resliced(inputs, FALLBACK_BATCH_SIZE, failure, check, workdir)

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.jobs import tensorflow_references_job
from modelgate.execution.sandbox import limits_of, run_isolated
from modelgate.numerics.inputs import InputsUnavailable, save_npz, synthesize
from modelgate.request import ValidationRequest
from modelgate.stages import ComparisonBatches, PreparedInputs, ReferenceOutputs, SignatureChoice

FOLDER = "comparison_batches"


@task(name="reference-batches", cache_policy=NO_CACHE)
def reference_batches(
    choice: SignatureChoice, inputs: PreparedInputs, reference: ReferenceOutputs, request: ValidationRequest,
    workdir: str,
) -> ComparisonBatches:
    """The batches every target is held to TensorFlow on: the checked inputs with run-checks' reference, then
    seeded batches up to onnx_batches of them (all of them on top, when the checked inputs are the user's
    file), so one lucky sample cannot pass; TensorFlow's outputs on them come from its warm process, once for
    every target."""
    if inputs.path is None or reference.path is None:
        return ComparisonBatches(skipped_reason=inputs.section.message or "no TensorFlow reference outputs")
    folder = Path(workdir) / FOLDER
    folder.mkdir(exist_ok=True)
    batches = [(inputs.path, reference.path)]
    first_seed = request.inputs.seed if inputs.section.source == "file" else request.inputs.seed + 1
    for seed in range(first_seed, request.inputs.seed + request.checks.comparison_batches):
        try:
            feeds = synthesize(
                choice.signature, inputs.batch_size(request), request.inputs.unknown_dim_size, seed, request.inputs.value_range
            )
        except InputsUnavailable:
            break  # only the user's inputs can feed this signature
        batches.append((str(save_npz(feeds, folder / f"inputs_seed{seed}.npz")),
                        str(folder / f"tensorflow_outputs_seed{seed}.npz")))
    if len(batches) > 1:
        run_isolated(
            tensorflow_references_job, choice.model_dir, choice.tags, choice.model_format, choice.signature.key,
            batches[1:], limits=limits_of(request), label="reference-batches",
            log_path=Path(workdir) / "reference-batches.log",
        )
    return ComparisonBatches(batches=batches)

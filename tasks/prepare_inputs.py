from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelgateError
from modelgate.execution.jobs import inputs_file_job
from modelgate.execution.sandbox import reading_limits_of, run_isolated
from modelgate.model.warmup import WARMUP_FILE, read_warmup_job, warmup_file
from modelgate.numerics.checks import dtype_name
from modelgate.numerics.inputs import InputsUnavailable, no_batch_dimension, read_npz, save_npz, synthesize_recorded
from modelgate.report import Check, InputsSection
from modelgate.request import ValidationRequest
from modelgate.stages import PreparedInputs, SignatureChoice


@task(name="prepare-inputs", cache_policy=NO_CACHE)
def prepare_inputs(choice: SignatureChoice, request: ValidationRequest, workdir: str) -> PreparedInputs:
    """The user's .npz or tf.Example records checked against the signature (in the TensorFlow pool's child,
    since only TensorFlow reads TFRecords), or seeded synthetic inputs shaped by what the graph says of them
    (table sizes, vocabulary, tf.Example spec); saved for later stages."""
    signature = choice.signature
    recorded, checks = {}, []
    path = Path(workdir) / "inputs.npz"
    log_path = Path(workdir) / "prepare-inputs.log"
    warmup = None if request.inputs.path else warmup_file(choice.model_dir)
    if warmup:
        used, problems = run_isolated(
            read_warmup_job, str(warmup), signature, str(path), limits=reading_limits_of(request),
            label="prepare-inputs", log_path=log_path, raises=(ModelgateError,),
        ).value
        if problems:
            checks.append(Check(name="warmup_requests", status="failed", message=(
                f"the SavedModel's TF Serving warm-up requests ({WARMUP_FILE}) cannot feed signature "
                f"'{signature.key}': {'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}; validated "
                "on synthesized inputs instead")))
            warmup = None
        elif not used:
            checks.append(Check(name="warmup_requests", status="skipped", message=(
                f"the SavedModel's TF Serving warm-up requests ({WARMUP_FILE}) hold no predict request for "
                f"signature '{signature.key}'; validated on synthesized inputs")))
            warmup = None
        else:
            checks.append(Check(name="warmup_requests", status="passed", message=(
                f"validated on the {used} warm-up record{'s' if used != 1 else ''} the SavedModel ships "
                f"({WARMUP_FILE}), as TF Serving replays them")))
    if request.inputs.path:
        run_isolated(
            inputs_file_job, request.inputs.path, signature, request.inputs.unknown_dim_size, request.inputs.seed, str(path),
            limits=reading_limits_of(request), label="prepare-inputs", log_path=log_path, raises=(ModelgateError,),
        )
        feeds = read_npz(path)
        source, seed, message = "file", None, f"from {request.inputs.path}"
    elif warmup:
        feeds = read_npz(path)
        source, seed, message = "warmup", None, f"TF Serving's warm-up requests: {warmup}"
    else:
        try:
            synthesis = synthesize_recorded(
                signature, request.inputs.batch_size, request.inputs.unknown_dim_size, request.inputs.seed, request.inputs.value_range
            )
        except InputsUnavailable as exc:
            return PreparedInputs(section=InputsSection(source="unavailable", message=str(exc)), checks=checks)
        feeds, source, seed = synthesis.feeds, "synthetic", request.inputs.seed
        recorded = {
            "value_ranges": synthesis.value_ranges, "samples": synthesis.samples,
            "example_features": synthesis.example_features,
        }
        batch = no_batch_dimension(signature) or f"dynamic batch dimension = {request.inputs.batch_size}"
        message = f"seeded synthesis: {batch}, other unknown dimensions = {request.inputs.unknown_dim_size}"
        save_npz(feeds, path)
    return PreparedInputs(
        section=InputsSection(
            source=source, path=str(path), seed=seed, message=message,
            shapes={name: list(value.shape) for name, value in feeds.items()},
            dtypes={name: dtype_name(value) for name, value in feeds.items()},
            **recorded,
        ),
        checks=checks,
    )

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.checks import dtype_name
from modelgate.errors import ModelgateError
from modelgate.inputs import InputsUnavailable, no_batch_dimension, read_npz, save_npz, synthesize_recorded
from modelgate.jobs import inputs_file_job
from modelgate.sandbox import reading_limits_of, run_isolated
from modelgate.schemas import InputsSection, PreparedInputs, SignatureChoice, ValidationRequest


@task(name="prepare-inputs", cache_policy=NO_CACHE)
def prepare_inputs(choice: SignatureChoice, request: ValidationRequest, workdir: str) -> PreparedInputs:
    """The user's .npz or tf.Example records checked against the signature (in the TensorFlow pool's child,
    since only TensorFlow reads TFRecords), or seeded synthetic inputs shaped by what the graph says of them
    (table sizes, vocabulary, tf.Example spec); saved for later stages."""
    signature = choice.signature
    recorded = {}
    path = Path(workdir) / "inputs.npz"
    if request.inputs_path:
        run_isolated(
            inputs_file_job, request.inputs_path, signature, request.unknown_dim_size, request.seed, str(path),
            limits=reading_limits_of(request), label="prepare-inputs", log_path=Path(workdir) / "prepare-inputs.log",
            raises=(ModelgateError,),
        )
        feeds = read_npz(path)
        source, seed, message = "file", None, f"from {request.inputs_path}"
    else:
        try:
            synthesis = synthesize_recorded(
                signature, request.batch_size, request.unknown_dim_size, request.seed, request.value_range
            )
        except InputsUnavailable as exc:
            return PreparedInputs(section=InputsSection(source="unavailable", message=str(exc)))
        feeds, source, seed = synthesis.feeds, "synthetic", request.seed
        recorded = {
            "value_ranges": synthesis.value_ranges, "samples": synthesis.samples,
            "example_features": synthesis.example_features,
        }
        batch = no_batch_dimension(signature) or f"dynamic batch dimension = {request.batch_size}"
        message = f"seeded synthesis: {batch}, other unknown dimensions = {request.unknown_dim_size}"
        save_npz(feeds, path)
    return PreparedInputs(
        section=InputsSection(
            source=source, path=str(path), seed=seed, message=message,
            shapes={name: list(value.shape) for name, value in feeds.items()},
            dtypes={name: dtype_name(value) for name, value in feeds.items()},
            **recorded,
        )
    )

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.inputs import InputsUnavailable, load_npz, save_npz, synthesize
from modelgate.schemas import InputsSection, PreparedInputs, SignatureChoice, ValidationRequest


@task(name="prepare-inputs", cache_policy=NO_CACHE)
def prepare_inputs(choice: SignatureChoice, request: ValidationRequest, workdir: str) -> PreparedInputs:
    """The user's .npz checked against the signature, or seeded synthetic inputs; saved for later stages."""
    signature = choice.signature
    if request.inputs_path:
        feeds, source, seed = load_npz(request.inputs_path, signature), "file", None
        message = f"from {request.inputs_path}"
    else:
        try:
            feeds = synthesize(signature, request.batch_size, request.unknown_dim_size, request.seed)
        except InputsUnavailable as exc:
            return PreparedInputs(section=InputsSection(source="unavailable", message=str(exc)))
        source, seed = "synthetic", request.seed
        message = (
            f"seeded synthesis: dynamic batch dimension = {request.batch_size}, "
            f"other unknown dimensions = {request.unknown_dim_size}"
        )
    path = save_npz(feeds, Path(workdir) / "inputs.npz")
    return PreparedInputs(
        section=InputsSection(
            source=source, path=str(path), seed=seed, message=message,
            shapes={name: list(value.shape) for name, value in feeds.items()},
            dtypes={name: str(value.dtype) for name, value in feeds.items()},
        )
    )

"""Inputs for a signature: seeded synthesis from its specs, or a user's .npz file checked against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.errors import InputsError
from modelgate.schemas import SignatureSpec, TensorSpec

Feeds = dict[str, np.ndarray]


class InputsUnavailable(Exception):
    """No inputs can be synthesized for this signature; checks that need them are skipped with this reason."""


def concrete_shape(spec: TensorSpec, batch_size: int, unknown_dim_size: int) -> list[int]:
    if spec.shape is None:
        return [batch_size]
    return [
        (batch_size if axis == 0 else unknown_dim_size) if dim is None else dim
        for axis, dim in enumerate(spec.shape)
    ]


def _values(rng: np.random.Generator, name: str, spec: TensorSpec, shape: list[int]) -> np.ndarray:
    dtype = spec.dtype
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith(("float", "bfloat", "half")) or dtype in ("double",):
        # Standard normal, not uniform [0, 1): outputs then spread, so conversion errors are not hidden.
        np_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype.replace("half", "float16"))
        return rng.standard_normal(shape).astype(np_dtype)
    if dtype.startswith(("int", "uint")):
        # Small non-negative values: valid as indices into embeddings and one-hot depths.
        return rng.integers(0, 8, size=shape).astype(np.dtype(dtype))
    raise InputsUnavailable(
        f"input '{name}' has dtype {dtype}, which cannot be synthesized; pass --inputs FILE.npz with real values"
    )


def synthesize(signature: SignatureSpec, batch_size: int, unknown_dim_size: int, seed: int) -> Feeds:
    rng = np.random.default_rng(seed)
    return {
        name: _values(rng, name, spec, concrete_shape(spec, batch_size, unknown_dim_size))
        for name, spec in signature.inputs.items()
    }


def _conforms(shape: tuple[int, ...], spec: TensorSpec) -> bool:
    if spec.shape is None:
        return True
    return len(shape) == len(spec.shape) and all(d is None or d == s for d, s in zip(spec.shape, shape))


def load_npz(path: str | Path, signature: SignatureSpec) -> Feeds:
    path = Path(path)
    if not path.is_file():
        raise InputsError(f"inputs file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise InputsError(f"inputs file {path} is not a readable .npz archive ({exc})") from exc
    missing = sorted(set(signature.inputs) - set(arrays))
    if missing:
        raise InputsError(
            f"inputs file {path} lacks {', '.join(missing)}; signature '{signature.key}' needs "
            f"{', '.join(signature.inputs)} and the file has {', '.join(sorted(arrays)) or 'nothing'}"
        )
    feeds: Feeds = {}
    for name, spec in signature.inputs.items():
        array = arrays[name]
        if not _conforms(array.shape, spec):
            raise InputsError(f"input '{name}' in {path} has shape {list(array.shape)}, the signature wants {spec.shape}")
        if spec.dtype == "string":
            if array.dtype.kind not in "US":
                raise InputsError(f"input '{name}' in {path} has dtype {array.dtype}, the signature wants strings")
            feeds[name] = np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array
        else:
            try:
                feeds[name] = array.astype(np.dtype(spec.dtype), casting="same_kind")
            except TypeError as exc:
                raise InputsError(f"input '{name}' in {path} has dtype {array.dtype}, the signature wants {spec.dtype}") from exc
    return feeds


def save_npz(feeds: Feeds, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **feeds)
    return path


def read_npz(path: str | Path) -> Feeds:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def batch_of(feeds: Feeds, batch_size: int) -> Feeds:
    """The first rows of each input, repeated as needed, so benchmarks can run any batch size."""
    resized = {}
    for name, array in feeds.items():
        if array.ndim == 0:
            resized[name] = array
            continue
        reps = -(-batch_size // array.shape[0])
        resized[name] = np.concatenate([array] * reps)[:batch_size] if reps > 1 else array[:batch_size]
    return resized

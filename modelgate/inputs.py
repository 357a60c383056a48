"""Inputs for a signature: seeded synthesis from its specs, or a user's .npz file checked against them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.errors import InputsError
from modelgate.schemas import SignatureSpec, TensorSpec

Feeds = dict[str, np.ndarray]


def object_array(items: list[bytes]) -> np.ndarray:
    """A 1-D array of Python bytes objects, as TensorFlow returns strings: exact, trailing NUL bytes kept."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


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


def _sparse(rng: np.random.Generator, spec: TensorSpec, dense: np.ndarray) -> np.ndarray:
    """A SparseTensor input travels dense, zeros being its absent entries: about half of them are absent."""
    return np.where(rng.random(dense.shape) < 0.5, np.zeros_like(dense), dense) if spec.sparse else dense


def synthesize(signature: SignatureSpec, batch_size: int, unknown_dim_size: int, seed: int) -> Feeds:
    rng = np.random.default_rng(seed)
    return {
        name: _sparse(rng, spec, _values(rng, name, spec, concrete_shape(spec, batch_size, unknown_dim_size)))
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
            feeds[name] = (np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array).astype(object)
        else:
            try:
                feeds[name] = array.astype(np.dtype(spec.dtype), casting="same_kind")
            except TypeError as exc:
                raise InputsError(f"input '{name}' in {path} has dtype {array.dtype}, the signature wants {spec.dtype}") from exc
    return feeds


def read_example_records(path: Path) -> list[bytes]:
    """The records of a TFRecord file, each checked to be a serialized tf.Example."""
    from google.protobuf.message import DecodeError

    from modelgate.quiet import import_tensorflow
    from modelgate.savedmodel import first_meaningful_line

    tf = import_tensorflow()
    try:
        records = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    except tf.errors.OpError as exc:
        raise InputsError(
            f"inputs file {path}: expected a .npz archive or a TFRecord file of tf.Example records, found neither "
            f"({first_meaningful_line(exc.message)})"
        ) from exc
    if not records:
        raise InputsError(f"inputs file {path}: expected tf.Example records, found an empty TFRecord file")
    for index, record in enumerate(records):
        try:
            tf.train.Example.FromString(record)
        except DecodeError as exc:
            raise InputsError(
                f"inputs file {path}: expected record {index} to be a serialized tf.Example, found {len(record)} "
                "bytes that do not parse as one"
            ) from exc
    return records


def load_examples(path: str | Path, signature: SignatureSpec, unknown_dim_size: int, seed: int) -> Feeds:
    """Serialized tf.Example records for the signature's one string input (classify and regress signatures
    call it 'inputs'); its other inputs, if any, are synthesized with one row per record."""
    path = Path(path)
    if not path.is_file():
        raise InputsError(f"inputs file {path} does not exist")
    records = read_example_records(path)
    strings = [name for name, spec in signature.inputs.items() if spec.dtype == "string"]
    if len(strings) != 1:
        raise InputsError(
            f"inputs file {path} holds tf.Example records, which feed one string input; expected one in signature "
            f"'{signature.key}', found {len(strings)} ({', '.join(strings) or 'none'}); pass a .npz instead"
        )
    (name,) = strings
    spec = signature.inputs[name]
    if spec.shape is not None and len(spec.shape) != 1:
        raise InputsError(f"input '{name}' has shape {spec.shape}; tf.Example records feed a vector, shape [None]")
    if spec.shape and spec.shape[0] not in (None, len(records)):
        raise InputsError(f"input '{name}' takes exactly {spec.shape[0]} records, {path} holds {len(records)}")
    others = signature.model_copy(update={"inputs": {k: v for k, v in signature.inputs.items() if k != name}})
    return {name: object_array(records), **synthesize(others, len(records), unknown_dim_size, seed)}


def load_inputs_file(path: str | Path, signature: SignatureSpec, unknown_dim_size: int, seed: int) -> Feeds:
    if Path(path).suffix == ".npz":
        return load_npz(path, signature)
    return load_examples(path, signature, unknown_dim_size, seed)


# NumPy's fixed-width bytes strip trailing NUL bytes, which serialized protobufs often end with, and object
# arrays need pickle; so strings travel between stages as their concatenated bytes plus each one's length.
STRING_LENGTHS = ".string-lengths"


def save_npz(feeds: Feeds, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if value.dtype.kind in "OSU":
            items = [item.encode() if isinstance(item, str) else bytes(item) for item in value.ravel()]
            arrays[name] = np.frombuffer(b"".join(items), dtype=np.uint8)
            arrays[name + STRING_LENGTHS] = np.array([len(item) for item in items], np.int64).reshape(value.shape)
        else:
            arrays[name] = value
    np.savez(path, **arrays)
    return path


def read_npz(path: str | Path) -> Feeds:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    feeds: Feeds = {}
    for name, value in arrays.items():
        lengths = arrays.get(name + STRING_LENGTHS)
        if name.endswith(STRING_LENGTHS):
            continue
        if lengths is None:
            feeds[name] = value
            continue
        data, ends = value.tobytes(), np.cumsum(lengths.ravel())
        strings = [data[end - length:end] for end, length in zip(ends, lengths.ravel())]
        feeds[name] = object_array(strings).reshape(lengths.shape)
    return feeds


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

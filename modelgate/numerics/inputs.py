"""Inputs for a signature: seeded synthesis from its specs, or a user's .npz file checked against them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from modelgate.description import ExampleFeature, InputFacts, SignatureSpec, TensorSpec
from modelgate.errors import InputsError
from modelgate.report import ValueRange

Feeds = dict[str, np.ndarray]


def object_array(items: list[bytes]) -> np.ndarray:
    """A 1-D array of Python bytes objects, as TensorFlow returns strings: exact, trailing NUL bytes kept."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


class InputsUnavailable(Exception):
    """No inputs can be synthesized for this signature; checks that need them are skipped with this reason."""


def no_batch_dimension(signature: SignatureSpec) -> str | None:
    """Why the signature's inputs share no batch dimension, if they do not: a scalar has none, and beside one,
    inputs of fixed shape are whole values (a simulation's grid), not batches of rows. None where an input may
    be batched (a dynamic first dimension, or an unknown rank) or none is a scalar."""
    specs = signature.inputs.values()
    scalar = any(spec.shape == [] for spec in specs)
    if not scalar or any(spec.shape is None or spec.shape[:1] == [None] for spec in specs):
        return None
    found = [f"input '{name}' is a scalar" if spec.shape == [] else f"input '{name}' has the fixed shape {spec.shape}"
             for name, spec in signature.inputs.items()]
    return f"no batch dimension ({', '.join(found)})"


def concrete_shape(spec: TensorSpec, batch_size: int, unknown_dim_size: int) -> list[int]:
    if spec.shape is None:
        return [batch_size]
    return [
        (batch_size if axis == 0 else unknown_dim_size) if dim is None else dim
        for axis, dim in enumerate(spec.shape)
    ]


# Polygraphy's data loader default: valid as any index (a table has at least one row) and as a 0/1 mask.
DEFAULT_INTEGER_RANGE = (0, 1)
SAMPLE_SIZE = 5
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "half")) or dtype == "double"


def _is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _numeric_names(signature: SignatureSpec) -> dict[str, str]:
    """The names a value range may be given for, with their dtype: numeric inputs and the numeric
    features of the tf.Example inputs."""
    names = {
        feature.key: feature.dtype
        for facts in signature.input_facts.values()
        for feature in facts.example_features
        if feature.dtype != "string"
    }
    for name, spec in signature.inputs.items():
        if _is_float(spec.dtype) or _is_integer(spec.dtype):
            names[name] = spec.dtype
    return names


def value_ranges(signature: SignatureSpec, asked: dict[str, list[float]]) -> dict[str, ValueRange]:
    """The range of each numeric input and tf.Example feature: the user's for that name, else the rows of
    the tables the graph indexes with it, else the user's default (""), else [0, 1] for integers; floats
    without any stay standard normal (no entry)."""
    names = _numeric_names(signature)
    unknown = sorted(set(asked) - set(names) - {""})
    if unknown:
        raise InputsError(
            f"value_range names {', '.join(unknown)}, which signature '{signature.key}' has no numeric input or "
            f"tf.Example feature of; it has {', '.join(sorted(names)) or 'none'}"
        )
    ranges = {}
    for name, dtype in names.items():
        graph = signature.input_facts.get(name, InputFacts())
        if name in asked:
            found = ValueRange(low=asked[name][0], high=asked[name][1], origin="user", detail="--value-range")
        elif graph.value_range:
            found = ValueRange(low=graph.value_range[0], high=graph.value_range[1], origin="graph",
                               detail=graph.range_detail)
        elif "" in asked:
            found = ValueRange(low=asked[""][0], high=asked[""][1], origin="user", detail="--value-range default")
        elif _is_integer(dtype):
            found = ValueRange(low=DEFAULT_INTEGER_RANGE[0], high=DEFAULT_INTEGER_RANGE[1], origin="default",
                               detail="the graph indexes no table with it")
        else:
            continue
        ranges[name] = _fitted(name, dtype, found)
    return ranges


def _fitted(name: str, dtype: str, found: ValueRange) -> ValueRange:
    """An integer range holds the integers inside it that the dtype can hold."""
    if not _is_integer(dtype):
        return found
    bounds = np.iinfo(np.dtype(dtype))
    low, high = max(int(np.ceil(found.low)), bounds.min), min(int(np.floor(found.high)), bounds.max)
    if low > high:
        raise InputsError(f"value range [{found.low:g}, {found.high:g}] of '{name}' holds no {dtype} value")
    return found.model_copy(update={"low": low, "high": high})


def _numbers(rng: np.random.Generator, dtype: str, shape: list[int], value_range: ValueRange | None) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if _is_float(dtype):
        np_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype.replace("half", "float16"))
        if value_range is None:
            # Standard normal, not uniform [0, 1): outputs then spread, so conversion errors are not hidden.
            return rng.standard_normal(shape).astype(np_dtype)
        return rng.uniform(value_range.low, value_range.high, shape).astype(np_dtype)
    return rng.integers(int(value_range.low), int(value_range.high), size=shape, endpoint=True).astype(np.dtype(dtype))


def _words(rng: np.random.Generator, count: int, vocabulary: list[str]) -> list[str]:
    """Words from the vocabulary and, a quarter of them (all without one), seeded words outside it."""
    words = []
    for _ in range(count):
        if vocabulary and rng.random() < 0.75:
            words.append(vocabulary[rng.integers(len(vocabulary))])
        else:
            words.append("".join(rng.choice(_LETTERS, rng.integers(3, 9))))
    return words


def _texts(rng: np.random.Generator, shape: list[int], vocabulary: list[str]) -> np.ndarray:
    """Single words (what a lookup table takes) alternating with short sentences (what a tokenizer takes)."""
    size = int(np.prod(shape))
    texts = [" ".join(_words(rng, 1 if i % 2 == 0 else int(rng.integers(2, 7)), vocabulary)).encode()
             for i in range(size)]
    return object_array(texts).reshape(shape)


# tf.Example's schema (tensorflow/core/example/example.proto and feature.proto, less the SequenceExample part),
# for a pool of its own: TensorFlow's generated module would import all of TensorFlow into the flow's process.
_EXAMPLE_SCHEMA = """
name: "modelgate/tf_example.proto" package: "tensorflow" syntax: "proto3"
message_type { name: "BytesList" field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES } }
message_type {
  name: "FloatList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_FLOAT options { packed: true } }
}
message_type {
  name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true } }
}
message_type {
  name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.BytesList"
          oneof_index: 0 }
  field { name: "float_list" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.FloatList"
          oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.Int64List"
          oneof_index: 0 }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Features.FeatureEntry" }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.Feature" }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.Features" }
}
"""


@functools.cache
def example_message_class() -> type:
    """tf.train.Example's message class, without TensorFlow: the same wire format and text format."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_EXAMPLE_SCHEMA, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def _example(rng: np.random.Generator, features: list[ExampleFeature], ranges: dict[str, ValueRange],
             vocabulary: list[str], unknown_dim_size: int):
    example = example_message_class()()
    for feature in features:
        if feature.kind == "dense":
            count = int(np.prod([unknown_dim_size if d < 0 else d for d in feature.shape]))
        else:
            count = int(rng.integers(1, 4))
        slot = example.features.feature[feature.key]
        if feature.dtype == "string":
            slot.bytes_list.value.extend(word.encode() for word in _words(rng, count, vocabulary))
        elif feature.dtype == "int64":
            slot.int64_list.value.extend(_numbers(rng, "int64", [count], ranges[feature.key]).tolist())
        else:
            slot.float_list.value.extend(_numbers(rng, "float32", [count], ranges.get(feature.key)).tolist())
    return example


def _sparse(rng: np.random.Generator, spec: TensorSpec, dense: np.ndarray) -> np.ndarray:
    """A SparseTensor input travels dense, zeros being its absent entries: about half of them are absent."""
    return np.where(rng.random(dense.shape) < 0.5, np.zeros_like(dense), dense) if spec.sparse else dense


class Synthesis(NamedTuple):
    feeds: Feeds
    value_ranges: dict[str, ValueRange]
    samples: dict[str, list[str]]
    example_features: dict[str, list[ExampleFeature]]


def synthesize_recorded(
    signature: SignatureSpec, batch_size: int, unknown_dim_size: int, seed: int,
    value_range: dict[str, list[float]] | None = None,
) -> Synthesis:
    """Seeded inputs from the signature and what its graph says of them (SignatureSpec.input_facts), with
    what was made of each: ranges, a sample of strings, the tf.Example spec."""
    from google.protobuf import text_format

    rng = np.random.default_rng(seed)
    ranges = value_ranges(signature, value_range or {})
    feeds, samples, parsed = {}, {}, {}
    for name, spec in signature.inputs.items():
        shape = concrete_shape(spec, batch_size, unknown_dim_size)
        facts = signature.input_facts.get(name, InputFacts())
        if spec.dtype == "string" and facts.example_features:
            examples = [_example(rng, facts.example_features, ranges, facts.vocabulary, unknown_dim_size)
                        for _ in range(int(np.prod(shape)))]
            feeds[name] = object_array([e.SerializeToString() for e in examples]).reshape(shape)
            samples[name] = [text_format.MessageToString(e, as_one_line=True) for e in examples[:1]]
            parsed[name] = facts.example_features
        elif spec.dtype == "string":
            feeds[name] = _texts(rng, shape, facts.vocabulary)
            samples[name] = [text.decode() for text in feeds[name].ravel()[:SAMPLE_SIZE]]
        elif spec.dtype == "bool" or _is_float(spec.dtype) or _is_integer(spec.dtype):
            feeds[name] = _sparse(rng, spec, _numbers(rng, spec.dtype, shape, ranges.get(name)))
        else:
            raise InputsUnavailable(
                f"input '{name}' has dtype {spec.dtype}, which cannot be synthesized; pass --inputs FILE.npz "
                "with real values"
            )
    return Synthesis(feeds, ranges, samples, parsed)


def synthesize(
    signature: SignatureSpec, batch_size: int, unknown_dim_size: int, seed: int,
    value_range: dict[str, list[float]] | None = None,
) -> Feeds:
    return synthesize_recorded(signature, batch_size, unknown_dim_size, seed, value_range).feeds


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

    from modelgate.execution.quiet import import_tensorflow
    from modelgate.model.savedmodel import first_meaningful_line

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

"""Static check of a SavedModel's variables/ folder, before anything loads it.

Loading discovers a missing or truncated variables file only deep inside a restore op, as a multi-line
TensorFlow error. The checkpoint index says which data shards exist and where each tensor lies in them, so
reading it tells in one line what is missing, before any model code runs.

TensorFlow's own checkpoint reader is the authority on what the index holds (names, dtypes, shapes). Where
each tensor lies (BundleEntryProto's shard, offset and size) no TensorFlow API exposes, so the table (a
LevelDB-style file) is also decoded here; older TensorFlow versions wrote its blocks snappy-compressed.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import cramjam

from modelgate.errors import NotASavedModel
from modelgate.execution.quiet import import_tensorflow

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte and crc32c
UNCOMPRESSED, SNAPPY = 0, 1
# Snappy's densest element, a 3-byte copy of 64 bytes, expands 21.3 times: a block claiming more is corrupt,
# and its claim is never allocated.
SNAPPY_MAX_EXPANSION = 22
# TensorShape's limit; TensorFlow's reader aborts the process (a CHECK) on a shape past it or on a negative or
# overflowing dimension, so such an index is refused before TensorFlow reads it.
MAX_RANK = 254
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "VarHandleOpV2"})
SLICE_KEY_PREFIX = b"\x00"  # keys of a partitioned variable's slices (OrderedCode), beside its full-tensor key
UNSIZED_DTYPES = frozenset({"string", "variant", "resource"})


class CorruptIndex(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CorruptIndex("varint runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _block_contents(data: bytes, offset: int, size: int) -> bytes:
    if offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise CorruptIndex("a block runs past the end of the file")
    stored, compression = data[offset:offset + size], data[offset + size]
    if compression == UNCOMPRESSED:
        return stored
    if compression != SNAPPY:
        raise CorruptIndex(f"a block of unknown compression type {compression}")
    try:
        claimed = cramjam.snappy.decompress_raw_len(stored)
        if claimed > SNAPPY_MAX_EXPANSION * len(stored):
            raise CorruptIndex(f"a snappy block claims {claimed} bytes from {len(stored)}")
        return bytes(cramjam.snappy.decompress_raw(stored))
    except cramjam.DecompressionError as exc:
        raise CorruptIndex(f"a snappy block does not decompress: {exc}") from None


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The key/value entries of one table block (prefix-compressed keys, restart array at its end)."""
    block = _block_contents(data, offset, size)
    if len(block) < 4:
        raise CorruptIndex("a block too short for its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CorruptIndex("a block's restart array runs past its start")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_length]))
        pos += value_length
    return entries


def read_index(index_path: Path) -> dict[bytes, bytes]:
    """Every entry of a checkpoint index, in file order: key to serialized BundleEntryProto (b'' is the header)."""
    data = index_path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CorruptIndex("no table footer (truncated or not a checkpoint index)")
    pos = len(data) - FOOTER_SIZE
    _, pos = _varint(data, pos)  # metaindex offset: the bundle keeps nothing there
    _, pos = _varint(data, pos)
    index_offset, pos = _varint(data, pos)
    index_size, pos = _varint(data, pos)
    entries: dict[bytes, bytes] = {}
    for _, handle in _block(data, index_offset, index_size):
        offset, at = _varint(handle, 0)
        size, _ = _varint(handle, at)
        entries.update(_block(data, offset, size))
    return entries


def _refuse_what_tensorflow_aborts_on(name: str, entry) -> None:
    dims = [dim.size for dim in entry.shape.dim]
    if len(dims) > MAX_RANK or any(size < 0 for size in dims) or math.prod(dims) >= 2**63:
        raise CorruptIndex(f"variable '{name}' has an impossible shape {dims}")
    extents = [tuple((e.start, e.length if e.HasField("length") else -1) for e in s.extent) for s in entry.slices]
    if len(set(extents)) < len(extents):
        raise CorruptIndex(f"variable '{name}' lists a slice twice")


def _parse_entries(index_path: Path):
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import tensor_bundle_pb2

    try:
        entries = read_index(index_path)
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
        tensors = {key: tensor_bundle_pb2.BundleEntryProto.FromString(value) for key, value in entries.items()}
    except KeyError:
        raise CorruptIndex("no header entry") from None
    except (struct.error, DecodeError) as exc:
        raise CorruptIndex(str(exc) or type(exc).__name__) from None
    for key, entry in tensors.items():
        _refuse_what_tensorflow_aborts_on(key.decode("utf-8", "replace"), entry)
    return header, tensors


def _tensorflow_listing(index_path: Path) -> dict[str, tuple[object, list[int]]]:
    """Name to (dtype, shape) of every tensor, as TensorFlow's checkpoint reader sees the index."""
    tf = import_tensorflow()
    try:
        reader = tf.train.load_checkpoint(str(index_path.with_suffix("")))
        shapes = reader.get_variable_to_shape_map()
        return {name: (dtype, shapes[name]) for name, dtype in reader.get_variable_to_dtype_map().items()}
    except tf.errors.OpError as exc:
        raise CorruptIndex(f"TensorFlow's checkpoint reader: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # a dtype TensorFlow does not know, a name that is not UTF-8
        raise CorruptIndex(f"TensorFlow's checkpoint reader: {exc}") from None


def _placements(index_path: Path):
    """The header and, per tensor TensorFlow lists, its entry; refused where the two readings disagree."""
    header, entries = _parse_entries(index_path)
    listing = _tensorflow_listing(index_path)
    decoded = {key.decode("utf-8", "replace"): entry for key, entry in entries.items()
               if not key.startswith(SLICE_KEY_PREFIX)}
    if decoded.keys() != listing.keys():
        # TensorFlow's table iterator stops quietly at a block it cannot read: a partial listing.
        raise CorruptIndex(f"TensorFlow's checkpoint reader lists {len(listing)} tensors, the table holds {len(decoded)}")
    return header, {name: (*listing[name], decoded[name]) for name in listing}


def needs_variables(saved_model) -> bool:
    """TF2 SavedModels always restore from variables/; TF1 graphs only when they hold variables."""
    for meta_graph in saved_model.meta_graphs:
        if meta_graph.object_graph_def.nodes:
            return True
        if any(node.op in VARIABLE_OPS for node in meta_graph.graph_def.node):
            return True
    return False


def verify_variables(model_dir: Path, saved_model) -> None:
    """Raise NotASavedModel, in one line, when variables/ cannot hold what the graph restores."""
    index_path = model_dir / "variables" / "variables.index"
    if not index_path.is_file():
        if not needs_variables(saved_model):
            return
        found = "no variables/ folder" if not index_path.parent.is_dir() else "variables/ without variables.index"
        raise NotASavedModel(f"{model_dir}: incomplete SavedModel: expected variables/variables.index, found {found}")
    try:
        header, tensors = _placements(index_path)
    except CorruptIndex as exc:
        raise NotASavedModel(f"{index_path}: unreadable checkpoint index ({exc})") from None
    needed = [0] * header.num_shards
    for name, (dtype, shape, entry) in tensors.items():
        if entry.shard_id >= header.num_shards:
            raise NotASavedModel(
                f"{index_path}: variable '{name}' is in shard {entry.shard_id}, the index declares {header.num_shards}"
            )
        if dtype.name not in UNSIZED_DTYPES and not entry.slices and entry.size != math.prod(shape) * dtype.size:
            raise NotASavedModel(
                f"{index_path}: variable '{name}' ({dtype.name} {shape}) needs {math.prod(shape) * dtype.size} bytes, "
                f"the index gives it {entry.size}"
            )
        needed[entry.shard_id] = max(needed[entry.shard_id], entry.offset + entry.size)
    for shard, size in enumerate(needed):
        data_file = index_path.parent / f"variables.data-{shard:05d}-of-{header.num_shards:05d}"
        if not data_file.is_file():
            raise NotASavedModel(f"{model_dir}: incomplete SavedModel: expected {data_file.name} in variables/, found none")
        found = data_file.stat().st_size
        if found < size:
            raise NotASavedModel(
                f"{data_file}: truncated variables data: the index needs at least {size} bytes, found {found}"
            )

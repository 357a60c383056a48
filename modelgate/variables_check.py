"""Static check of a SavedModel's variables/ folder, before anything loads it.

Loading discovers a missing or truncated variables file only deep inside a restore op, as a multi-line
TensorFlow error. The checkpoint index says which data shards exist and where each tensor lies in them, so
reading it (a TensorFlow table of BundleEntryProto values; no TensorFlow API exposes the offsets) tells in
one line what is missing, before any model code runs.
"""

from __future__ import annotations

import struct
from pathlib import Path

from modelgate.errors import NotASavedModel

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte and crc32c
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "VarHandleOpV2"})


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


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The key/value entries of one table block (prefix-compressed keys, restart array at its end)."""
    if offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise CorruptIndex("a block runs past the end of the file")
    if data[offset + size] != 0:
        raise CorruptIndex(f"compressed block (type {data[offset + size]}); checkpoint indexes are uncompressed")
    block = data[offset:offset + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
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


def read_index(index_path: Path) -> dict[str, bytes]:
    """Every entry of a checkpoint index: tensor name to serialized BundleEntryProto ('' is the header)."""
    data = index_path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CorruptIndex("no table footer (truncated or not a checkpoint index)")
    pos = len(data) - FOOTER_SIZE
    _, pos = _varint(data, pos)  # metaindex offset: the bundle keeps nothing there
    _, pos = _varint(data, pos)
    index_offset, pos = _varint(data, pos)
    index_size, pos = _varint(data, pos)
    entries: dict[str, bytes] = {}
    for _, handle in _block(data, index_offset, index_size):
        offset, at = _varint(handle, 0)
        size, _ = _varint(handle, at)
        entries.update((key.decode("utf-8", "replace"), value) for key, value in _block(data, offset, size))
    return entries


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
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import tensor_bundle_pb2

    index_path = model_dir / "variables" / "variables.index"
    if not index_path.is_file():
        if not needs_variables(saved_model):
            return
        found = "no variables/ folder" if not index_path.parent.is_dir() else "variables/ without variables.index"
        raise NotASavedModel(f"{model_dir}: incomplete SavedModel: expected variables/variables.index, found {found}")
    try:
        entries = read_index(index_path)
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(""))
        tensors = {name: tensor_bundle_pb2.BundleEntryProto.FromString(value) for name, value in entries.items()}
    except (CorruptIndex, KeyError, struct.error, DecodeError) as exc:
        raise NotASavedModel(f"{index_path}: unreadable checkpoint index ({exc or type(exc).__name__})") from exc
    needed = [0] * header.num_shards
    for name, entry in tensors.items():
        if entry.shard_id >= header.num_shards:
            raise NotASavedModel(
                f"{index_path}: variable '{name}' is in shard {entry.shard_id}, the index declares {header.num_shards}"
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

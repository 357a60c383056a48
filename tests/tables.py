"""Checkpoint indexes in the layout older TensorFlow versions wrote: LevelDB-style tables whose blocks are
snappy-compressed (trailer type 1) and checksummed (masked crc32c), written here from a real index's entries."""

from __future__ import annotations

import struct

import cramjam

TABLE_MAGIC = 0xDB4775248B80FB57
SNAPPY = 1
CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, reflected
CRC_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes) -> int:
    # No crc32c package is installed; the bitwise form is fast enough for index blocks of a few KiB.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32C_POLYNOMIAL & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A block whose every entry is a restart point (no shared key prefixes), the restart array at its end."""
    records = [varint(0) + varint(len(key)) + varint(len(value)) + key + value for key, value in entries]
    restarts = [sum(map(len, records[:i])) for i in range(len(records))] or [0]
    return b"".join(records) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def snappy_table(entries: list[tuple[bytes, bytes]], entries_per_block: int = 2, block_type: int = SNAPPY) -> bytes:
    """A table of the sorted entries, every block (data, metaindex, index) snappy-compressed and its trailer
    saying block_type (another type than SNAPPY makes a table no reader should accept)."""
    out = bytearray()

    def put(raw: bytes) -> bytes:
        stored = bytes(cramjam.snappy.compress_raw(raw)) + bytes([block_type])
        handle = varint(len(out)) + varint(len(stored) - 1)
        out.extend(stored + struct.pack("<I", masked_crc32c(stored)))
        return handle

    chunks = [entries[i:i + entries_per_block] for i in range(0, len(entries), entries_per_block)]
    index = [(chunk[-1][0], put(block(chunk))) for chunk in chunks]
    metaindex_handle = put(block([]))
    index_handle = put(block(index))
    return bytes(out + (metaindex_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC))

"""A real-format ``variables.index`` (TensorFlow's table format), written without TensorFlow."""

from __future__ import annotations

from pathlib import Path

_MAGIC = 0xDB4775248B80FB57


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def write_checkpoint_index(path: Path, shard_sizes: list[int]) -> None:
    """A ``variables.index`` naming one tensor per shard, filling ``shard_sizes[i]`` bytes."""
    header = b"\x08" + _varint(len(shard_sizes))  # BundleHeaderProto.num_shards
    entries = [(b"", header)]
    for shard, size in enumerate(shard_sizes):  # BundleEntryProto: shard_id, offset, size
        entries.append(
            (f"t{shard}".encode(), b"\x18" + _varint(shard) + b"\x20\x00\x28" + _varint(size))
        )
    trailer = b"\x00" + bytes(4)  # uncompressed, crc not checked
    data = _block(entries)
    index = _block([(b"\xff", _varint(0) + _varint(len(data)))])
    meta = _block([])
    blob = data + trailer
    index_at = len(blob)
    blob += index + trailer
    meta_at = len(blob)
    blob += meta + trailer
    footer = _varint(meta_at) + _varint(len(meta)) + _varint(index_at) + _varint(len(index))
    blob += footer.ljust(40, b"\x00") + _MAGIC.to_bytes(8, "little")
    path.write_bytes(blob)

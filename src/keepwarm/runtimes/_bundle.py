"""Check a TensorFlow checkpoint (``variables/``) for completeness without TensorFlow.

``variables.index`` is a sorted table (LevelDB's format, uncompressed as TensorFlow writes
it) mapping each tensor name to a ``BundleEntryProto`` (shard, offset, size); the empty key
holds a ``BundleHeaderProto`` with the number of shards. Reading it tells which shard files
must exist and how long each must be at least, so a half-copied version is refused before
the framework sees it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5  # block type byte + crc32
_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")


class BadIndex(ValueError):
    """``variables.index`` cannot be read."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BadIndex("varint runs past the end of the buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BadIndex("varint too long")


def _block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if end + _TRAILER > len(data):
        raise BadIndex("a block runs past the end of the file")
    if data[end] != 0:
        raise BadIndex("compressed block (not written by TensorFlow's checkpoint writer)")
    return data[offset:end]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise BadIndex("block too short")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (restarts + 1)
    if limit < 0:
        raise BadIndex("bad restart count")
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        value = block[pos : pos + length]
        pos += length
        if pos > limit:
            raise BadIndex("entry runs past the end of its block")
        yield key, value


def _fields(message: bytes) -> dict[int, int]:
    """The scalar (varint) fields of a protobuf message; others are skipped."""
    found: dict[int, int] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            found[number], pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise BadIndex(f"unsupported protobuf wire type {wire}")
    return found


def read_index(index: Path) -> tuple[int, dict[int, int]]:
    """``(num_shards, {shard: minimum size in bytes})`` from a ``variables.index`` file."""
    data = index.read_bytes()
    if len(data) < _FOOTER or int.from_bytes(data[-8:], "little") != _MAGIC:
        raise BadIndex("truncated or not a checkpoint index (bad footer)")
    footer = data[-_FOOTER:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    num_shards = 1
    needed: dict[int, int] = {}
    for _, handle in _entries(_block(data, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        for key, value in _entries(_block(data, offset, size)):
            fields = _fields(value)
            if key == b"":
                num_shards = fields.get(1, 1)
                continue
            shard, end = fields.get(3, 0), fields.get(4, 0) + fields.get(5, 0)
            needed[shard] = max(needed.get(shard, 0), end)
    return num_shards, needed


def shard_name(shard: int, num_shards: int) -> str:
    return f"variables.data-{shard:05d}-of-{num_shards:05d}"


def checkpoint_incomplete(variables: Path) -> str | None:
    """Why the checkpoint in ``variables`` is not whole, or None."""
    index = variables / "variables.index"
    if not index.is_file():
        return f"{index} is missing"
    try:
        num_shards, needed = read_index(index)
    except BadIndex as exc:
        if "compressed" not in str(exc):
            return f"{index} is unreadable: {exc}"
        return _by_names(variables)  # an index we cannot parse: fall back to file names
    for shard in range(num_shards):
        path = variables / shard_name(shard, num_shards)
        if not path.is_file():
            return f"variable shard {path.name} is missing"
        size = path.stat().st_size
        if size < needed.get(shard, 0):
            return (
                f"variable shard {path.name} is truncated: {size} bytes, "
                f"the index needs at least {needed[shard]}"
            )
    return None


def _by_names(variables: Path) -> str | None:
    totals = {int(m.group(2)) for p in variables.iterdir() if (m := _SHARD.match(p.name))}
    for total in totals:
        for shard in range(total):
            if not (variables / shard_name(shard, total)).is_file():
                return f"variable shard {shard_name(shard, total)} is missing"
    return None

"""Large JSON bodies decoded in pieces, so that the thread decoding one gives the
interpreter lock up every fraction of a millisecond instead of holding it for the whole
body.

``orjson.loads`` holds the GIL for a whole document (about 8 ms for one MobileNetV2 v2
body of 1.6 MB here), and so does ``np.asarray`` on the list it returns: while a worker
thread decodes, the event loop cannot run, and every request that needs the loop waits,
a refusal on its headers included. Here each large array that is the value of a
``"data"`` key is cut at commas into pieces of about ``PIECE_BYTES``; each piece is
parsed and made an array on its own, and between pieces ``time.sleep(0)`` lets a thread
waiting for the lock (the event loop) take it. The rest of the document, with a marker
in place of each array, is parsed whole (``jsonio.loads``, depth limit included).

Anything unexpected (a marker not found where a listed object's ``"data"`` is, a piece
that is not a flat list of numbers, nested arrays, invalid JSON) and the whole body is
parsed the plain way instead, so results and errors are exactly the plain path's. An
array is int64 or float64, as ``np.asarray`` makes of the whole list.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import numpy as np
import orjson

try:
    import simdjson
except ImportError:  # orjson parses the pieces (slower, as safe)
    simdjson = None  # type: ignore[assignment]

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio

#: Arrays shorter than this (in bytes of JSON) are parsed with the rest of the body.
MIN_ARRAY_BYTES = 64 * 1024
#: About 0.1 ms of parsing per piece with simdjson on this machine's kind (0.6 ms with
#: orjson); between pieces the thread sleeps(0), which costs about 1 us on an idle core.
PIECE_BYTES = 64 * 1024
_DATA = re.compile(rb'"data"\s*:\s*\[')
_NUMBERS = (np.dtype(np.int64), np.dtype(np.float64))
_BEYOND_INT64 = 2.0**63
_BUFFERS: tuple[tuple[Literal["i", "d"], type[np.generic]], ...] = (
    ("i", np.int64),
    ("d", np.float64),
)


def loads(
    body: bytes | memoryview,
    *,
    max_depth: int,
    within: str,
    min_bytes: int = MIN_ARRAY_BYTES,
    piece_bytes: int = PIECE_BYTES,
    use_simdjson: bool = True,
) -> Any:
    """``body`` parsed as ``jsonio.loads`` parses it, except that a ``"data"`` array of at
    least ``min_bytes`` in an object listed under the top-level key ``within`` (a v2
    request's ``"inputs"``) is a numpy array, parsed in pieces of about ``piece_bytes``
    with the GIL given up between them (by simdjson when installed and ``use_simdjson``)."""
    if isinstance(body, bytes) and len(body) >= min_bytes:
        spans = _spans(body, min_bytes)
        if spans:
            parser = simdjson.Parser() if use_simdjson and simdjson is not None else None
            try:
                found = _loads(body, spans, max_depth, within, (piece_bytes, parser))
            # orjson's errors are ValueErrors; simdjson's for integers past 64 bits and a
            # parser still in use are RuntimeErrors
            except (ValueError, TypeError, RuntimeError, InvalidInputError):
                found = None
            if found is not None:
                return found
    return jsonio.loads(body, max_depth=max_depth)


def _spans(body: bytes, min_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of each candidate array's interior: after its ``[``, at its first ``]``."""
    found = []
    for match in _DATA.finditer(body):
        start = match.end()
        end = body.find(b"]", start)
        if end - start >= min_bytes:
            found.append((start, end))
    return found


def _loads(
    body: bytes, spans: list[tuple[int, int]], max_depth: int, within: str, how: tuple[int, Any]
) -> Any:
    markers = [f"\0keepwarm array {i}" for i in range(len(spans))]
    parts, last = [], 0
    for (start, end), marker in zip(spans, markers, strict=True):
        parts += [body[last:start], orjson.dumps(marker)]
        last = end
    parts.append(body[last:])
    skeleton = jsonio.loads(b"".join(parts), max_depth=max_depth)
    places: dict[str, dict[str, Any]] = {}
    listed = skeleton.get(within) if isinstance(skeleton, dict) else None
    for holder in listed if isinstance(listed, list) else ():
        if isinstance(holder, dict):
            value = holder.get("data")
            if isinstance(value, list) and len(value) == 1 and value[0] in markers:
                if value[0] in places:
                    return None
                places[value[0]] = holder
    if len(places) != len(markers):
        return None
    for (start, end), marker in zip(spans, markers, strict=True):
        array = _numbers(body, start, end, *how)
        if array is None:
            return None
        places[marker]["data"] = array
    return skeleton


def _numbers(body: bytes, start: int, end: int, size: int, parser: Any) -> np.ndarray | None:
    """The flat list of numbers in ``body[start:end]``, parsed piece by piece in a copy
    whose cut commas become the pieces' brackets; None if it is anything else."""
    buffer = bytearray(body[start - 1 : end + 1])  # "[" interior "]"
    view = memoryview(buffer)
    stop = len(buffer) - 1
    arrays = []
    opening = 0  # the "[" (or the comma made one) before the current piece
    while opening < stop:
        cut = buffer.find(b",", opening + size, stop) if opening + size < stop else -1
        closing = stop if cut < 0 else cut
        buffer[opening] = 0x5B  # "["
        buffer[closing] = 0x5D  # "]"
        piece = view[opening : closing + 1]
        array = _orjson_piece(piece) if parser is None else _simdjson_piece(parser, piece)
        if array is None or not array.size:
            return None
        arrays.append(array)
        opening = closing
        if opening < stop:
            time.sleep(0)  # let a thread waiting for the GIL (the event loop) have it
    return np.concatenate(arrays)


def _orjson_piece(piece: memoryview) -> np.ndarray | None:
    array = np.asarray(orjson.loads(piece))
    return array if array.ndim == 1 and array.dtype in _NUMBERS else None


def _simdjson_piece(parser: Any, piece: memoryview) -> np.ndarray | None:
    """simdjson copies the numbers into a buffer, with no Python object per number
    (several times faster than orjson and ``np.asarray``)."""
    document = parser.parse(piece)
    try:
        if not isinstance(document, simdjson.Array):
            return None
        count = len(document)  # nested arrays are flattened into the buffer: compare
        for code, dtype in _BUFFERS:
            try:
                array = np.frombuffer(document.as_buffer(of_type=code), dtype=dtype)
            except (TypeError, ValueError):
                continue
            if array.size != count:
                return None
            if code == "d" and np.abs(array).max() >= _BEYOND_INT64:
                return None  # integers past int64 (numpy would make them uint64 or objects)
            return array
        return None
    finally:
        del document

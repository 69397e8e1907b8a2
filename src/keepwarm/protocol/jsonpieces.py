"""Large JSON bodies decoded in pieces, so that the thread decoding one gives the
interpreter lock up every fraction of a millisecond instead of holding it for the whole
body.

A parser holds the GIL for a whole document: for one MobileNetV2 v2 body of 1.6 MB,
about 2-3 ms with simdjson (``jsonfast``), 8-10 ms with orjson and ``np.asarray``.
While a worker thread decodes, the event loop cannot run, and every request that needs
the loop waits, a refusal on its headers included. Here each large array that is the
value of a ``"data"`` key is cut at commas into pieces of about ``PIECE_BYTES``; each
piece is parsed by simdjson into an array of its own (``jsonfast.flat_numbers``), and
between pieces ``time.sleep(0)`` lets a thread waiting for the lock (the loop) take it.
The rest of the document, with a marker in place of each array, is parsed whole
(``jsonio.loads``, depth limit included).

Anything unexpected (a marker not found where a listed object's ``"data"`` is, a piece
that is not a flat list of numbers, nested arrays, invalid JSON) and the whole body is
parsed the plain way instead (``jsonio.loads(..., arrays=True)``), so results and
errors are exactly the plain path's. An array is int64 or float64, as ``np.asarray``
makes of the whole list.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import numpy as np
import orjson
import simdjson

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonio

#: Arrays shorter than this (in bytes of JSON) are parsed with the rest of the body.
MIN_ARRAY_BYTES = 64 * 1024
#: About 0.1 ms of parsing per piece on this machine's kind; between pieces the thread
#: sleeps(0), which costs about 1 us on an idle core.
PIECE_BYTES = 64 * 1024
#: Large arrays decoded at once, at most: one per core. More would only share the cores
#: (each finishing later, the first as late as the last) and contend with the event loop
#: for the GIL at every piece; the rest wait their turn.
DECODERS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_DATA = re.compile(rb'"data"\s*:\s*\[')


def loads(
    body: bytes | memoryview,
    *,
    max_depth: int,
    within: str,
    min_bytes: int = MIN_ARRAY_BYTES,
    piece_bytes: int = PIECE_BYTES,
) -> Any:
    """``body`` parsed as ``jsonio.loads`` parses it, except that a ``"data"`` array of at
    least ``min_bytes`` in an object listed under the top-level key ``within`` (a v2
    request's ``"inputs"``) is a numpy array, parsed in pieces of about ``piece_bytes``
    with the GIL given up between them; anything else as ``jsonio.loads(..., arrays=True)``."""
    if isinstance(body, bytes) and len(body) >= min_bytes:
        spans = _spans(body, min_bytes)
        if spans:
            try:
                found = _loads(body, spans, max_depth, within, piece_bytes)
            # orjson's errors are ValueErrors; simdjson's for integers past 64 bits and a
            # parser still in use are RuntimeErrors
            except (ValueError, TypeError, RuntimeError, InvalidInputError):
                found = None
            if found is not None:
                return found
    return jsonio.loads(body, max_depth=max_depth, arrays=True)


def _spans(body: bytes, min_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of each candidate array's interior: after its ``[``, at its first ``]``."""
    found = []
    for match in _DATA.finditer(body):
        start = match.end()
        end = body.find(b"]", start)
        if end - start >= min_bytes:
            found.append((start, end))
    return found


def marked(body: bytes, spans: list[tuple[int, int]], max_depth: int) -> tuple[Any, list[str]]:
    """``body`` parsed (``jsonio.loads``) with a marker string in place of each span, and
    the markers (strings a client may send too: the caller checks where they are)."""
    markers = [f"\0keepwarm array {i}" for i in range(len(spans))]
    parts, last = [], 0
    for (start, end), marker in zip(spans, markers, strict=True):
        parts += [body[last:start], orjson.dumps(marker)]
        last = end
    parts.append(body[last:])
    return jsonio.loads(b"".join(parts), max_depth=max_depth), markers


def _loads(
    body: bytes, spans: list[tuple[int, int]], max_depth: int, within: str, piece_bytes: int
) -> Any:
    skeleton, markers = marked(body, spans, max_depth)
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
        array = _numbers(body, start, end, piece_bytes)
        if array is None:
            return None
        places[marker]["data"] = array
    return skeleton


def _numbers(body: bytes, start: int, end: int, size: int) -> np.ndarray | None:
    """The flat list of numbers in ``body[start:end]``, parsed piece by piece in a copy
    whose cut commas become the pieces' brackets; None if it is anything else. simdjson
    copies each piece's numbers into a buffer, with no Python object per number."""
    with DECODERS:
        return _pieces(body, start, end, size)


def _pieces(body: bytes, start: int, end: int, size: int) -> np.ndarray | None:
    buffer = bytearray(body[start - 1 : end + 1])  # "[" interior "]"
    view = memoryview(buffer)
    stop = len(buffer) - 1
    parser = simdjson.Parser()
    arrays = []
    opening = 0  # the "[" (or the comma made one) before the current piece
    while opening < stop:
        cut = buffer.find(b",", opening + size, stop) if opening + size < stop else -1
        closing = stop if cut < 0 else cut
        buffer[opening] = 0x5B  # "["
        buffer[closing] = 0x5D  # "]"
        document = parser.parse(view[opening : closing + 1])
        array = jsonfast.flat_numbers(document) if isinstance(document, simdjson.Array) else None
        del document  # the parser is reused for the next piece
        if array is None:
            return None
        arrays.append(array)
        opening = closing
        if opening < stop:
            time.sleep(0)  # let a thread waiting for the GIL (the event loop) have it
    return np.concatenate(arrays)

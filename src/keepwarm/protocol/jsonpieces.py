"""Large JSON bodies decoded in pieces, so that the thread decoding one gives the
interpreter lock up every fraction of a millisecond instead of holding it for the whole
body.

A parser holds the GIL for a whole document: for one MobileNetV2 v2 body of 1.6 MB,
about 2-3 ms with simdjson (``jsonfast``), 8-10 ms with orjson and ``np.asarray``.
While a worker thread decodes, the event loop cannot run, and every request that needs
the loop waits, a refusal on its headers included. Here each large array that is the
value of a ``"data"`` key is cut at commas into pieces of about ``PIECE_BYTES``; each
piece is parsed by simdjson into an array of its own (``jsonfast.flat_numbers``), and
between pieces ``time.sleep(0)`` lets a thread waiting for the lock (the loop) take it
(about 17 us of CPU each: giving the lock up only every 0.5 ms instead gave 0.92x the
requests per second at 32 clients of MobileNetV2's 1.6 MB JSON bodies).
The rest of the document, with a marker in place of each array, is parsed whole
(``jsonio.loads``, depth limit included).

Arrays from ``MIN_ARRAY_BYTES`` (1 KiB) up are cut out so, small ones in one piece: for
the 8 KB body of an MLP input, orjson reads the short rest and simdjson the numbers, with
no walk of simdjson's document. A nested ``"data"`` array (``[[...], [...]]``) is read as
``tfpieces`` reads a TF Serving tensor: its numbers flat, its shape from its brackets,
refused unless rectangular.

Anything unexpected (a marker not found where a listed object's ``"data"`` is, a piece
that is not a list of numbers, a ragged or empty nested array, invalid JSON) and the
whole body is parsed the plain way instead (``jsonio.loads(..., arrays=True)``), so
results and errors are exactly the plain path's. An array is int64 or float64, as
``np.asarray`` makes of the whole list.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from typing import Any

import numpy as np
import orjson
import simdjson

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonio, jsonnonfinite

#: Arrays shorter than this (in bytes of JSON) are parsed with the rest of the body. Cut
#: out, a 784-number MLP input (8 KB) decodes in about half the time of the whole-document
#: walk (``jsonfast``): orjson reads the small rest, simdjson the numbers alone.
MIN_ARRAY_BYTES = 1024
#: About 0.1 ms of parsing per piece on this machine's kind.
PIECE_BYTES = 64 * 1024
#: Room past ``PIECE_BYTES`` in the buffer a piece is copied into: a piece ends at the
#: first comma after its size, a number's length later.
SCRATCH_SLACK = 1024
#: Large arrays decoded at once, at most: one per core. More would only share the cores
#: (each finishing later, the first as late as the last) and contend with the event loop
#: for the GIL at every piece; the rest wait their turn.
DECODERS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_SALT = secrets.token_hex(8)
_KEY = b'"data"'
#: What follows the key, matched where it ends: an array (group 1, its "[") whose first
#: element starts as a number or an array does (group 2); strings (BYTES) are not cut.
_THEN_ARRAY = re.compile(rb"\s*:\s*(\[)\s*([-0-9\[])")
_TRAILING = b" \t\n\r,"


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
    with the GIL given up between them; anything else as ``jsonio.loads(..., arrays=True,
    literals=True)``: ``NaN``, ``Infinity`` and ``-Infinity`` are read as Triton's parser
    reads them (rapidjson's NaN-and-Inf flag; ``tritonclient.http`` sends them), only
    where simdjson or orjson refused them (``jsonnonfinite``): in an array cut out, by
    ``tfpieces`` (a MobileNetV2 image, 3 MB, with one NaN: 14-16 ms against 7.7-9.8 ms
    without; 97 ms through Python's ``json``; timeit best of 5, 3 runs, load 4.6-5)."""
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
    return jsonio.loads(body, max_depth=max_depth, arrays=True, literals=True)


def _spans(body: bytes, min_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of each candidate array: a flat one's interior (after its ``[``, at
    its first ``]``), or a nested one from its first ``[`` to just after its end (where
    the next key or the end of its object is, past commas and whitespace: an array of
    numbers holds no ``"`` and no ``}``; ``tfpieces`` checks the rest)."""
    found = []
    at = body.find(_KEY)
    while at >= 0:  # a search for the key, not a regular expression over every byte
        match = _THEN_ARRAY.match(body, at + len(_KEY))
        if match is not None:
            start = match.end(1)
            if match.group(2) != b"[":
                end = body.find(b"]", start)
            else:  # nested: the span holds its brackets
                start -= 1
                end = min(_find(body, b'"', start), _find(body, b"}", start))
                while end > start and body[end - 1] in _TRAILING:
                    end -= 1
            if end - start >= min_bytes:
                found.append((start, end))
                at = end  # no key inside a span that is numbers (else the plain parse)
        at = body.find(_KEY, at + len(_KEY))
    return found


def _find(body: bytes, what: bytes, start: int) -> int:
    at = body.find(what, start)
    return len(body) if at < 0 else at


def marked(
    body: bytes, spans: list[tuple[int, int]], max_depth: int, *, literals: bool = False
) -> tuple[Any, list[str]]:
    """``body`` parsed (``jsonio.loads``, with TF Serving's ``literals`` if asked) with a
    marker string in place of each span, and the markers. A marker holds a random word
    drawn when the process starts: a client cannot send one, say as a duplicate key that
    would stand in for an array orjson dropped (the caller checks where each one is,
    too)."""
    markers = [f"\0keepwarm array {_SALT} {i}" for i in range(len(spans))]
    parts, last = [], 0
    for (start, end), marker in zip(spans, markers, strict=True):
        parts += [body[last:start], orjson.dumps(marker)]
        last = end
    parts.append(body[last:])
    return jsonio.loads(b"".join(parts), max_depth=max_depth, literals=literals), markers


def _loads(
    body: bytes, spans: list[tuple[int, int]], max_depth: int, within: str, piece_bytes: int
) -> Any:
    from keepwarm.protocol import tfpieces  # imports this module

    skeleton, markers = marked(body, spans, max_depth, literals=True)
    nested = {m for (start, _), m in zip(spans, markers, strict=True) if body[start] == 0x5B}
    places: dict[str, dict[str, Any]] = {}
    listed = skeleton.get(within) if isinstance(skeleton, dict) else None
    for holder in listed if isinstance(listed, list) else ():
        if isinstance(holder, dict):
            value = holder.get("data")
            if isinstance(value, str) and value in nested:  # in place of the whole array
                marker = value
            elif isinstance(value, list) and len(value) == 1 and value[0] in markers:
                marker = value[0]  # in place of a flat array's interior
                if marker in nested:
                    return None
            else:
                continue
            if marker in places:
                return None
            places[marker] = holder
    if len(places) != len(markers):
        return None
    for (start, end), marker in zip(spans, markers, strict=True):
        if marker in nested:
            array = tfpieces.numbers_array(body, start, end, piece_bytes, literals=True)
            # the top object, the list, the input: the array's axes below the third level
            if array is not None and 3 + array.ndim > max_depth:
                return None
        else:
            try:
                array = _numbers(body, start, end, piece_bytes)
            except ValueError:  # simdjson refused a piece: a literal, or anything else
                array = None
            if array is None and jsonnonfinite.has_literal(body[start:end]):
                array = tfpieces.numbers_array(body, start - 1, end + 1, piece_bytes, literals=True)
        if array is None:
            return None
        places[marker]["data"] = array
    return skeleton


def _numbers(body: bytes, start: int, end: int, size: int) -> np.ndarray | None:
    """The flat list of numbers in ``body[start:end]``, parsed piece by piece in a copy
    whose cut commas become the pieces' brackets; None if it is anything else. simdjson
    copies each piece's numbers into a buffer, with no Python object per number."""
    if end - start <= size:  # one piece, parsed at once: no copy to cut, no turn to wait
        document = jsonfast.parser_for(end - start).parse(body[start - 1 : end + 1])
        array = jsonfast.flat_numbers(document) if isinstance(document, simdjson.Array) else None
        del document
        return array
    with DECODERS:
        return _pieces(body, start, end, size)


def _pieces(body: bytes, start: int, end: int, size: int) -> np.ndarray | None:
    """The numbers of ``body[start:end]`` (a flat array's interior), piece by piece: each
    piece is copied into one small buffer between brackets of its own, and parsed from
    there. A copy of the whole array to cut it in place cost more than the parsing it
    served whenever the copy's 1.6 MB was memory touched afresh (a MobileNetV2 image:
    4.2 ms against 2.8 ms per body, with the same pieces)."""
    view = memoryview(body)
    scratch = bytearray(size + SCRATCH_SLACK)
    arrays = []
    opening = start - 1  # the "[" (or the comma cut) before the current piece
    while opening < end:
        cut = body.find(b",", opening + size, end) if opening + size < end else -1
        closing = end if cut < 0 else cut
        length = closing - opening + 1  # the piece with its brackets
        if length > len(scratch):  # a piece past the slack: a long token
            scratch = bytearray(length)
        scratch[0] = 0x5B  # "["
        scratch[1 : length - 1] = view[opening + 1 : closing]
        scratch[length - 1] = 0x5D  # "]"
        parser = jsonfast.parser_for(length)  # the piece's own when huge
        with memoryview(scratch) as piece:
            document = parser.parse(piece[:length])
        array = jsonfast.flat_numbers(document) if isinstance(document, simdjson.Array) else None
        del document  # the parser is reused for the next piece (flat_numbers copied out)
        if array is None:
            return None
        arrays.append(array)
        opening = closing
        if opening < end:
            time.sleep(0)  # let a thread waiting for the GIL (the event loop) have it
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

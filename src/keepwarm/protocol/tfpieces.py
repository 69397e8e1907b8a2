"""Large TF Serving ``:predict`` tensors decoded in pieces, so that the thread decoding
one gives the interpreter lock up every fraction of a millisecond (as ``jsonpieces``
does for v2's flat ``"data"`` arrays; its module docstring says why).

A TF Serving tensor is nested lists: ``{"instances": [[[[0.1, 0.2, 0.3], ...]]]}`` (a
224x224x3 image is 3 MB of JSON). Parsed whole, orjson builds a Python float per element
and ``np.asarray`` walks them: tens of milliseconds under the lock. Here each large array
that is the value of ``"instances"``, of ``"inputs"`` or of a name in an ``"inputs"``
object is cut at commas into pieces of about ``PIECE_BYTES``. Each piece gives two
strings: its numbers without brackets, parsed by simdjson into an array of its own
(``jsonfast.flat_numbers``), and its brackets and commas without numbers (the
skeleton). The pieces' skeleton must be exactly that of a rectangular array (every
array at one depth holding as many elements), whose shape it gives; the numbers are
then reshaped to it. Between pieces
``time.sleep(0)`` lets a waiting thread (the event loop) take the lock. The rest of the
document, with a marker string in place of each array, is parsed whole
(``jsonio.loads``, depth limit included).

Anything unexpected (a marker not where an input is, a skeleton of any other shape,
empty arrays, anything but numbers, nesting past the depth limit, invalid JSON) and the
whole body is parsed the plain way (``jsonio.loads``), so results and errors are
exactly the plain path's. An array is int64 or float64, as ``np.asarray`` makes of the
nested lists.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np
import simdjson

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonio, jsonnonfinite, jsonpieces

#: Arrays shorter than this (in bytes of JSON) are parsed with the rest of the body.
MIN_ARRAY_BYTES = 64 * 1024
#: About 0.1-0.2 ms of work per piece.
PIECE_BYTES = 64 * 1024
#: Any key whose value is an array (the places are checked after the skeleton's parse).
_KEYED_ARRAY = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:\s*\[')
#: What a number is made of (TF Serving's NaN, Infinity and -Infinity too), and JSON's
#: whitespace: deleted to leave the skeleton (the numbers' parse refuses other letters).
_NUMBERS = b"0123456789+-.eE \t\n\rNaInfity"
_BRACKETS = b"[]"


def loads(body: bytes, *, max_depth: int) -> Any:
    """``body`` parsed as ``jsonio.loads`` parses it, except that a large array of
    numbers in a TF Serving tensor's place (see the module docstring) is a numpy array
    (the sizes: ``MIN_ARRAY_BYTES`` and ``PIECE_BYTES``, read at each call)."""
    if isinstance(body, bytes) and len(body) >= MIN_ARRAY_BYTES:
        spans = _spans(body, MIN_ARRAY_BYTES)
        if spans:
            try:
                found = _loads(body, spans, max_depth, PIECE_BYTES)
            # orjson's errors are ValueErrors; simdjson's for integers past 64 bits and a
            # parser still in use are RuntimeErrors
            except (ValueError, TypeError, RuntimeError, InvalidInputError):
                found = None
            if found is not None:
                return found
    return jsonio.loads(body, max_depth=max_depth, literals=True)


def _spans(body: bytes, min_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of each candidate array: from its ``[`` to just after its end, which
    is where the next string or object ends (an array of numbers holds neither)."""
    found = []
    last = 0
    for match in _KEYED_ARRAY.finditer(body):
        start = match.end() - 1
        if start < last:
            continue
        stop = min(_find(body, b'"', start), _find(body, b"}", start))
        end = len(body[start:stop].rstrip(b" \t\n\r,"))
        if end >= min_bytes:
            found.append((start, start + end))
            last = start + end
    return found


def _find(body: bytes, what: bytes, start: int) -> int:
    at = body.find(what, start)
    return len(body) if at < 0 else at


def _loads(body: bytes, spans: list[tuple[int, int]], max_depth: int, piece_bytes: int) -> Any:
    skeleton, markers = jsonpieces.marked(body, spans, max_depth, literals=True)
    places = _places(skeleton, markers)
    if places is None:
        return None
    for (start, end), marker in zip(spans, markers, strict=True):
        holder, key, depth = places[marker]
        array = numbers_array(body, start, end, piece_bytes, literals=True)
        if array is None or depth + array.ndim > max_depth:
            return None  # the plain parse says what is wrong
        holder[key] = array
    return skeleton


def _places(skeleton: Any, markers: list[str]) -> dict[str, tuple[Any, str, int]] | None:
    """Per marker, the object holding it, its key and that object's depth: each marker
    once, as the value of ``"instances"`` or ``"inputs"`` or of a key in an ``"inputs"``
    object (None: anywhere else, or not found)."""
    if not isinstance(skeleton, dict):
        return None
    candidates: list[tuple[Any, str, int]] = [(skeleton, key, 1) for key in ("instances", "inputs")]
    inputs = skeleton.get("inputs")
    if isinstance(inputs, dict):
        candidates += [(inputs, key, 2) for key in inputs]
    places: dict[str, tuple[Any, str, int]] = {}
    for holder, key, depth in candidates:
        value = holder.get(key)
        if isinstance(value, str) and value in markers:
            if value in places:
                return None
            places[value] = (holder, key, depth)
    return places if len(places) == len(markers) else None


def numbers_array(
    body: bytes, start: int, end: int, size: int, *, literals: bool = False
) -> np.ndarray | None:
    """The rectangular array of numbers ``body[start:end]`` (``[`` to ``]``) holds, parsed
    piece by piece; None if it holds anything else. One piece is parsed at once, without
    waiting for a turn (a small body is decoded on the event loop, which must not wait).
    The array's text is read where it is: a copy of it whole (3 MB for an image) cost
    more than a millisecond whenever it touched fresh memory. ``literals``: TF Serving's
    ``NaN``, ``Infinity`` and ``-Infinity`` are read, in a piece that simdjson refused
    (``jsonnonfinite.numbers``)."""
    if end - start <= size:
        return _pieces(body, start, end, size, literals)
    with jsonpieces.DECODERS:  # one large array per core at once
        return _pieces(body, start, end, size, literals)


def _pieces(body: bytes, start: int, end: int, size: int, literals: bool) -> np.ndarray | None:
    numbers, skeleton = [], []
    opening = start
    while opening < end:
        cut = body.find(b",", opening + size, end) if opening + size < end else -1
        closing = end if cut < 0 else cut
        piece = body[opening:closing]
        skeleton.append(piece.translate(None, _NUMBERS))
        array = _numbers(piece.translate(None, _BRACKETS), literals)
        if array is None:
            return None
        numbers.append(array)
        opening = closing + 1
        if opening < end:
            time.sleep(0)  # let a thread waiting for the GIL (the event loop) have it
    shape = _shape(b",".join(skeleton))
    flat = np.concatenate(numbers)
    if shape is None or flat.size != math.prod(shape):
        return None
    return flat.reshape(shape)


def _numbers(text: bytes, literals: bool) -> np.ndarray | None:
    """The numbers of ``text`` (an array's interior), as ``jsonfast.flat_numbers`` reads
    them; with ``literals``, one that simdjson refused as ``jsonnonfinite.numbers``."""
    try:
        document = jsonfast.parser_for(len(text)).parse(b"[" + text + b"]")
    except ValueError:  # invalid (a literal, say); RuntimeErrors are the caller's
        return jsonnonfinite.numbers(text) if literals else None
    array = jsonfast.flat_numbers(document) if isinstance(document, simdjson.Array) else None
    del document  # the parser is reused for the next piece (flat_numbers copied out)
    return array


def _shape(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape of a rectangular array whose brackets and commas are ``skeleton``, with
    no empty array (None for any other skeleton)."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    end = skeleton.find(b"]")
    if depth == 0 or end < depth:
        return None
    count = end - depth + 1  # the innermost array's elements: one more than its commas
    expected = b"[" + b"," * (count - 1) + b"]"
    shape = [count]
    for level in range(depth - 1, 0, -1):  # the arrays holding the ones just measured
        closes = depth - level + 1  # the first of them ends where that many "]" meet
        end = skeleton.find(b"]" * closes)
        if end < 0:
            return None
        length = end + closes - (level - 1)
        count = (length - 1) // (len(expected) + 1)
        if count < 1:
            return None
        expected = b"[" + b",".join([expected] * count) + b"]"
        shape.insert(0, count)
    return tuple(shape) if skeleton == expected else None

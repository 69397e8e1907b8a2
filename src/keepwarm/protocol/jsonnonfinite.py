"""TF Serving's JSON: the literals ``NaN``, ``Infinity`` and ``-Infinity`` as float values.

TF Serving's REST API reads and writes these three tokens where a float goes (its
documentation's "JSON conformance" section; JavaScript and Python's ``json`` module know
them, standard JSON does not); Triton's KServe v2 API does the same (its rapidjson writer
and parser set the NaN-and-Inf flags), and so does keepwarm's (``v2``, ``jsonpieces``).
orjson and simdjson keep to standard JSON, so these are read only where a standard parser
has refused a body:

- ``loads``: a whole body. The literals (outside strings) are first replaced by a stand-in
  of the same length (``" 0"`` and spaces), which orjson parses: its errors, and the depth
  of the result, are exactly those of the body with the literals read as numbers. Only
  then is the body parsed by Python's ``json`` module (which knows the literals), with
  orjson's handling of integers past 64 bits (a float); a number past a double's range
  was refused by orjson in the stand-in.
- ``numbers``: one comma-separated run of numbers (a piece of a large tensor, ``tfpieces``)
  that simdjson refused, read when it holds nothing but numbers and the literals.

Nothing here runs for a body the standard parsers read, so ordinary requests pay nothing.
A body with a literal costs more, the price of a rare request (timeit, best of 5, under
the bench lock, load 0.9): an MLP body (784 numbers, 16 KB) with one NaN decodes in
380 us against 22 us without (the stand-in 26 us, orjson 20 us, Python's ``json`` about
230 us, ``np.asarray`` of its lists 30 us); a MobileNetV2 image (3 MB) with one NaN in
17.0 ms against 14.8 ms, the piece holding it read by ``numbers`` (1.6 ms for 77 KB).
``-NaN``, ``Inf`` and other spellings are refused, as Python's ``json`` refuses them:
only the three documented tokens are read.

``float_output`` writes a float array holding non-finite values with the literals, where
orjson would write ``null`` (for TF Serving's answers and, through ``v2response._literal_data``,
the KServe v2 API's).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

from keepwarm.errors import InvalidInputError

#: A JSON string (skipped whole), or one of the literals (group 1).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')
#: Each literal's stand-in: a number, and spaces to the literal's length.
_STAND_INS = {lit: b" 0" + b" " * (len(lit) - 2) for lit in (b"-Infinity", b"Infinity", b"NaN")}
#: What a run of numbers holding the literals may be made of: digits, signs, points,
#: exponents, JSON's whitespace, commas and the literals' letters (which spell no
#: ``true``, ``false`` or ``null``: anything else is refused before ``json`` reads it).
_NUMBERS_AND_LITERALS = b"0123456789+-.eE \t\n\r,NaInfity"
_INT64_MIN, _UINT64_END = -(2**63), 2**64
#: Nineteen digits in a row: an integer that may be past 64 bits (-2**63 - 1 has 19).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def has_literal(body: bytes | bytearray | memoryview | str) -> bool:
    """Whether ``body`` may hold a literal (a quick look, strings not told apart)."""
    if isinstance(body, str):
        return "NaN" in body or "Infinity" in body
    data = body if isinstance(body, bytes | bytearray) else bytes(body)
    return data.find(b"NaN") >= 0 or data.find(b"Infinity") >= 0


def stand_in(body: bytes) -> bytes | None:
    """``body`` with each literal outside strings replaced by ``" 0"`` and spaces (the
    same length: orjson's error positions stay right; the spaces keep a literal from
    merging with a neighbour, ``1NaN`` or ``-NaN``, into a number); None if it has none.

    Without a backslash in the body, strings are what lies between the odd and even
    quotes, and the rest is replaced with ``bytes.replace``: 16 us for an MLP body
    (784 numbers, 16 KB) against 370 us for a regular expression that skips strings,
    used only when an escape (``\\"``) could hide a quote."""
    if b"\\" in body:
        found = False

        def replace(match: re.Match[bytes]) -> bytes:
            nonlocal found
            literal = match.group(1)
            if literal is None:
                return match.group(0)
            found = True
            return _STAND_INS[literal]

        replaced = _TOKEN.sub(replace, body)
        return replaced if found else None
    parts = body.split(b'"')
    for index in range(0, len(parts), 2):  # outside strings
        part = parts[index]
        for literal, stand in _STAND_INS.items():  # -Infinity before Infinity
            part = part.replace(literal, stand)
        parts[index] = part
    replaced = b'"'.join(parts)
    return None if replaced == body else replaced


def loads(
    body: bytes | bytearray | memoryview | str, refused: orjson.JSONDecodeError, max_depth: int
) -> Any:
    """``body``, which orjson ``refused``, read with the literals as floats (as
    ``jsonio.loads`` reads what orjson accepts: its errors and depth limit)."""
    from keepwarm.protocol import jsonio  # imports this module

    data = body.encode() if isinstance(body, str) else bytes(body)
    replaced = stand_in(data)
    if replaced is None:  # the literals' letters were in strings only
        raise jsonio.malformed(refused, max_depth)
    try:
        shape = orjson.loads(replaced)
    except orjson.JSONDecodeError as exc:
        raise jsonio.malformed(exc, max_depth) from None
    if jsonio.nesting(shape, max_depth) > max_depth:  # before ``json`` recurses so deep
        raise jsonio.too_deep(max_depth)
    # orjson refused any number past a double's range in the stand-in; integers past 64
    # bits are read as floats, as orjson reads them (a hook only when there may be one:
    # a Python call per integer)
    hook = _integer if _LONG_DIGITS.search(data) else None
    try:
        return json.loads(data.decode(), parse_int=hook)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"malformed JSON: {exc}") from None


def _integer(text: str) -> int | float:
    value = int(text)
    return value if _INT64_MIN <= value < _UINT64_END else float(text)


def numbers(text: bytes) -> np.ndarray | None:
    """The float64 array of a comma-separated run of numbers holding literals (the
    interior of an array, without brackets); None if it holds anything else or is not
    valid JSON."""
    if text.translate(None, _NUMBERS_AND_LITERALS) or not has_literal(text):
        return None
    try:
        array = np.array(json.loads(b"[" + text + b"]"), dtype=np.float64)
    except (ValueError, RecursionError, OverflowError):  # OverflowError: an int past 1e308
        return None
    # as many non-finite values as literals: no number past a double's range (1e999),
    # which orjson (and TF Serving's parser) refuses and Python's json reads as inf
    literals = text.count(b"NaN") + text.count(b"Infinity")
    return array if np.count_nonzero(~np.isfinite(array)) == literals else None


def float_output(array: np.ndarray, *, rows: bool = False) -> Any:
    """A float output (native order) for orjson to write in a TF Serving response: as
    it is when finite, else with the literals (``literal_fragment``); with ``rows``,
    something indexed by the first axis (one item per instance).

    Asked only for a response that orjson wrote with a ``null`` (``tfserving.
    encode_predict``). The check, ``np.isfinite(array).all()``, costs 1.4 us for the
    MLP's 1x10 output, 4.2 us for MobileNetV2's batch-32 output (32x1000), against 741 us
    for orjson to write the latter (timeit, best of 5, under the bench lock, load 1.0);
    ``math.isfinite(array.sum())`` cost 1.1 and 6.5 us, a ``np.dot`` of it with itself
    1.0 and 3.0 us."""
    if np.isfinite(array).all():
        return array
    array = np.ascontiguousarray(array)
    if not rows:
        return literal_fragment(array)
    return [literal_fragment(np.asarray(row)) for row in array]


def literal_fragment(array: np.ndarray) -> orjson.Fragment:
    """``array`` (C-contiguous floats, native order) as orjson writes it, with each
    non-finite value written as ``NaN``, ``Infinity`` or ``-Infinity`` instead of
    ``null`` (in C order: orjson writes a numeric array's values so). A 0-d array is
    written as its value (orjson writes no 0-d array: it is written with one axis, and
    its brackets taken off)."""
    whole = orjson.dumps(array.reshape(-1) if array.ndim == 0 else array, option=_NUMPY)
    written = whole[1:-1] if array.ndim == 0 else whole
    parts = written.split(b"null")
    odd = array[~np.isfinite(array)]
    if len(parts) != odd.size + 1:  # pragma: no cover - orjson writes numbers or null
        raise AssertionError("orjson wrote a float array unexpectedly")
    literals = [b"NaN" if v != v else b"Infinity" if v > 0 else b"-Infinity" for v in odd]
    pieces = [parts[0]]
    for literal, part in zip(literals, parts[1:], strict=True):
        pieces += [literal, part]
    return orjson.Fragment(b"".join(pieces))

"""JSON with large numeric tensors, parsed without a Python object per number.

orjson builds a Python float for every element of a tensor and numpy then copies them
into an array: for a 224x224x3 image (1.6 MB of JSON) that is most of a request's cost
under the interpreter lock. simdjson parses the document once and copies a flat array of
numbers straight into a buffer, two to three times faster. ``loads`` returns what
``orjson.loads`` would, except that a flat array of numbers that is the value of a
``"data"`` key (a v2 tensor's contents) comes back as a numpy array (int64 when all
are integers, float64 otherwise), which is what ``np.asarray`` would make of the list.

Anything this path is unsure of (a small body, a parse error, duplicate keys, nesting
past the limit, numbers past 2**63, whose type numpy infers from their company) returns
``None``, and the caller parses with orjson, whose behaviour and error messages stay the
reference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import simdjson

from keepwarm.errors import InvalidInputError

T = TypeVar("T")

MIN_BYTES = 2048  # below this orjson is as fast and the walk is not worth it
_BUFFER_TYPES = (("i", np.int64), ("d", np.float64))
# An array that starts with a float is no int64 buffer: it is asked for doubles first (a
# refused buffer costs a C++ exception, several µs, on every float tensor).
_FLOAT_FIRST = (("d", np.float64),)
_BEYOND_INTEGERS = 2.0**63
_local = threading.local()
#: Documents (or pieces) past this are parsed by a parser of their own, not the thread's:
#: simdjson keeps the capacity of the largest document it parsed, several times its size,
#: and a thread that once read a 64 MB body must not hold that for good.
KEEP_PARSER_BYTES = 256 * 1024


def parser_for(size: int) -> simdjson.Parser:
    """A parser for a document of ``size`` bytes: this thread's own (one is not safe to
    share between threads, and the proxies of a document die when its parser parses
    again: callers copy out first), or a fresh one for a document past
    ``KEEP_PARSER_BYTES``, let go with the document so that no thread keeps its size."""
    if size > KEEP_PARSER_BYTES:
        return simdjson.Parser()
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def forget_parser(parser: simdjson.Parser) -> None:
    """After a ``RuntimeError`` from ``parser``: this thread takes a fresh parser next time
    (the error may mean a proxy of an earlier document still holds this one)."""
    if parser is getattr(_local, "parser", None):
        _local.parser = None


def read_document(body: bytes, read: Callable[[Any], T | None]) -> T | None:
    """``read(document)`` for ``body`` parsed by this thread's parser; None when simdjson
    refuses the body (invalid, numbers past 64 bits) or ``read`` raises a ``TypeError``,
    ``ValueError``, ``KeyError`` or ``InvalidInputError`` (it met what it did not expect).
    ``read`` must keep no proxy of the document: the parser parses again."""
    parser = parser_for(len(body))
    try:
        document = parser.parse(body)
    except RuntimeError:  # numbers past 64 bits; or a live proxy of an earlier document
        forget_parser(parser)
        return None
    except (ValueError, UnicodeDecodeError):
        return None
    try:
        return read(document)
    except (InvalidInputError, KeyError, TypeError, ValueError):
        return None
    finally:
        del document


class _Unsure(Exception):
    """Leave this document to orjson."""


def loads(body: bytes | bytearray | memoryview, max_depth: int) -> Any | None:
    """The document, with flat numeric arrays as numpy arrays; ``None``: use orjson."""
    if len(body) < MIN_BYTES:
        return None
    parser = parser_for(len(body))
    try:
        document = parser.parse(body)
    except RuntimeError:  # integers past 64 bits; or a proxy of an earlier document
        forget_parser(parser)  # is still alive: a fresh parser
        return None
    except (ValueError, UnicodeDecodeError):
        return None
    try:
        walk = _Walk(max_depth)
        value = walk.convert(document, 1)
    except _Unsure:
        return None
    finally:
        del document
    # simdjson flattens nested arrays into a buffer ([0, [1], 2] -> 0, 1, 2): every array
    # is one "[" in the body (none is in a string: the walk saw to that), so any array the
    # walk did not count was hidden inside a buffer, and orjson must read the document.
    return value if bytes(body).count(b"[") == walk.arrays else None


class _Walk:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.arrays = 0

    def convert(self, node: Any, depth: int, tensor: bool = False) -> Any:
        if depth > self.limit:
            raise _Unsure
        if isinstance(node, simdjson.Object):
            keys = list(node.keys())
            if len(set(keys)) != len(keys) or any(_odd(key) for key in keys):
                # orjson keeps the last of duplicate keys, simdjson the first; simdjson
                # looks a key up as a C string, which ends at its first NUL
                raise _Unsure
            return {key: self.convert(node[key], depth + 1, key == "data") for key in keys}
        if isinstance(node, simdjson.Array):
            self.arrays += 1
            numbers = _numbers(node) if tensor else None
            if numbers is not None:
                return numbers
            return [self.convert(item, depth + 1) for item in node]
        if isinstance(node, str) and "[" in node:
            raise _Unsure
        return node


def _odd(key: str) -> bool:
    return "\x00" in key or "[" in key


def flat_numbers(node: Any) -> np.ndarray | None:
    """A simdjson array of numbers as ``np.asarray`` would make it of the list (int64 or
    float64); None when it is anything else (nested, empty, past 2**63, not numbers)."""
    try:
        return _numbers(node)
    except _Unsure:
        return None


def _numbers(node: Any) -> np.ndarray | None:
    """``node`` as a numpy array when it is a non-empty array of numbers (or of arrays,
    which the caller detects)."""
    count = len(node)
    if count == 0:
        return None
    return _buffer(node, node[0], count)


def rows_numbers(node: Any) -> np.ndarray | None:
    """A simdjson array of numbers, or of non-empty rows of numbers all of one length, as
    ``np.asarray`` would make of the list (1 or 2 axes; int64 or float64); None when it is
    anything else. Rows nested deeper are flattened by simdjson unseen: the caller counts
    the body's arrays (1 + the rows)."""
    count = len(node)
    if count == 0:
        return None
    first = node[0]
    if not isinstance(first, simdjson.Array):
        return flat_numbers(node)
    width = len(first)
    if width == 0:
        return None
    for index in range(1, count):
        row = node[index]
        if not isinstance(row, simdjson.Array) or len(row) != width:
            return None
    try:
        array = _buffer(node, first[0], count * width)
    except _Unsure:
        return None
    return None if array is None else array.reshape(count, width)


def _buffer(node: Any, first: Any, count: int) -> np.ndarray | None:
    """The ``count`` numbers of ``node`` (flattened), whose first is ``first``."""
    if isinstance(first, bool) or not isinstance(first, int | float):
        return None
    first_int = not isinstance(first, float)
    for code, dtype in _BUFFER_TYPES if first_int else _FLOAT_FIRST:
        try:
            buffer = node.as_buffer(of_type=code)
        except (TypeError, ValueError):
            continue
        array = np.frombuffer(buffer, dtype=dtype)
        if array.size != count:
            return None
        # An array that starts with an integer read as doubles may hold integers past 64
        # bits beside negative ones, which are no floats; one that starts with a float
        # is floats for numpy whatever follows (and simdjson refuses integers past 2**64).
        if code == "d" and first_int and np.abs(array).max() >= _BEYOND_INTEGERS:
            raise _Unsure
        return array
    return None


def count_brackets(body: bytes, most: int) -> int:
    """The number of "[" in ``body``, counted up to ``most`` (``find`` is a memchr, far
    quicker than ``bytes.count`` over a body of numbers). simdjson flattens nested arrays
    into one buffer ([0, [1], 2] reads as 0, 1, 2): a caller that saw each array it read
    compares their number with this one."""
    count, at = 0, body.find(b"[")
    while at >= 0 and count < most:
        count += 1
        at = body.find(b"[", at + 1)
    return count

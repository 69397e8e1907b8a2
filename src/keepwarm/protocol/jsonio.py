"""JSON in and out with orjson, with the limits a server needs: a nesting-depth limit and
errors that name what was wrong. Numpy arrays are built from JSON values by
``keepwarm.protocol.jsonarrays`` (re-exported here)."""

from __future__ import annotations

from typing import Any

import orjson

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonnonfinite
from keepwarm.protocol.jsonarrays import (
    MAX_DIMS,
    array_from_json,
    cast,
    checked_shape,
    json_kind,
    text_array,
)

__all__ = [
    "MAX_DIMS",
    "array_from_json",
    "cast",
    "checked_shape",
    "dumps",
    "json_kind",
    "loads",
    "malformed",
    "nesting",
    "text_array",
    "too_deep",
]

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
#: A body this short has its brackets counted (fast) before its depth is walked (slow).
_COUNTED_BYTES = 4096


def loads(
    body: bytes | bytearray | memoryview | str,
    *,
    max_depth: int,
    arrays: bool = False,
    literals: bool = False,
) -> Any:
    """Parse ``body``; nesting deeper than ``max_depth`` (objects and arrays) is refused.

    ``arrays``: flat arrays of numbers in a large body may come back as numpy arrays,
    parsed with no Python object per element (``keepwarm.protocol.jsonfast``).
    ``literals``: TF Serving's ``NaN``, ``Infinity`` and ``-Infinity`` are read as floats
    (``jsonnonfinite``), only once orjson has refused the body.

    orjson itself refuses depths over 1024 without recursing further; below that, the
    depth is measured along the first element of each array (a tensor's spine) and every
    object value, which bounds tensors and parameters alike without visiting each element
    of a large tensor (ragged nesting elsewhere is refused when the array is built).
    """
    if arrays and not isinstance(body, str):
        fast = jsonfast.loads(body, max_depth)
        if fast is not None:
            return fast
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if literals and jsonnonfinite.has_literal(body):
            return jsonnonfinite.loads(body, exc, max_depth)
        raise malformed(exc, max_depth) from None
    if _shallow(body, max_depth):
        return value
    if nesting(value, max_depth) > max_depth:
        raise too_deep(max_depth)
    return value


def malformed(exc: orjson.JSONDecodeError, max_depth: int) -> InvalidInputError:
    """orjson's refusal of a body, said as the API says it."""
    if "depth limit" in str(exc):
        return too_deep(max_depth)
    return InvalidInputError(f"malformed JSON: {exc}")


def too_deep(max_depth: int) -> InvalidInputError:
    return InvalidInputError(f"malformed JSON: nested deeper than {max_depth} levels (the limit)")


def _shallow(body: bytes | bytearray | memoryview | str, limit: int) -> bool:
    """A short body with no more opening brackets than ``limit`` (counting those in
    strings too) is no deeper than that: two counts instead of a walk of the value."""
    if not isinstance(body, bytes) or len(body) > _COUNTED_BYTES:
        return False
    return body.count(b"[") + body.count(b"{") <= limit


def nesting(value: Any, limit: int) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            if item:
                stack.append((item[0], depth + 1))
    return deepest


def dumps(value: Any) -> bytes:
    """Encode ``value``; numpy arrays of numbers and bools are serialised natively."""
    return orjson.dumps(value, option=_DUMPS_OPTIONS)

"""The plain small v2 JSON request, decoded in one parse: what most single requests are.

``decode_request`` reads a JSON body in several passes: the ``"data"`` arrays are cut
out and parsed by simdjson, the rest by orjson, then each input is checked, built and
cast on its own. For a body that is only ``{"inputs": [{"name", "datatype", "shape",
"data"}, ...]}`` (and an ``"id"``), with flat arrays of numbers of a numeric datatype,
one simdjson parse gives everything: the keys, the shapes and each array's numbers as
one buffer (no Python object per number), cast once to the datatype.

Anything else returns None and the caller decodes the usual way, so that results and
errors stay exactly that path's: another key, a key twice or holding a NUL (simdjson
keeps the first of duplicate keys and reads keys as C strings; orjson keeps the last),
a nested or empty ``data``, numbers past 64 bits, booleans or strings, a shape that does
not match, a value out of its datatype's range, invalid JSON, a depth limit under 4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from keepwarm.protocol import jsonfast, jsonio
from keepwarm.protocol.dtypes import V2_TO_NUMPY
from keepwarm.protocol.v2 import InferRequest

#: The datatypes decoded here: numbers (BOOL and BYTES take the usual way).
_NUMERIC = {name: dtype for name, dtype in V2_TO_NUMPY.items() if dtype.kind in "iuf"}
_DEPTH = 4  # the body's object, "inputs", an input, its "shape" or "data"


def decode(body: bytes, max_depth: int) -> InferRequest | None:
    """``body``'s request as ``v2.decode_request`` would decode it, or None: decode it
    that way (see the module docstring)."""
    if max_depth < _DEPTH or not isinstance(body, bytes) or b"\\" in body:
        return None  # an escape: maybe a NUL in a key, which simdjson's look-ups end at
    found = jsonfast.read_document(body, _request)
    if found is None:
        return None
    request, arrays = found
    # Each array is one "[" in the body: one the walk did not see hid in a buffer (or a
    # string holds a "["): either way, the usual path reads the body.
    return request if jsonfast.count_brackets(body, arrays + 1) == arrays else None


def _request(document: Any) -> tuple[InferRequest, int] | None:
    # pysimdjson's keys() and iteration cost microseconds each: keys are looked up, and
    # counted (``len`` counts duplicates too) to see that there are no others. A key is
    # looked up only where it should be (a missing one costs a C++ exception inside
    # pysimdjson, 7-15 us): "id" only beside one other key.
    if not isinstance(document, simdjson.Object):
        return None
    count = len(document)
    request_id: str | None = None
    if count == 2:
        given = document.get("id")
        if not isinstance(given, str):
            return None
        request_id = given
    elif count != 1:
        return None
    listed = document.get("inputs")
    if not isinstance(listed, simdjson.Array) or len(listed) == 0:
        return None
    inputs: dict[str, np.ndarray] = {}
    for index in range(len(listed)):
        found = _input(listed[index])
        if found is None or found[0] in inputs:
            return None
        inputs[found[0]] = found[1]
    # arrays seen: "inputs", and each input's shape and data
    return InferRequest(inputs=inputs, id=request_id), 1 + 2 * len(inputs)


def _input(raw: Any) -> tuple[str, np.ndarray] | None:
    if not isinstance(raw, simdjson.Object) or len(raw) != 4:  # the four keys, once each
        return None
    name, datatype = raw.get("name"), raw.get("datatype")
    shape_node, data = raw.get("shape"), raw.get("data")
    dtype = _NUMERIC.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or not isinstance(name, str) or not isinstance(shape_node, simdjson.Array):
        return None
    shape, count = jsonio.checked_shape(shape_node.as_list(), tensor=name)  # else: usual path
    numbers = jsonfast.flat_numbers(data) if isinstance(data, simdjson.Array) else None
    if numbers is None or numbers.size != count:
        return None
    return name, jsonio.cast(numbers, dtype, tensor=name).reshape(shape)

"""The plain small TF Serving ``:predict`` body parsed in one simdjson parse.

A small body is parsed by orjson into Python numbers, which the worker thread then turns
into an array (``np.asarray``): for the MLP's 784 numbers about 13 µs of each. A body
that is only ``{"instances": T}`` or ``{"inputs": T}`` (and a ``"signature_name"``),
where ``T`` is an array of numbers or of rows of numbers all of one length, is read
here in one simdjson parse, ``T`` straight into an array (no Python object per number),
as ``tfpieces`` reads large tensors: the worker then only casts it to the signature.

Anything else returns None and the caller parses the usual way, so that results and
errors stay exactly that path's: another key, a key twice, an escape in the body (a key
with a NUL, which simdjson's look-ups end at), named inputs, ragged, empty or deeper
nesting, booleans, strings or ``{"b64": ...}``, numbers past 64 bits, invalid JSON, a
depth limit under the tensor's.
"""

from __future__ import annotations

from typing import Any

import simdjson

from keepwarm.protocol import jsonfast
from keepwarm.protocol.tfserving import PredictRequest


def parse(body: bytes, max_depth: int) -> PredictRequest | None:
    """``tfserving.parse_predict(body)``'s request, or None: parse it that way."""
    if not isinstance(body, bytes) or b"\\" in body:
        return None

    def read(document: Any) -> tuple[PredictRequest, int] | None:
        if not isinstance(document, simdjson.Object):
            return None
        # Every key listed, duplicates too: none but these, each once. Only keys that are
        # there are looked up (a missing one costs a C++ exception inside pysimdjson,
        # 7-15 us, more than the listing).
        keys = list(document.keys())
        name: str | None = None
        if len(keys) == 2 and "signature_name" in keys:
            given = document.get("signature_name")
            if not isinstance(given, str):
                return None
            name = given
            keys.remove("signature_name")
        if len(keys) != 1 or keys[0] not in ("instances", "inputs"):
            return None
        key = keys[0]
        node = document.get(key)
        if not isinstance(node, simdjson.Array):
            return None
        array = jsonfast.rows_numbers(node)
        if array is None or 1 + array.ndim > max_depth:
            return None
        found = PredictRequest({key: array}, key == "instances", name, (body, max_depth))
        return found, 1 if array.ndim == 1 else 1 + len(array)

    found = jsonfast.read_document(body, read)
    if found is None:
        return None
    request, arrays = found
    return request if jsonfast.count_brackets(body, arrays + 1) == arrays else None

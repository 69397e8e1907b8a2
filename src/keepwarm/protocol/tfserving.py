"""TensorFlow Serving REST bodies <-> numpy: the row (``instances``) and columnar
(``inputs``) formats, ``signature_name``, ``{"b64": ...}`` binary strings, and outputs in
the format the request used (``predictions`` or ``outputs``). A model's status and
metadata are ``keepwarm.protocol.tfmeta``'s (re-exported here)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, jsonnonfinite, tfpieces
from keepwarm.protocol.dtypes import OBJECT, TEXT_KINDS
from keepwarm.protocol.tfmeta import (
    STATES,
    check_signature,
    model_metadata,
    model_status,
    version_states,
)
from keepwarm.signature import Signature, TensorSpec

__all__ = [
    "STATES",
    "PredictRequest",
    "check_signature",
    "encode_predict",
    "model_metadata",
    "model_status",
    "parse_predict",
    "version_states",
]


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """A parsed ``:predict`` body; tensors are built against the signature by ``inputs``."""

    body: dict[str, Any]
    row_format: bool
    signature_name: str | None
    #: The body and depth limit, kept when some tensors were parsed in pieces (numpy
    #: arrays in ``body``): a signature taking strings reads the body the plain way.
    source: tuple[bytes, int] | None = None

    def inputs(self, signature: Signature) -> dict[str, np.ndarray]:
        """The request's tensors as arrays of the signature's dtypes."""
        if self.source is not None and any(s.dtype.kind in TEXT_KINDS for s in signature.inputs):
            body, depth = self.source
            value = jsonio.loads(body, max_depth=depth, literals=True)
            return _parse(body, depth, value).inputs(signature)
        specs = {spec.name: spec for spec in signature.inputs}
        if self.row_format:
            return _rows(self.body["instances"], signature, specs)
        return _columns(self.body["inputs"], signature, specs)


def parse_predict(body: bytes, *, max_depth: int = 64) -> PredictRequest:
    """The body, with large numeric tensors parsed in pieces (``tfpieces``): call it off
    the event loop for a large body."""
    return _parse(body, max_depth, tfpieces.loads(body, max_depth=max_depth))


def _parse(body: bytes, max_depth: int, value: Any) -> PredictRequest:
    if not isinstance(value, dict):
        raise InvalidInputError('the body must be a JSON object with "instances" or "inputs"')
    has_rows, has_columns = "instances" in value, "inputs" in value
    if has_rows == has_columns:
        raise InvalidInputError(
            'the body must have exactly one of "instances" (row format) or "inputs" '
            "(columnar format)"
        )
    name = value.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise InvalidInputError('"signature_name" must be a string')
    if has_rows and not isinstance(value["instances"], list | np.ndarray):
        raise InvalidInputError('"instances" must be a list (one item per example)')
    pieces = any(isinstance(v, np.ndarray) for v in _tensors(value))
    return PredictRequest(value, has_rows, name, (body, max_depth) if pieces else None)


def _tensors(value: dict[str, Any]) -> list[Any]:
    """The places ``tfpieces`` may have put arrays in."""
    found = [value.get("instances"), value.get("inputs")]
    inputs = value.get("inputs")
    return [*found, *inputs.values()] if isinstance(inputs, dict) else found


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _rows(
    instances: list[Any] | np.ndarray, signature: Signature, specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    if len(instances) == 0:
        raise InvalidInputError('"instances" is empty')
    first = instances[0]
    named = isinstance(first, dict) and not (_is_b64(first) and "b64" not in specs)
    if not named:
        only = _single(signature, "instances")
        return {only.name: _tensor(instances, only)}
    columns: dict[str, list[Any]] = {name: [] for name in first}
    for i, row in enumerate(instances):
        if not isinstance(row, dict) or row.keys() != columns.keys():
            kind = f"is {jsonio.json_kind(row)}, not an object of inputs"
            given = f"has inputs {sorted(row)}" if isinstance(row, dict) else kind
            raise InvalidInputError(
                f'"instances"[{i}] {given}; every instance must name the same inputs as the '
                f"first {sorted(columns)}"
            )
        for name, item in row.items():
            columns[name].append(item)
    return {
        name: _tensor(values, _spec(specs, name, signature)) for name, values in columns.items()
    }


def _columns(
    inputs: Any, signature: Signature, specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict) and not (_is_b64(inputs) and "b64" not in specs):
        return {
            name: _tensor(value, _spec(specs, name, signature)) for name, value in inputs.items()
        }
    only = _single(signature, "inputs")
    return {only.name: _tensor(inputs, only)}


def _single(signature: Signature, key: str) -> TensorSpec:
    if len(signature.inputs) != 1:
        names = ", ".join(spec.name for spec in signature.inputs)
        raise InvalidInputError(
            f'this signature takes {len(signature.inputs)} inputs ({names}): "{key}" must name them'
        )
    return signature.inputs[0]


def _spec(specs: Mapping[str, TensorSpec], name: str, signature: Signature) -> TensorSpec:
    spec = specs.get(name)
    if spec is None:
        raise InvalidInputError(
            f"unknown input {name!r}; expected {[s.describe() for s in signature.inputs]}"
        )
    return spec


def _tensor(value: Any, spec: TensorSpec) -> np.ndarray:
    if spec.dtype.kind in TEXT_KINDS:
        return _text(value, spec.name)
    return jsonio.array_from_json(value, spec.dtype, tensor=spec.name)


def _text(value: Any, name: str) -> np.ndarray:
    """Strings and ``{"b64": ...}`` objects, nested, as an object array of bytes."""
    flat: list[bytes] = []

    def walk(item: Any, depth: int) -> Any:
        if depth > jsonio.MAX_DIMS:
            raise InvalidInputError(f"input {name!r}: more than {jsonio.MAX_DIMS} dimensions")
        if isinstance(item, list):
            shapes = [walk(child, depth + 1) for child in item]
            if any(s != shapes[0] for s in shapes):
                raise InvalidInputError(f"input {name!r}: not a rectangular tensor")
            return (len(item), *(shapes[0] if shapes else ()))
        if _is_b64(item):
            try:
                flat.append(base64.b64decode(_padded(item["b64"]), validate=True))
            except (binascii.Error, TypeError, ValueError):
                raise InvalidInputError(f'input {name!r}: "b64" is not valid base64') from None
        elif isinstance(item, str):
            flat.append(item.encode())
        else:
            raise InvalidInputError(
                f'input {name!r}: expected strings or {{"b64": ...}}, got {type(item).__name__}'
            )
        return ()

    shape = walk(value, 0)
    array = np.empty(len(flat), dtype=OBJECT)
    array[:] = flat
    return array.reshape(shape)


def _padded(text: Any) -> Any:
    """Base64 ``text`` with its ``=`` padding, which TF Serving's decoder (abseil's
    ``Base64Unescape``) lets a client leave out; padding given must be right."""
    if isinstance(text, str) and "=" not in text:
        return text + "=" * (-len(text) % 4)
    return text


def encode_predict(request: PredictRequest, outputs: Mapping[str, np.ndarray]) -> bytes:
    """``{"predictions": ...}`` for the row format, ``{"outputs": ...}`` for columnar.

    orjson writes a NaN or an infinity as ``null``, which no float array holds else: a
    body with a ``null`` is written again, float outputs with TF Serving's literals
    (``jsonnonfinite.float_output``). The search of the body adds 0.4 us to an MLP
    answer (1.8 against 1.4 us, timeit), a check of each float output first
    (``np.isfinite(out).all()``) 1.6 us. ``bench/ab.py --api tfserving`` (MLP, 8 rounds,
    load 0.7-1.5) could not tell either from the previous commit: at c=32 its runs swung
    10% either way (the check 0.89x the req/s of the same tree without it; this search
    1.10x the previous commit's), at c=1 within 2% in req/s."""
    body = _encode(request, outputs, literals=False)
    if body.find(b"null") < 0 or all(a.dtype.kind != "f" for a in outputs.values()):
        return body
    return _encode(request, outputs, literals=True)


def _encode(request: PredictRequest, outputs: Mapping[str, np.ndarray], literals: bool) -> bytes:
    if not request.row_format:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return jsonio.dumps({"outputs": _json(array, name, literals=literals)})
        columns = {name: _json(a, name, literals=literals) for name, a in outputs.items()}
        return jsonio.dumps({"outputs": columns})
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return jsonio.dumps({"predictions": _json(array, name, literals=literals)})
    sizes = {name: (a.shape[0] if a.ndim else None) for name, a in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise InvalidInputError(
            f"the outputs have different batch sizes {sizes}, which the row format cannot "
            'express; use the columnar format ("inputs")'
        )
    count = next(iter(sizes.values()))
    assert count is not None
    columns = {name: _json(a, name, rows=True, literals=literals) for name, a in outputs.items()}
    rows = [{name: column[i] for name, column in columns.items()} for i in range(count)]
    return jsonio.dumps({"predictions": rows})


def _json(array: np.ndarray, name: str, *, rows: bool = False, literals: bool = False) -> Any:
    """``array`` as orjson writes it in the response; with ``rows``, something indexed by
    the first axis (one item per instance); ``literals``: floats as
    ``jsonnonfinite.float_output`` writes them."""
    if array.dtype.kind in TEXT_KINDS:
        encode_b64 = name.endswith("_bytes")

        def text(item: Any) -> Any:
            data = item if isinstance(item, bytes) else str(item).encode()
            if encode_b64:
                return {"b64": base64.b64encode(data).decode()}
            try:
                return data.decode()
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(data).decode()}

        return np.frompyfunc(text, 1, 1)(array).tolist() if array.ndim else text(array.item())
    if array.dtype == np.float16 or not array.dtype.isnative:
        out = array.astype(np.float32 if array.dtype.kind == "f" else array.dtype.newbyteorder("="))
    else:
        out = np.ascontiguousarray(array)
    if out.dtype.kind == "f":
        return jsonnonfinite.float_output(out, rows=rows) if literals else out
    # one row of a 1-D output is a numpy scalar, and orjson writes no ``longlong`` (ONNX
    # Runtime's int64 arrays): Python integers instead
    return out.tolist() if rows and out.ndim == 1 else out

"""KServe v2 / Open Inference Protocol REST bodies <-> numpy, with the binary tensor
extension (``Inference-Header-Content-Length``: a JSON header followed by raw tensors).
Requests are decoded here; responses are encoded by ``keepwarm.protocol.v2response``
(re-exported here)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, jsonpieces
from keepwarm.protocol.dtypes import OBJECT, numpy_dtype
from keepwarm.protocol.v2response import chosen_outputs, encode_response, to_binary

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "chosen_outputs",
    "decode_request",
    "decode_small",
    "encode_response",
    "from_binary",
    "request_timeout",
    "to_binary",
]

_LENGTH = struct.Struct("<I")  # a BYTES element's length, before its bytes


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's default


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded v2 inference request: typed arrays, and how to answer."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_outputs: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_request(
    body: bytes, *, header_length: int | None = None, max_depth: int = 64
) -> InferRequest:
    """Decode a v2 infer body; ``header_length`` is ``Inference-Header-Content-Length``.
    Tensors sent as binary are views of ``body`` (``np.frombuffer``, no copy)."""
    return _decoded(*_header(body, header_length, max_depth))


def decode_small(
    body: bytes, *, header_length: int | None = None, max_depth: int = 64, limit: int
) -> InferRequest | None:
    """``decode_request`` when cheap enough for the event loop, else None (decode on a
    thread): at most ``limit`` bytes of JSON and of binary BYTES tensors (split element by
    element); a binary numeric tensor is a view of ``body``, free whatever its size."""
    if (len(body) if header_length is None else header_length) > limit:
        return None
    request, binary = _header(body, header_length, max_depth)
    if _binary_bytes(request) > limit:
        return None
    return _decoded(request, binary)


def _header(body: bytes, length: int | None, max_depth: int) -> tuple[dict[str, Any], memoryview]:
    """The JSON part (an object) and the binary part of ``body``."""
    header: bytes | memoryview
    if length is None:
        header, binary = body, memoryview(b"")
    else:
        if length < 0 or length > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {length} is outside the body ({len(body)} bytes)"
            )
        view = memoryview(body)
        header, binary = view[:length], view[length:]
    request = jsonpieces.loads(header, max_depth=max_depth, within="inputs")
    if not isinstance(request, dict):
        raise InvalidInputError("the request body must be a JSON object with 'inputs'")
    return request, binary


def _binary_bytes(request: dict[str, Any]) -> int:  # ill-formed inputs: ``_decoded`` says
    """The largest ``binary_data_size`` of a BYTES input."""
    largest = 0
    raw_inputs = request.get("inputs")
    for raw in raw_inputs if isinstance(raw_inputs, list) else ():
        if isinstance(raw, dict) and raw.get("datatype") == "BYTES":
            params = raw.get("parameters")
            size = params.get("binary_data_size") if isinstance(params, dict) else None
            if type(size) is int:
                largest = max(largest, size)
    return largest


def _decoded(request: dict[str, Any], binary: memoryview) -> InferRequest:
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")
    parameters = _parameters(request.get("parameters"), "the request")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        name, array, used = _decode_input(raw, binary, offset)
        if name in inputs:
            raise InvalidInputError(f"input {name!r} is given twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidInputError(
            f"the binary section holds {len(binary)} bytes but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    binary_out = parameters.get("binary_data_output")
    if binary_out is not None and not isinstance(binary_out, bool):
        raise InvalidInputError(
            f"parameters.binary_data_output must be true or false, got {binary_out!r}"
        )
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=_requested_outputs(request.get("outputs")),
        binary_outputs=binary_out is True,
        parameters=parameters,
    )


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"'parameters' of {where} must be an object")
    return value


def _decode_input(raw: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise InvalidInputError("each input must be an object with a string 'name'")
    name: str = raw["name"]
    dtype = numpy_dtype(raw.get("datatype"), tensor=name)
    shape, count = jsonio.checked_shape(raw.get("shape"), tensor=name)
    params = _parameters(raw.get("parameters"), f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise InvalidInputError(f"input {name!r}: both 'data' and binary_data_size given")
        if type(size) is not int or size < 0:
            raise InvalidInputError(
                f"input {name!r}: binary_data_size must be an integer >= 0, got {size!r}"
            )
        if offset + size > len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size!r} does not fit the "
                f"{len(binary) - offset} bytes left in the body"
            )
        chunk = binary[offset : offset + size]
        return name, from_binary(chunk, dtype, count, shape, name), size
    if "data" not in raw:
        raise InvalidInputError(f"input {name!r}: no 'data' and no binary_data_size")
    array = jsonio.array_from_json(raw["data"], dtype, tensor=name)
    if array.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {count} elements, 'data' has {array.size}"
        )
    return name, array.reshape(shape), 0


def from_binary(
    chunk: memoryview, dtype: np.dtype[Any], count: int, shape: list[int], name: str
) -> np.ndarray:
    if dtype == OBJECT:
        items = _split_bytes(chunk, name)
        if len(items) != count:
            raise InvalidInputError(
                f"input {name!r}: shape {shape} needs {count} elements, got {len(items)} strings"
            )
        array = np.empty(count, dtype=OBJECT)
        array[:] = items
        return array.reshape(shape)
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} of {dtype.name} needs {count * dtype.itemsize} "
            f"bytes, binary_data_size is {len(chunk)}"
        )
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(shape)


def _split_bytes(chunk: memoryview, name: str) -> list[bytes]:
    items, pos, end = [], 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInputError(f"input {name!r}: truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(chunk, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInputError(f"input {name!r}: a BYTES element runs past its data")
        items.append(bytes(chunk[pos : pos + length]))
        pos += length
    return items


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInputError("'outputs' must be a list of objects with a 'name'")
    wanted: list[RequestedOutput] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError("'outputs' must be a list of objects with a 'name'")
        params = _parameters(item.get("parameters"), f"output {item['name']!r}")
        if params.get("classification"):
            raise InvalidInputError("the classification extension is not supported")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInputError(
                f"output {item['name']!r}: binary_data must be true or false, got {binary!r}"
            )
        if any(seen.name == item["name"] for seen in wanted):
            raise InvalidInputError(f"requested output {item['name']!r} is given twice")
        wanted.append(RequestedOutput(item["name"], binary))
    return tuple(wanted)


def request_timeout(parameters: Mapping[str, Any], other: float | None) -> float | None:
    """The tighter of ``parameters.timeout`` (microseconds, as Triton) and ``other``
    (seconds: a header's or the transport's deadline)."""
    micros = parameters.get("timeout")
    if micros is None:
        return other
    if type(micros) not in (int, float) or not micros > 0:
        raise InvalidInputError(
            f"parameters.timeout {micros!r}: expected a positive number of microseconds"
        )
    seconds = float(micros) / 1e6
    return seconds if other is None else min(seconds, other)

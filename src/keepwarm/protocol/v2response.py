"""KServe v2 / Open Inference Protocol responses from numpy: the outputs a request asked
for, as JSON ``data`` or as binary tensors after the JSON header (the binary tensor
extension); ``to_binary`` serves the gRPC face's ``raw_output_contents`` too."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, jsonnonfinite
from keepwarm.protocol.dtypes import TEXT_KINDS, v2_datatype

if TYPE_CHECKING:
    from keepwarm.protocol.v2 import InferRequest

_LENGTH = struct.Struct("<I")  # a BYTES element's length, before its bytes


def chosen_outputs(
    request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> list[tuple[str, bool]]:
    """(name, binary) of each output to send: the requested ones, else all of them."""
    if request.outputs is None:
        return [(name, request.binary_outputs) for name in outputs]
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in outputs:
            raise InvalidInputError(
                f"requested output {wanted.name!r} is not an output of the model "
                f"(outputs: {', '.join(outputs)})"
            )
        binary = request.binary_outputs if wanted.binary is None else wanted.binary
        chosen.append((wanted.name, binary))
    return chosen


def encode_response(
    request: InferRequest, model_name: str, version: int, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    chosen = chosen_outputs(request, outputs)
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    floats: list[tuple[dict[str, Any], np.ndarray]] = []  # float outputs written as JSON
    for name, binary in chosen:
        array = outputs[name]
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            data = to_binary(array)
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = _to_json(array, name)
            if array.dtype.kind == "f":
                floats.append((tensor, array))
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = tensors
    header = jsonio.dumps(body)
    if floats and header.find(b"null") >= 0:  # orjson's NaN or infinity, maybe
        for tensor, array in floats:
            tensor["data"] = _literal_data(array)
        header = jsonio.dumps(body)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _to_json(array: np.ndarray, name: str) -> Any:
    """A tensor's ``data``, as orjson writes it: NaN and infinities in a float output as
    ``null``, which ``encode_response`` finds and writes again (``_literal_data``)."""
    flat = array.reshape(-1)
    if array.dtype.kind in TEXT_KINDS:
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in flat.tolist()]
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"output {name!r} holds bytes that are not UTF-8 text: ask for it with "
                '"parameters": {"binary_data": true}'
            ) from None
    if array.dtype == np.float16 or not array.dtype.isnative:
        return flat.tolist()
    return np.ascontiguousarray(flat)


def _literal_data(array: np.ndarray) -> Any:
    """A float output's ``data`` with NaN and infinities written as Triton's HTTP API
    writes them (its JSON writer sets rapidjson's NaN-and-Inf flag): ``NaN``,
    ``Infinity``, ``-Infinity``, which ``tritonclient.http`` parses (python-rapidjson)
    and Python's ``json`` too; ``null`` (orjson's), which tritonclient read as NaN, lost
    an infinity. Asked only for a body orjson wrote with a ``null``; as TF Serving's
    (``tfserving.encode_predict``), the search costs about 0.4 us per answer. float16
    is written as float32 (each value exact), like a non-native order, natively."""
    flat = array.reshape(-1)
    if array.dtype == np.float16 or not array.dtype.isnative:
        wide = np.float32 if array.dtype.itemsize == 2 else array.dtype.newbyteorder("=")
        flat = flat.astype(wide)
    return jsonnonfinite.float_output(np.ascontiguousarray(flat))


def to_binary(array: np.ndarray) -> bytes:
    if array.dtype.kind in TEXT_KINDS:
        parts = []
        for item in array.reshape(-1).tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()

"""KServe v2 gRPC messages <-> numpy: ``ModelInferRequest`` / ``ModelInferResponse`` with
typed ``InferTensorContents`` or ``raw_input_contents`` / ``raw_output_contents`` (the same
bytes as the REST binary extension: little-endian values; BYTES as length-prefixed items).

Outputs are raw when the request sent raw inputs (as Triton always answers) or when an
output has no typed field (FP16); typed otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.grpc.protos.inference import grpc_service_pb2 as pb
from keepwarm.protocol import v2
from keepwarm.protocol.dtypes import OBJECT, numpy_dtype, v2_datatype
from keepwarm.protocol.jsonio import checked_shape

#: v2 datatype -> the InferTensorContents field that carries it (FP16: raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_WIDE = {"int_contents": np.int64, "uint_contents": np.uint64}


def parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as plain values."""
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(param, which)
    return out


def decode_request(request: Any, *, max_bytes: int) -> v2.InferRequest:
    """The inputs of a ``ModelInferRequest`` as arrays (raw contents without a copy),
    the requested outputs and the request's parameters."""
    if not request.inputs:
        raise InvalidInputError("the request has no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "give one per input, in order"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise InvalidInputError(f"input {name!r} is given twice")
        dtype = numpy_dtype(tensor.datatype, tensor=name)
        shape, count = checked_shape(list(tensor.shape), tensor=name)
        itemsize = 8 if dtype == OBJECT else dtype.itemsize
        if count * itemsize > max_bytes:
            raise InvalidInputError(
                f"input {name!r}: shape {shape} of {tensor.datatype} needs "
                f"{count * itemsize} bytes, more than the limit of {max_bytes}"
            )
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {name!r}: both contents and raw_input_contents given"
                )
            inputs[name] = v2.from_binary(memoryview(raw[i]), dtype, count, shape, name)
        else:
            inputs[name] = _typed(tensor, dtype, shape, count)
    outputs = []
    for wanted in request.outputs:
        params = parameters(wanted.parameters)
        if params.get("classification"):
            raise InvalidInputError("the classification extension is not supported")
        outputs.append(v2.RequestedOutput(wanted.name, bool(raw) or None))
    return v2.InferRequest(
        inputs=inputs,
        id=request.id or None,
        outputs=tuple(outputs) if outputs else None,
        binary_outputs=bool(raw),
        parameters=parameters(request.parameters),
    )


def _typed(tensor: Any, dtype: np.dtype[Any], shape: list[int], count: int) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    field = _CONTENTS.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {count} elements, contents.{field} has "
            f"{len(values)}"
        )
    if dtype == OBJECT:
        array = np.empty(count, dtype=OBJECT)
        array[:] = list(values)
        return array.reshape(shape)
    wide = _WIDE.get(field)
    if wide is not None and dtype.itemsize < 4:
        staged = np.array(values, dtype=wide)
        info = np.iinfo(dtype)
        if staged.size and (staged.min() < info.min or staged.max() > info.max):
            raise InvalidInputError(
                f"input {name!r}: contents.{field} holds a value outside {datatype}'s range "
                f"[{info.min}, {info.max}]"
            )
        return staged.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def encode_response(
    request: v2.InferRequest, model_name: str, version: int, outputs: Mapping[str, np.ndarray]
) -> Any:
    """The ``ModelInferResponse`` for ``outputs``, as ``request`` asked for them."""
    chosen = v2.chosen_outputs(request, outputs)
    response = pb.ModelInferResponse(model_name=model_name, model_version=str(version))
    if request.id is not None:
        response.id = request.id
    datatypes = [v2_datatype(outputs[name].dtype) for name, _ in chosen]
    use_raw = request.binary_outputs or any(d not in _CONTENTS for d in datatypes)
    for (name, _), datatype in zip(chosen, datatypes, strict=True):
        array = outputs[name]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if use_raw:
            response.raw_output_contents.append(v2.to_binary(array))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                item if isinstance(item, bytes) else str(item).encode()
                for item in array.reshape(-1).tolist()
            )
        else:
            getattr(tensor.contents, _CONTENTS[datatype]).extend(array.reshape(-1).tolist())
    return response

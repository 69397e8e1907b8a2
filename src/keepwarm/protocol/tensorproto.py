"""TensorFlow's ``TensorProto`` <-> numpy, as TF Serving's gRPC API carries tensors.

A request tensor holds its values either in ``tensor_content`` (the raw little-endian
bytes of every element) or in the one typed field of its dtype (``float_val``,
``int_val``, ``string_val``, ...). As TensorFlow reads them, a typed field with fewer
values than the shape holds is padded with its last value, and an empty one means zeros.
Outputs are written as ``tensor_content`` (strings as ``string_val``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.grpc.protos.tensorflow.core.framework import tensor_pb2, types_pb2
from keepwarm.protocol.dtypes import OBJECT, V2_TO_NUMPY, tf_datatype
from keepwarm.protocol.jsonio import checked_shape

TensorProto = tensor_pb2.TensorProto

#: TensorFlow's dtype enum number -> numpy, derived from the one dtype table.
_NUMPY_OF = {
    types_pb2.DataType.Value(tf_datatype(dtype)): dtype
    for dtype in V2_TO_NUMPY.values()
    if tf_datatype(dtype) != "DT_INVALID"
}
_FIELD_OF = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val",
    np.dtype(np.bool_): "bool_val",
    np.dtype(np.float16): "half_val",  # the bit patterns, one per int32
    OBJECT: "string_val",
}
_VALUE_FIELDS = tuple(sorted(set(_FIELD_OF.values())))
_SUPPORTED = ", ".join(types_pb2.DataType.Name(number) for number in sorted(_NUMPY_OF))


def to_numpy(proto: Any, *, name: str, max_bytes: int) -> np.ndarray:
    """The array a request's ``TensorProto`` holds; ``max_bytes`` bounds what it may
    expand to (a one-value field fills any shape)."""
    dtype = _NUMPY_OF.get(proto.dtype)
    if dtype is None:
        shown = types_pb2.DataType.Name(proto.dtype) if _known(proto.dtype) else proto.dtype
        raise InvalidInputError(
            f"input {name!r}: dtype {shown} is not served; expected one of {_SUPPORTED}"
        )
    shape, count = _shape(proto, name)
    itemsize = 8 if dtype == OBJECT else dtype.itemsize
    if count * itemsize > max_bytes:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} of {dtype.name} needs {count * itemsize} bytes, "
            f"more than the limit of {max_bytes}"
        )
    if proto.tensor_content:
        return _from_content(proto.tensor_content, dtype, shape, count, name)
    field = _FIELD_OF[dtype]
    values = getattr(proto, field)
    if not values and count:
        filled = [f for f in _VALUE_FIELDS if f != field and len(getattr(proto, f))]
        if filled:
            raise InvalidInputError(
                f"input {name!r}: dtype {types_pb2.DataType.Name(proto.dtype)} takes its "
                f"values in {field} or tensor_content, but they are in {filled[0]}"
            )
    if len(values) > count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} holds {count} elements, {field} has {len(values)}"
        )
    if dtype == OBJECT:
        array = np.empty(count, dtype=OBJECT)
        if values:
            items = list(values)
            array[: len(items)] = items
            array[len(items) :] = items[-1]
        else:
            array[:] = b""
        return array.reshape(shape)
    return _typed(values, dtype, count, name, field).reshape(shape)


def _known(number: int) -> bool:
    return number in types_pb2.DataType.values()


def _shape(proto: Any, name: str) -> tuple[list[int], int]:
    if proto.tensor_shape.unknown_rank:
        raise InvalidInputError(f"input {name!r}: a request tensor needs a known shape")
    dims = [dim.size for dim in proto.tensor_shape.dim]
    return checked_shape(dims, tensor=name)


def _from_content(
    content: bytes, dtype: np.dtype[Any], shape: list[int], count: int, name: str
) -> np.ndarray:
    if dtype == OBJECT:
        raise InvalidInputError(f"input {name!r}: DT_STRING values go in string_val")
    if len(content) != count * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} of {dtype.name} needs {count * dtype.itemsize} "
            f"bytes, tensor_content has {len(content)}"
        )
    return np.frombuffer(content, dtype=dtype.newbyteorder("<")).reshape(shape)


def _typed(values: Any, dtype: np.dtype[Any], count: int, name: str, field: str) -> np.ndarray:
    if dtype == np.float16:
        bits = np.array(values, dtype=np.int64)
        if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
            raise InvalidInputError(f"input {name!r}: half_val holds a value outside 16 bits")
        raw = bits.astype(np.uint16).view(np.float16)
    elif field == "int_val" and dtype != np.int32:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInputError(
                f"input {name!r}: int_val holds a value outside {dtype.name}'s range "
                f"[{info.min}, {info.max}]"
            )
        raw = wide.astype(dtype)
    else:
        raw = np.array(values, dtype=dtype)
    if raw.size == count:
        return raw
    if raw.size == 0:
        return np.zeros(count, dtype=dtype)
    return np.concatenate([raw, np.full(count - raw.size, raw[-1], dtype=dtype)])


def from_numpy(array: np.ndarray, *, name: str) -> Any:
    """A response ``TensorProto`` for an output array."""
    dt_name = tf_datatype(array.dtype)
    if dt_name == "DT_INVALID":
        raise InvalidInputError(f"output {name!r}: dtype {array.dtype.name} has no TensorFlow type")
    proto = TensorProto(dtype=types_pb2.DataType.Value(dt_name))
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if dt_name == "DT_STRING":
        proto.string_val.extend(
            item if isinstance(item, bytes) else str(item).encode()
            for item in array.reshape(-1).tolist()
        )
    else:
        proto.tensor_content = np.ascontiguousarray(
            array, dtype=array.dtype.newbyteorder("<")
        ).tobytes()
    return proto

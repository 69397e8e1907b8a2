"""The one dtype table: KServe v2 datatypes and TensorFlow ``DT_*`` names <-> numpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError

OBJECT = np.dtype(object)

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": OBJECT,
}

_NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}

_NUMPY_TO_TF = {
    np.dtype(np.bool_): "DT_BOOL",
    np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.uint32): "DT_UINT32",
    np.dtype(np.uint64): "DT_UINT64",
    np.dtype(np.int8): "DT_INT8",
    np.dtype(np.int16): "DT_INT16",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64",
    np.dtype(np.float16): "DT_HALF",
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE",
}

TEXT_KINDS = "OSU"


def numpy_dtype(datatype: object, *, tensor: str) -> np.dtype[Any]:
    """The numpy dtype of a v2 ``datatype``; unknown names are an ``InvalidInputError``."""
    dtype = V2_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"input {tensor!r}: unknown datatype {datatype!r}; expected one of "
            f"{', '.join(V2_TO_NUMPY)}"
        )
    return dtype


def v2_datatype(dtype: np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype (text and objects are BYTES)."""
    if dtype.kind in TEXT_KINDS:
        return "BYTES"
    name = _NUMPY_TO_V2.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)
    if name is None:
        raise InvalidInputError(f"dtype {dtype.name} has no KServe v2 datatype")
    return name


def tf_datatype(dtype: np.dtype[Any]) -> str:
    """TensorFlow's ``DT_*`` name for a numpy dtype (text and objects are DT_STRING)."""
    if dtype.kind in TEXT_KINDS:
        return "DT_STRING"
    return _NUMPY_TO_TF.get(dtype, "DT_INVALID")

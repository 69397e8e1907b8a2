"""JSON's ``true`` and ``false`` in a numeric tensor are refused with the tensor's name and
its dtype (numpy would take them as 1 and 0), by the v2 and the TF Serving decoders, fast
and general, small bodies and large; a BOOL tensor takes them as before, and 0 and 1 as
numbers stay numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, tflean, tfserving, v2, v2lean
from keepwarm.signature import Signature, TensorSpec

NUMERIC = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8]
WIDE = 1000  # past the fast parsers' thresholds (simdjson, pieces)


def _signature(dtype: Any, width: int) -> Signature:
    spec = TensorSpec("x", np.dtype(dtype), (None, width))
    return Signature(inputs=(spec,), outputs=(TensorSpec("y", np.dtype(np.float32), None),))


def _rows(width: int, where: int, value: object, number: float = 0) -> list[list[object]]:
    rows: list[list[object]] = [[number] * width, [number] * width]
    rows[1][where] = value
    return rows


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("where", [0, -1])
@pytest.mark.parametrize("number", [0, 1, 0.5, 7])
def test_array_from_json_refuses_a_boolean_among_numbers(
    dtype: Any, value: bool, where: int, number: float
) -> None:
    with pytest.raises(InvalidInputError) as info:
        jsonio.array_from_json(_rows(3, where, value, number), np.dtype(dtype), tensor="x")
    assert info.value.message == f"input 'x': expected {np.dtype(dtype).name} values, got a boolean"


@pytest.mark.parametrize("given", [True, [True, False], [[[False]], [[True]]]])
def test_array_from_json_refuses_booleans_alone(given: object) -> None:
    with pytest.raises(InvalidInputError, match="input 'x': expected float32 values, got booleans"):
        jsonio.array_from_json(given, np.dtype(np.float32), tensor="x")


def test_zeros_and_ones_as_numbers_and_booleans_for_bool_tensors_are_kept() -> None:
    numbers = jsonio.array_from_json([[0, 1], [1.0, 0.0]], np.dtype(np.float32), tensor="x")
    assert numbers.dtype == np.float32 and numbers.tolist() == [[0, 1], [1, 0]]
    flags = jsonio.array_from_json([[True, False]], np.dtype(bool), tensor="x")
    assert flags.dtype == bool and flags.tolist() == [[True, False]]


def _v2_body(datatype: str, data: object, shape: list[int], **more: Any) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": data, **more}
    return orjson.dumps({"inputs": [tensor]})


@pytest.mark.parametrize("width", [3, WIDE])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "float32"), ("INT64", "int64")])
def test_v2_refuses_a_boolean_in_a_numeric_tensor(
    width: int, nested: bool, datatype: str, dtype: str
) -> None:
    rows = _rows(width, -1, True, 0.5 if datatype == "FP32" else 2)
    data = rows if nested else rows[0] + rows[1]
    body = _v2_body(datatype, data, [2, width])
    assert v2lean.decode(body, 64) is None  # the fast decoder leaves it to the general one
    with pytest.raises(InvalidInputError) as info:
        v2.decode_request(body)
    assert info.value.message == f"input 'x': expected {dtype} values, got a boolean"


def test_v2_bool_tensors_take_booleans() -> None:
    body = _v2_body("BOOL", [True, False] * WIDE, [2, WIDE])
    decoded = v2.decode_request(body).inputs["x"]
    assert decoded.dtype == bool and decoded.sum() == WIDE


@pytest.mark.parametrize("width", [3, WIDE])
@pytest.mark.parametrize(
    "wrap",
    [
        lambda rows: {"instances": rows},
        lambda rows: {"inputs": rows},
        lambda rows: {"inputs": {"x": rows}},
        lambda rows: {"instances": [{"x": row} for row in rows]},
    ],
)
def test_tfserving_refuses_a_boolean_in_a_numeric_tensor(width: int, wrap: Any) -> None:
    body = orjson.dumps(wrap(_rows(width, 0, False, 0.5)))
    fast = tflean.parse(body, 64)
    request = tfserving.parse_predict(body) if fast is None else fast
    with pytest.raises(InvalidInputError) as info:
        request.inputs(_signature(np.float32, width))
    assert info.value.message == "input 'x': expected float32 values, got a boolean"


def test_tfserving_bool_tensors_take_booleans() -> None:
    body = orjson.dumps({"instances": [[True, False] * WIDE]})
    taken = tfserving.parse_predict(body).inputs(_signature(bool, 2 * WIDE))["x"]
    assert taken.dtype == bool and taken.sum() == WIDE

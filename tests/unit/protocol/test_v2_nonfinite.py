"""The KServe v2 JSON API reads and writes NaN and infinities as Triton does: its JSON
writer and parser (rapidjson with its NaN-and-Inf flags) write ``NaN``, ``Infinity`` and
``-Infinity`` in a float output's ``data`` and read them in a request's, and
``tritonclient.http`` (python-rapidjson, whose defaults do the same) sends and parses
them; keepwarm wrote ``null``, which tritonclient read back as NaN (an infinity lost),
and refused the literals as malformed JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonpieces, v2

ODD = [math.nan, math.inf, -math.inf, 1.5, -0.0]


def _body(data: object, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": shape or [5], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()  # Python's json writes the literals


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", ">f4"])
def test_non_finite_outputs_are_written_as_the_literals(dtype: str) -> None:
    y = np.array(ODD, dtype=dtype)
    request = v2.InferRequest(inputs={})
    body, length = v2.encode_response(request, "m", 1, {"y": y, "n": np.arange(3)})
    assert length is None and b"null" not in body
    assert b"[NaN,Infinity,-Infinity,1.5,-0.0]" in body
    outputs = {out["name"]: out for out in json.loads(body)["outputs"]}
    got = np.array(outputs["y"]["data"], dtype=y.dtype.newbyteorder("="))
    np.testing.assert_array_equal(got, y)  # NaN equals NaN, signs count
    assert outputs["n"]["data"] == [0, 1, 2]


def test_finite_outputs_are_written_as_before() -> None:
    y = np.array([[1.5, -2.25], [0.0, 3.0]], dtype=np.float32)
    body, _ = v2.encode_response(v2.InferRequest(inputs={}, id="null"), "null", 1, {"y": y})
    assert orjson.loads(body)["outputs"][0]["data"] == [1.5, -2.25, 0.0, 3.0]
    assert body == orjson.dumps(orjson.loads(body))  # standard JSON, orjson's spelling


@pytest.mark.parametrize("large", [False, True])
def test_the_literals_are_read_in_a_request(large: bool) -> None:
    """As a flat and as a nested array, in a small body and in one whose data arrays are
    cut out and parsed apart (past ``jsonpieces.MIN_ARRAY_BYTES``)."""
    x = np.array(ODD * (2000 if large else 1), dtype=np.float64)
    for data, shape in ((x.tolist(), [x.size]), (x.reshape(-1, 5).tolist(), [x.size // 5, 5])):
        body = _body(data, "FP64", shape)
        assert (len(body) > jsonpieces.MIN_ARRAY_BYTES) == large
        got = v2.decode_request(body).inputs["x"]
        np.testing.assert_array_equal(got.reshape(-1), x)


@pytest.mark.parametrize("odd", [b"-NaN", b"Inf", b"nan", b'"NaN"', b"null"])
def test_other_spellings_and_null_stay_refused(odd: bytes) -> None:
    body = _body([1.5, 0.0, 0.0, 0.0, 0.0]).replace(b"1.5", odd)
    with pytest.raises(InvalidInputError, match=r"malformed JSON|got null|expected float32"):
        v2.decode_request(body)

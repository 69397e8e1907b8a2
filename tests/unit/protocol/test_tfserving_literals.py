"""TF Serving's JSON conformance: ``NaN``, ``Infinity`` and ``-Infinity`` read in requests
(whole bodies and large tensors in pieces) and written in responses (the KServe v2 API
reads and writes them too, as Triton's does: ``test_v2_nonfinite``). Also ``b64`` without
its padding and integers past 64 bits."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, jsonnonfinite, tflean, tfpieces, tfserving
from keepwarm.signature import Signature, TensorSpec

F32, F64, I64, TEXT = (np.dtype(t) for t in (np.float32, np.float64, np.int64, object))
ONE = Signature(inputs=(TensorSpec("x", F32, (None, 3)),), outputs=(TensorSpec("y", F32, None),))
NAMED = Signature(
    inputs=(TensorSpec("a", F32, (None, 3)), TensorSpec("s", TEXT, (None,))),
    outputs=(TensorSpec("y", F32, None),),
)
ODD = [[math.nan, math.inf, -math.inf], [1.0, 2.5, -3.0]]


def odd_array(dtype: Any = F32) -> np.ndarray:
    return np.array(ODD, dtype=dtype)


def same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN equals NaN here


@pytest.mark.parametrize("spaced", [False, True])
def test_row_and_columnar_bodies_with_the_literals_give_those_values(spaced: bool) -> None:
    dumps = json.dumps if spaced else lambda v: json.dumps(v, separators=(",", ":"))
    for document in ({"instances": ODD}, {"inputs": ODD}, {"inputs": {"x": ODD}}):
        body = dumps(document).encode()
        assert b"NaN" in body and b"-Infinity" in body
        assert tflean.parse(body, 64) is None  # simdjson refuses: the usual way reads it
        same(tfserving.parse_predict(body).inputs(ONE)["x"], odd_array())
    rows = dumps({"instances": [{"a": row, "s": "NaN"} for row in ODD]}).encode()
    inputs = tfserving.parse_predict(rows).inputs(NAMED)
    same(inputs["a"], odd_array())
    assert inputs["s"].tolist() == [b"NaN", b"NaN"]  # a string is no literal


def test_a_literal_only_where_a_number_may_be() -> None:
    for body in (
        b'{"instances": [1NaN]}',
        b'{"instances": [NaN1]}',
        b'{"instances": [-NaN]}',
        b'{"instances": [--Infinity]}',
        b'{"instances": [nan, inf]}',
        b'{"instances": [Inf]}',
        b'{"instances": [NaNNaN]}',
        b'{"instances": [NaN, ]}',
        b'{"instances": "NaN"',
        b'{"NaN": [1, 2]',
    ):
        with pytest.raises(InvalidInputError, match="malformed JSON"):
            tfserving.parse_predict(body)
    # the error is orjson's for the body with the literals read as numbers: where it is
    with pytest.raises(InvalidInputError, match=r"char 30\)"):
        tfserving.parse_predict(b'{"instances": [NaN, Infinity, }')
    found = tfserving.parse_predict(b'{"instances": [NaN], "NaN": "Infinity"}')
    assert found.body["NaN"] == "Infinity" and math.isnan(found.body["instances"][0])
    escaped = b'{"k": "\\"NaN, [-Infinity]\\\\", "instances": [-Infinity]}'  # escapes
    found = tfserving.parse_predict(escaped)
    assert found.body == {"k": '"NaN, [-Infinity]\\', "instances": [-math.inf]}


def test_the_depth_limit_holds_with_the_literals() -> None:
    deep = b'{"instances": ' + b"[" * 10 + b"NaN" + b"]" * 10 + b"}"
    with pytest.raises(InvalidInputError, match="nested deeper than 8 levels"):
        tfserving.parse_predict(deep, max_depth=8)
    assert tfserving.parse_predict(deep, max_depth=11).body["instances"] is not None
    deeper = b'{"instances": ' + b"[" * 2000 + b"NaN" + b"]" * 2000 + b"}"
    with pytest.raises(InvalidInputError, match="nested deeper than 64 levels"):
        tfserving.parse_predict(deeper)


def test_integers_past_64_bits_beside_literals_read_as_orjson_reads_them() -> None:
    body = b'{"instances": [[NaN, 18446744073709551616, 1e308, -9223372036854775809, 7]]}'
    value = tfserving.parse_predict(body).body["instances"][0]
    assert math.isnan(value[0]) and value[1:] == [2.0**64, 1e308, -(2.0**63), 7]
    assert [type(v) for v in value] == [float, float, float, float, int]
    for past in (b"1e999", b"-1e400", b"1" + b"0" * 400):
        with pytest.raises(InvalidInputError, match="malformed JSON"):
            tfserving.parse_predict(b'{"instances": [NaN, ' + past + b"]}")


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tfpieces, "MIN_ARRAY_BYTES", 48)
    monkeypatch.setattr(tfpieces, "PIECE_BYTES", 16)


@pytest.mark.usefixtures("small_pieces")
def test_large_tensors_with_literals_are_read_in_pieces() -> None:
    x = np.random.default_rng(0).random((40, 3))
    x[1, 0], x[17, 2], x[39, 1] = math.nan, math.inf, -math.inf
    two = Signature(inputs=(*ONE.inputs, TensorSpec("z", F64, (None,))), outputs=())
    for document, signature in (
        ({"instances": x.tolist()}, ONE),
        ({"inputs": {"x": x.tolist(), "z": [1.5, math.nan]}}, two),
    ):
        body = json.dumps(document).encode()
        found = tfpieces.loads(body, max_depth=64)
        tensor = found["instances"] if "instances" in found else found["inputs"]["x"]
        assert isinstance(tensor, np.ndarray)  # the pieces, not the plain parse
        same(tensor, x)
        same(tfserving.parse_predict(body).inputs(signature)["x"], x.astype(F32))
    # anything but numbers and the literals in a piece: the plain parse, and its error
    for odd in (b"true", b"null", b'"NaN"', b"Nan", b"1e999"):
        body = b'{"instances": [' + b"NaN, 1.0, " * 8 + odd + b"]}"
        with pytest.raises(InvalidInputError):
            tfserving.parse_predict(body).inputs(Signature((TensorSpec("x", F32, None),), ()))


finite = st.floats(-1e300, 1e300) | st.integers(-(2**63), 2**64 - 1)
odd = st.sampled_from([math.nan, math.inf, -math.inf])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(finite | odd, min_size=3, max_size=3), min_size=1, max_size=30),
    st.booleans(),
)
def test_pieces_and_the_plain_parse_agree_on_bodies_with_literals(
    rows: list[list[Any]], spaced: bool
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    body = json.dumps({"instances": [[math.nan, 0, 1], *rows]}, separators=separators).encode()
    plain = np.asarray(jsonio.loads(body, max_depth=64, literals=True)["instances"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfpieces, "MIN_ARRAY_BYTES", 8)
        patch.setattr(tfpieces, "PIECE_BYTES", 16)
        pieces = tfpieces.loads(body, max_depth=64)["instances"]
    # an array, unless a piece starting with an integer holds a number past 2**63 (an
    # integer past 64 bits, read as a double, would be no float: ``jsonfast``)
    big = any(abs(v) >= 2**63 for row in rows for v in row)
    assert isinstance(pieces, np.ndarray) or big
    same(np.asarray(pieces), plain)


def test_numbers_reads_only_numbers_and_the_literals() -> None:
    got = jsonnonfinite.numbers(b" NaN ,1, -Infinity,2.5e3,Infinity")
    assert got is not None
    same(got, np.array([math.nan, 1, -math.inf, 2500, math.inf]))
    for text in (b"1, 2", b"NaN, true", b"NaN, null", b'NaN, "x"', b"NaN,, 1", b"NaN, [1]"):
        assert jsonnonfinite.numbers(text) is None


def request(row_format: bool) -> tfserving.PredictRequest:
    return tfserving.PredictRequest({}, row_format, None)


def test_non_finite_outputs_are_written_as_the_literals() -> None:
    y = odd_array()
    for row_format, key in ((True, "predictions"), (False, "outputs")):
        body = tfserving.encode_predict(request(row_format), {"y": y})
        assert body == f'{{"{key}":[[NaN,Infinity,-Infinity],[1.0,2.5,-3.0]]}}'.encode()
        same(np.array(json.loads(body)[key], dtype=F32), y)
    z = np.array([1, 2], dtype=np.longlong)  # int64 as ONNX Runtime gives it
    outputs = {"y": y, "z": z, "w": np.array([math.nan, 0.5], dtype=F64)}
    rows = json.loads(tfserving.encode_predict(request(True), outputs))["predictions"]
    assert [row["z"] for row in rows] == [1, 2] and rows[1]["w"] == 0.5
    assert math.isnan(rows[0]["w"]) and rows[0]["y"][1] == math.inf
    columns = json.loads(tfserving.encode_predict(request(False), outputs))["outputs"]
    same(np.array(columns["y"], dtype=F32), y)
    # float16, other byte orders, 0-d and Fortran-ordered arrays
    for array in (
        y.astype(np.float16),
        y.astype(">f8"),
        np.asfortranarray(y),
        np.float32(math.nan) * np.ones((), F32),
    ):
        body = tfserving.encode_predict(request(False), {"y": array})
        back = np.array(json.loads(body)["outputs"], dtype=F32)
        same(back, np.asarray(array, dtype=F32).reshape(back.shape))
    finite = np.array([[0.1, 1e-30, 3.4e38]], dtype=F32)  # written by orjson alone
    body = tfserving.encode_predict(request(True), {"y": finite})
    assert body == orjson.dumps({"predictions": finite}, option=orjson.OPT_SERIALIZE_NUMPY)
    text = np.array([b"null"], dtype=object)  # a "null" in a string: written the same
    body = tfserving.encode_predict(request(False), {"y": finite, "s": text})
    want = {"outputs": {"y": finite, "s": ["null"]}}
    assert body == orjson.dumps(want, option=orjson.OPT_SERIALIZE_NUMPY)
    body = tfserving.encode_predict(request(False), {"y": odd_array(), "s": text})
    assert json.loads(body)["outputs"]["s"] == ["null"] and b"NaN" in body


def test_b64_without_its_padding_is_read_as_tf_serving_reads_it() -> None:
    signature = Signature(inputs=(TensorSpec("s", TEXT, (None,)),), outputs=())
    for given_text, want in (("YWI", b"ab"), ("YQ", b"a"), ("YWJj", b"abc"), ("", b"")):
        body = orjson.dumps({"instances": [{"b64": given_text}]})
        assert tfserving.parse_predict(body).inputs(signature)["s"].tolist() == [want]
    for wrong in ("YQ=", "Y", "YWJ=j", "Y W I"):  # padding given must be right
        body = orjson.dumps({"instances": [{"b64": wrong}]})
        with pytest.raises(InvalidInputError, match="not valid base64"):
            tfserving.parse_predict(body).inputs(signature)


def test_an_integer_past_64_bits_is_out_of_range_for_the_dtype() -> None:
    for dtype in ("int64", "int32", "uint64", "int8"):
        signature = Signature(inputs=(TensorSpec("x", np.dtype(dtype), (None,)),), outputs=())
        for literal in (b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 30):
            body = b'{"instances": [1, ' + literal + b"]}"
            with pytest.raises(InvalidInputError, match=f"out of range for {dtype}"):
                tfserving.parse_predict(body).inputs(signature)
        body = b'{"instances": [1, 2.5]}'  # a fraction stays a type error
        with pytest.raises(InvalidInputError, match=f"expected {dtype} values, got float64"):
            tfserving.parse_predict(body).inputs(signature)
    signature = Signature(inputs=(TensorSpec("x", I64, (None,)),), outputs=())
    edge = b'{"instances": [-9223372036854775808, 9223372036854775807]}'
    assert tfserving.parse_predict(edge).inputs(signature)["x"].tolist() == [-(2**63), 2**63 - 1]


def test_uint64_takes_every_integer_below_2_64_exactly() -> None:
    """[1, 2**63] was refused as float64; [1, 2**64 - 1] was called out of range."""
    signature = Signature(inputs=(TensorSpec("x", np.dtype(np.uint64), (None,)),), outputs=())
    for values in ([1, 2**63], [1, 2**64 - 1], [2**64 - 1, 0, 2**63 + 1]):
        for document in ({"instances": values}, {"inputs": {"x": values}}):
            for body in (orjson.dumps(document), json.dumps(document).encode()):
                x = tfserving.parse_predict(body).inputs(signature)["x"]
                assert x.dtype == np.uint64 and x.tolist() == values
    for literal in (b"-1", b"18446744073709551616"):
        body = b'{"instances": [9223372036854775808, ' + literal + b"]}"
        with pytest.raises(InvalidInputError, match=r"'x': values out of range for uint64 \(\[0,"):
            tfserving.parse_predict(body).inputs(signature)

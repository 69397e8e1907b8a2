"""The fast JSON path: the same document as orjson's, with flat numeric arrays as numpy
arrays equal to ``np.asarray`` of orjson's lists; anything it is unsure of is left to
orjson."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonio, v2

PAD = " " * jsonfast.MIN_BYTES  # whitespace: the same document, over the size threshold


def plain(value: Any) -> Any:
    """``value`` with numpy arrays as lists, to compare with orjson's document."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def as_numpy_reads(value: Any, key: str = "") -> Any:
    """orjson's document with each flat list of numbers under "data" as numpy reads it
    (``np.asarray(...).tolist()``: [2**53 + 1, 0.0] is two floats, as the tensor holds)."""
    if isinstance(value, dict):
        return {k: as_numpy_reads(v, k) for k, v in value.items()}
    if isinstance(value, list):
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        if key == "data" and value and numbers:
            return np.asarray(value).tolist()
        return [as_numpy_reads(v) for v in value]
    return value


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.lists(st.integers(-(2**63), 2**63 - 1) | st.floats(-1e18, 1e18), min_size=1).map(
        lambda numbers: {"data": numbers}
    )
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_reads_as_orjson_reads_it(document: Any) -> None:
    body = orjson.dumps(document) + PAD.encode()
    read = jsonio.loads(body, max_depth=64, arrays=True)
    if jsonfast.loads(body, 64) is None:  # left to orjson
        assert read == orjson.loads(body)
    else:
        assert plain(read) == as_numpy_reads(orjson.loads(body))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1)
    | st.lists(st.integers(-(2**53), 2**53) | st.floats(-1e18, 1e18), min_size=1)
)
def test_a_numeric_array_is_what_numpy_makes_of_the_list(numbers: list[float]) -> None:
    body = orjson.dumps({"data": numbers}) + PAD.encode()
    fast = jsonfast.loads(body, 64)
    assert fast is not None
    expected = np.asarray(orjson.loads(body)["data"])
    assert isinstance(fast["data"], np.ndarray)
    assert fast["data"].dtype == expected.dtype
    np.testing.assert_array_equal(fast["data"], expected)


@pytest.mark.parametrize(
    "numbers",
    [[0.5, 3, -(2**62)], [1, 0.5], [2.0, 1e10, -1e-300], [7, 8, 2**62], [1.5],
     # a float first: floats for numpy, past 2**63 and beside integers past int64 too
     [1.5, 1e300], [-0.5, 2**63, -1], [0.5, 2**64 - 1, -(2**63)]],
)  # fmt: skip
def test_float_first_int_first_and_mixed_arrays_read_as_numpy_reads_them(
    numbers: list[float],
) -> None:
    body = orjson.dumps({"data": numbers}) + PAD.encode()
    fast = jsonfast.loads(body, 64)
    assert fast is not None
    expected = np.asarray(numbers)
    assert fast["data"].dtype == expected.dtype
    np.testing.assert_array_equal(fast["data"], expected)


def test_an_image_tensor_decodes_to_the_same_array_through_v2() -> None:
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    decoded = v2.decode_request(body).inputs["image"]
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, x)


@pytest.mark.parametrize(
    ("data", "datatype"),
    [
        ([1.5] * 600, "INT32"),
        ([[1, 2], [3]] * 300, "FP32"),
        ([True, 1] * 300, "FP32"),
        ([True, 1.5] * 300, "FP32"),
        (["a"] * 600, "FP32"),
        ([1] * 600, "BYTES"),
        ([2**40] * 600, "INT32"),
        ([1] * 599, "FP32"),
        ([[1] * 300, [2] * 300], "FP32"),
    ],
)
def test_tensors_in_large_bodies_decode_as_through_orjson(
    data: list[Any], datatype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensor = {"name": "x", "datatype": datatype, "shape": [600], "data": data}
    body = orjson.dumps({"inputs": [tensor]}) + PAD.encode()

    def outcome() -> Any:
        try:
            return v2.decode_request(body).inputs["x"].tolist()
        except InvalidInputError as exc:
            return str(exc)

    fast = outcome()
    monkeypatch.setattr(jsonfast, "MIN_BYTES", 10**9)  # every body through orjson
    assert fast == outcome()


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": [1, 2], "a": 5}' + PAD.encode(),  # duplicate keys: orjson keeps the last
        b'{"a": 1e400}' + PAD.encode(),  # out of range for simdjson, inf for orjson
        b'{"a": "\xff"}' + PAD.encode(),  # not UTF-8
        b'{"a": [1, 2' + PAD.encode(),  # truncated
        b"[" * 70 + b"1" + b"]" * 70 + PAD.encode(),  # deeper than the limit
        b'{"data": [0, [1], 2]}' + PAD.encode(),  # simdjson would flatten it
        b'{"data[": [1]}' + PAD.encode(),  # a "[" in a key: the array count cannot tell
        b'{"data": [-1, 9223372036854775809]}' + PAD.encode(),  # past any 64-bit type
        b'{"data": [0, 9223372036854775808]}' + PAD.encode(),  # numpy: float64; alone: uint64
    ],
)
def test_documents_it_is_unsure_of_are_left_to_orjson(body: bytes) -> None:
    assert jsonfast.loads(body, 64) is None
    try:
        expected: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        with pytest.raises(InvalidInputError, match="malformed JSON"):
            jsonio.loads(body, max_depth=64, arrays=True)
        return
    if isinstance(expected, list):  # the nesting limit
        with pytest.raises(InvalidInputError, match="nested deeper than 64"):
            jsonio.loads(body, max_depth=64, arrays=True)
        return
    assert jsonio.loads(body, max_depth=64, arrays=True) == expected


def test_threads_parse_at_once_without_sharing_a_parser() -> None:
    bodies = [orjson.dumps({"data": [float(i)] * 2000, "id": i}) for i in range(8)]
    failures: list[BaseException] = []

    def parse(i: int) -> None:
        try:
            for _ in range(50):
                got = jsonfast.loads(bodies[i], 64)
                assert got is not None and got["id"] == i and got["data"][0] == i
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=parse, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

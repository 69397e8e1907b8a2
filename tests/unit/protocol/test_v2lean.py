"""``v2lean``: a plain small v2 JSON request decoded in one simdjson parse, or declined
(None) so that the usual path decodes it; either way the arrays or the error are the
orjson path's (``test_v2_json_paths.check``)."""

from __future__ import annotations

import warnings

import numpy as np
import orjson
import pytest

from keepwarm.protocol import jsonarrays, v2lean
from keepwarm.protocol.dtypes import V2_TO_NUMPY
from unit.protocol.test_v2_json_paths import check


def body(*tensors: dict[str, object], **top: object) -> bytes:
    return orjson.dumps({**top, "inputs": list(tensors)}, option=orjson.OPT_SERIALIZE_NUMPY)


def tensor(
    data: object, datatype: str = "FP32", shape: list[int] | None = None
) -> dict[str, object]:
    size = np.asarray(data).size
    return {"name": "x", "datatype": datatype, "shape": shape or [size], "data": data}


def test_an_mlp_body_is_decoded_in_one_parse() -> None:
    x = np.random.default_rng(5).random((1, 784), dtype=np.float32)
    sent = body({"name": "image", "datatype": "FP32", "shape": [1, 784], "data": x.ravel()})
    request = v2lean.decode(sent, 64)
    assert request is not None
    assert request.inputs["image"].dtype == np.float32
    np.testing.assert_array_equal(request.inputs["image"], x)
    assert (request.id, request.outputs, request.binary_outputs, request.parameters) == (
        None, None, False, {}
    )  # fmt: skip
    assert check(sent)


@pytest.mark.parametrize("datatype", [n for n, d in V2_TO_NUMPY.items() if d.kind in "iuf"])
def test_each_numeric_datatype_and_an_id(datatype: str) -> None:
    second = tensor([7], datatype) | {"name": "y"}
    sent = body(tensor([1, 2, 3, 4, 5, 6], datatype, [2, 3]), second, id="r1")
    request = v2lean.decode(sent, 64)
    assert request is not None and request.id == "r1"
    assert request.inputs["x"].shape == (2, 3)
    assert request.inputs["x"].dtype == V2_TO_NUMPY[datatype]
    assert check(sent)


ONE = '{"name":"x","datatype":"FP32","shape":[1],"data":[1]}'


def raw(data: str, shape: str = "[1]", datatype: str = "FP32") -> bytes:
    """A body with one input whose shape and data are given as JSON text."""
    one = f'{{"name":"x","datatype":"{datatype}","shape":{shape},"data":{data}}}'
    return ('{"inputs":[' + one + "]}").encode()


DECLINED = {
    "parameters": body(tensor([1.5]), parameters={"timeout": 5}),
    "outputs": body(tensor([1.5]), outputs=[{"name": "y"}]),
    "input parameters": body(tensor([1.5]) | {"parameters": {}}),
    "id not text": body(tensor([1.5]), id=7),
    "null id": body(tensor([1.5]), id=None),
    "duplicate top key": ('{"inputs":[],"inputs":[' + ONE + "]}").encode(),
    "duplicate input key": ('{"inputs":[{"name":"y",' + ONE[1:] + "]}").encode(),
    "NUL in a key": ('{"inputs\\u0000":[],"inputs":[' + ONE + "]}").encode(),
    "escaped name": body(tensor([1.5]) | {"name": "x\\y"}),
    "bracket in a name": body(tensor([1.5]) | {"name": "x[0]"}),
    "nested data": body(tensor([[1.5, 2.5]], "FP32", [2])),
    "a hidden nested array": raw("[0,[1],2]", "[3]"),
    "empty data": body(tensor([], "FP32", [0])),
    "empty inputs": body(),
    "BOOL": body(tensor([True, False], "BOOL")),
    "BYTES": body(tensor(["a"], "BYTES")),
    "unknown datatype": body(tensor([1], "FP8")),
    "shape too small": body(tensor([1, 2, 3], "FP32", [2])),
    "negative shape": body(tensor([1], "FP32", [-1])),
    "shape of floats": raw("[1]", "[1.0]"),
    "floats into INT32": body(tensor([1.5], "INT32")),
    "out of range": body(tensor([300], "UINT8")),
    "past int64 beside negatives": body(tensor([2**63, -1], "INT64")),
    "past 64 bits": raw("[100000000000000000000000]", datatype="FP64"),
    "NaN": raw("[NaN]"),
    "a number too large": raw("[1e400]", datatype="FP64"),
    "twice the same input": body(tensor([1]), tensor([2])),
    "a missing key": body({"name": "x", "datatype": "FP32", "data": [1]}),
    "inputs not a list": b'{"inputs": {"name": "x"}}',
    "an input not an object": b'{"inputs": [[1]]}',
    "truncated": body(tensor([1.5]))[:-3],
    "invalid UTF-8": b'{"inputs":[{"name":"\xff","datatype":"FP32","shape":[1],"data":[1]}]}',
}


@pytest.mark.parametrize("sent", DECLINED.values(), ids=DECLINED.keys())
def test_what_it_is_unsure_of_goes_the_usual_way(sent: bytes) -> None:
    assert v2lean.decode(sent, 64) is None
    check(sent)  # the usual path's result or error


def test_a_body_that_is_no_object_goes_the_usual_way() -> None:
    assert v2lean.decode(b"[1, 2]", 64) is None


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_a_depth_limit_under_its_four_levels_goes_the_usual_way(max_depth: int) -> None:
    assert v2lean.decode(body(tensor([1.5])), max_depth) is None
    assert v2lean.decode(body(tensor([1.5])), 4) is not None


def test_the_thread_parser_is_free_again_after_a_number_past_64_bits() -> None:
    """simdjson refuses such a number with a RuntimeError; the next body parses."""
    assert v2lean.decode(DECLINED["past 64 bits"], 64) is None
    assert v2lean.decode(body(tensor([1.5])), 64) is not None


DTYPES = [
    np.dtype(t) for t in ("b", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")
]


@pytest.mark.parametrize("have", DTYPES, ids=str)
@pytest.mark.parametrize("want", [d for d in DTYPES if d.kind == "f"], ids=str)
def test_casts_said_not_to_overflow_never_do(
    have: np.dtype[object], want: np.dtype[object]
) -> None:
    """``jsonarrays.cast`` skips ``np.errstate`` for them: the extremes of ``have`` cast to
    ``want`` without an overflow; the others cast under it, quietly, to inf."""
    extremes = (
        [np.finfo(have).min, np.finfo(have).max] if have.kind == "f"
        else [False, True] if have.kind == "b" else [np.iinfo(have).min, np.iinfo(have).max]
    )  # fmt: skip
    array = np.array(extremes, dtype=have)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = jsonarrays.cast(array, want, tensor="x")  # never a warning
        if not jsonarrays._may_overflow(have, want):
            with np.errstate(over="raise"):
                assert np.isfinite(array.astype(want)).all()
    assert got.dtype == want


def test_a_quiet_cast_keeps_the_rest_of_numpys_error_state() -> None:
    """``jsonarrays.cast``'s overflow-quiet cast (numpy's error state set directly, not
    through ``np.errstate``) ignores overflow only: another setting in force (here
    ``invalid="raise"``) holds inside it, and the state in force is back after it."""
    with np.errstate(invalid="raise", over="raise"):
        before = np.geterr()
        got = jsonarrays.cast(np.array([1e300, -1e300, 0.5]), np.dtype("f4"), tensor="x")
        assert list(got) == [np.inf, -np.inf, 0.5]
        assert np.geterr() == before
        with pytest.raises(FloatingPointError):
            jsonarrays._quiet_astype(np.array([np.nan]), np.dtype("i4"))  # invalid: NaN

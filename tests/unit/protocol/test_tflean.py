"""``tflean``: a plain small TF Serving ``:predict`` body parsed in one simdjson parse, or
declined (None) so that the usual path parses it; what it accepts gives the tensors (or
the error) the plain orjson parse gives, for every signature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings

from keepwarm.protocol import jsonio, tflean, tfserving
from keepwarm.signature import Signature
from unit.protocol.test_tfpieces import HOSTILE, SIGNATURES, WAYS, assert_same, bodies, outcome


def same_as_plain(body: bytes, max_depth: int = 64) -> bool:
    """Whether ``tflean`` took ``body``; if so, its request reads as the plain parse's."""
    lean = tflean.parse(body, max_depth)
    if lean is None:
        return False
    plain = tfserving._parse(body, max_depth, jsonio.loads(body, max_depth=max_depth))
    assert (lean.row_format, lean.signature_name) == (plain.row_format, plain.signature_name)
    for signature in SIGNATURES.values():
        assert_same(
            outcome(lambda s=signature: lean.inputs(s)),
            outcome(lambda s=signature: plain.inputs(s)),
        )
    return True


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_any_body_it_takes_reads_as_the_plain_parse(
    case: tuple[Any, Callable[[Any], bytes]],
) -> None:
    document, dumps = case
    same_as_plain(dumps(document))


@pytest.mark.parametrize("dumps", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(
    "document",
    [
        {"instances": np.random.default_rng(1).random((1, 784)).tolist()},
        {"instances": [[1, 2, 3], [4, 5, 6]], "signature_name": "serving_default"},
        {"inputs": [0.5, 1, 2]},
        {"instances": [7, 8]},
        {"inputs": [[-(2**63), 2**63 - 1]]},
        {"instances": [[1.5, 2**63], [-1, 0]]},  # a float first: floats for numpy
    ],
)
def test_plain_tensors_are_read_in_one_parse(document: Any, dumps: Callable[[Any], bytes]) -> None:
    assert same_as_plain(dumps(document))


DECLINED = {
    "named inputs": b'{"inputs": {"x": [1.5]}}',
    "named instances": b'{"instances": [{"x": [1.5]}]}',
    "both keys": b'{"instances": [1.5], "inputs": [1.5]}',
    "another key": b'{"instances": [1.5], "other": 1}',
    "a key twice": b'{"instances": [[1.5]], "instances": [1.5, 2.5]}',
    "NUL in a key": b'{"instances\\u0000": [2], "instances": [1.5]}',
    "signature_name not text": b'{"instances": [1.5], "signature_name": 3}',
    "null signature_name": b'{"instances": [1.5], "signature_name": null}',
    "null instances": b'{"instances": null}',
    "a number": b'{"instances": 1.5}',
    "empty": b'{"instances": []}',
    "an empty row": b'{"instances": [[]]}',
    "deeper rows": b'{"instances": [[[1.5]], [[2.5]]]}',
    "a hidden nested array": b'{"instances": [[1, [2]], [3, 4]]}',
    "a row of another length": b'{"instances": [[1, 2], [3]]}',
    "a number beside rows": b'{"instances": [[1, 2], 3]}',
    "booleans": b'{"instances": [true, false]}',
    "a boolean among numbers": b'{"instances": [1, true]}',
    "strings": b'{"instances": ["a"]}',
    "b64": b'{"instances": [{"b64": "AA=="}]}',
    "past int64 beside negatives": b'{"instances": [9223372036854775808, -1]}',
    "past 64 bits": b'{"instances": [100000000000000000000000]}',
    "NaN": b'{"instances": [NaN]}',
    "truncated": b'{"instances": [1.5, 2',
    "not an object": b"[1.5]",
    "a bracket in a string": b'{"instances": [1.5], "signature_name": "a["}',
}


@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_what_it_is_unsure_of_goes_the_usual_way(body: bytes) -> None:
    assert tflean.parse(body, 64) is None


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_tensors_are_declined_or_read_as_the_plain_parse(text: str) -> None:
    for key in ("instances", "inputs"):
        same_as_plain(f'{{"{key}": {text}}}'.encode())


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_a_depth_limit_under_the_tensors_goes_the_usual_way(max_depth: int) -> None:
    body = orjson.dumps({"instances": [[1.5, 2.5]]})  # the object, then two axes: 3 levels
    assert (tflean.parse(body, max_depth) is not None) == (max_depth >= 3)


def test_the_worker_gets_an_array_to_cast_not_python_numbers() -> None:
    x = np.random.default_rng(2).random((1, 784), dtype=np.float32)
    body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    lean = tflean.parse(body, 64)
    assert lean is not None and isinstance(lean.body["instances"], np.ndarray)
    signature: Signature = SIGNATURES["one float"]
    np.testing.assert_array_equal(lean.inputs(signature)["x"], x)

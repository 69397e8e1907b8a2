"""TF Serving REST codec: row and columnar formats, b64, outputs in the matching format."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import tfserving
from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype(np.float32)
ONE = Signature(inputs=(TensorSpec("x", F32, (None, 2)),), outputs=(TensorSpec("y", F32, None),))
TWO = Signature(
    inputs=(TensorSpec("a", F32, (None, 2)), TensorSpec("s", np.dtype(object), (None,))),
    outputs=(TensorSpec("y", F32, None),),
)


def parse(value: object) -> tfserving.PredictRequest:
    return tfserving.parse_predict(orjson.dumps(value))


def test_row_format_single_input() -> None:
    request = parse({"instances": [[1, 2], [3, 4]]})
    inputs = request.inputs(ONE)
    assert inputs["x"].dtype == F32 and inputs["x"].tolist() == [[1, 2], [3, 4]]
    out = orjson.loads(tfserving.encode_predict(request, {"y": np.array([[0.5], [1.0]], F32)}))
    assert out == {"predictions": [[0.5], [1.0]]}


def test_row_format_named_inputs_with_b64() -> None:
    encoded = base64.b64encode(b"\x00\xffbin").decode()
    request = parse(
        {
            "signature_name": "serving_default",
            "instances": [{"a": [1, 2], "s": {"b64": encoded}}, {"a": [3, 4], "s": "text"}],
        }
    )
    assert request.signature_name == "serving_default"
    inputs = request.inputs(TWO)
    assert inputs["s"].tolist() == [b"\x00\xffbin", b"text"]
    assert inputs["a"].shape == (2, 2)
    outputs = {"y": np.array([1.0, 2.0], F32), "label_bytes": np.array([b"\x01", b"ok"], object)}
    rows = orjson.loads(tfserving.encode_predict(request, outputs))["predictions"]
    assert rows == [
        {"y": 1.0, "label_bytes": {"b64": base64.b64encode(b"\x01").decode()}},
        {"y": 2.0, "label_bytes": {"b64": base64.b64encode(b"ok").decode()}},
    ]


def test_columnar_format() -> None:
    request = parse({"inputs": {"a": [[1, 2]], "s": ["x"]}})
    assert request.inputs(TWO)["a"].tolist() == [[1.0, 2.0]]
    out = orjson.loads(tfserving.encode_predict(request, {"y": np.array([[0.5]], F32)}))
    assert out == {"outputs": [[0.5]]}
    bare = parse({"inputs": [[1, 2]]})
    assert bare.inputs(ONE)["x"].shape == (1, 2)
    two = {"y": np.array([1.0], F32), "z": np.array([2], np.int64)}
    assert orjson.loads(tfserving.encode_predict(bare, two)) == {"outputs": {"y": [1.0], "z": [2]}}


@pytest.mark.parametrize(
    ("value", "signature", "message"),
    [
        ({"instances": [[1, 2]], "inputs": [[1, 2]]}, ONE, "exactly one of"),
        ({}, ONE, "exactly one of"),
        ({"instances": {"x": 1}}, ONE, "must be a list"),
        ({"instances": []}, ONE, "is empty"),
        ({"instances": [[1, 2], [3]]}, ONE, "rectangular"),
        ({"instances": [["a", "b"]]}, ONE, "got strings"),
        ({"instances": [{"a": [1, 2], "s": "x"}, {"a": [1, 2]}]}, TWO, "same inputs"),
        ({"instances": [{"x": [1, 2]}, [1, 2]]}, ONE, r"\[1\] is an array, not an object of"),
        ({"instances": [[None, 2]]}, ONE, "expected float32 values, got null"),
        ({"inputs": {"nope": [1]}}, TWO, "unknown input 'nope'"),
        ({"inputs": [[1, 2]]}, TWO, "takes 2 inputs"),
        ({"inputs": {"a": [[1, 2]], "s": [{"b64": "!!not base64"}]}}, TWO, "not valid base64"),
        ({"inputs": {"a": [[1, 2]], "s": [3]}}, TWO, "expected strings"),
        ({"instances": [[1, 2]], "signature_name": 3}, ONE, "must be a string"),
    ],
)
def test_bad_bodies(value: object, signature: Signature, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse(value).inputs(signature)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="deeper than 64"):
        tfserving.parse_predict(b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")


def test_row_outputs_of_different_batch_sizes_are_an_error() -> None:
    request = parse({"instances": [[1, 2]]})
    outputs = {"y": np.zeros(2, F32), "z": np.zeros(3, F32)}
    with pytest.raises(InvalidInputError, match="different batch sizes"):
        tfserving.encode_predict(request, outputs)


def test_metadata_and_status_shapes() -> None:
    meta = tfserving.model_metadata("m", 2, ONE)
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "2", "name": ""},
    ]
    assert sig["outputs"]["y"]["tensor_shape"]["unknown_rank"] is True
    status = tfserving.model_status([(1, "AVAILABLE", "")])
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_configuration_problem_is_an_error_of_every_version_shown() -> None:
    rows = [(1, "FAILED", "bad graph"), (2, "READY", "warmup skipped"), (3, "LOADING", "")]
    assert tfserving.version_states("m", rows, None) == [
        (3, "LOADING", ""),
        (2, "AVAILABLE", ""),
        (1, "END", "bad graph"),
    ]
    shown = tfserving.version_states("m", rows, None, "model.toml is invalid")
    assert shown == [
        (3, "LOADING", "model.toml is invalid"),
        (2, "AVAILABLE", "model.toml is invalid"),
        (1, "END", "bad graph; model.toml is invalid"),
    ]
    (row,) = tfserving.model_status(shown[1:2])["model_version_status"]
    assert row["status"] == {"error_code": "UNKNOWN", "error_message": "model.toml is invalid"}


def test_deep_text_nesting_past_the_first_element_is_refused_not_a_crash() -> None:
    text = Signature(inputs=(TensorSpec("s", np.dtype(object), None),), outputs=())
    deep = "[" * 900 + '"x"' + "]" * 900
    body = ('{"instances": ["a", ' + deep + "]}").encode()
    with pytest.raises(InvalidInputError, match="more than 64 dimensions"):
        tfserving.parse_predict(body).inputs(text)

"""TF Serving's JSON conformance through a real server: ``NaN``, ``Infinity`` and
``-Infinity`` in request bodies (row and columnar, small and large) reach the model as
those values, and come back as those literals (Python's ``json`` reads them); the KServe
v2 API the same, as Triton's, round-tripped by ``tritonclient.http``; ``b64`` without its
padding; an integer past 64 bits refused as out of range."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support import onnx_graphs
from support.server_process import ServerProcess

MAX_BODY = 1 << 20
ODD = [[math.nan, math.inf, -math.inf, 1.5], [-0.0, math.nan, 2.0, -math.inf]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("literals") / "models"
    onnx_graphs.identity(
        root / "ident" / "1" / "model.onnx", onnx_graphs.TensorProto.FLOAT, ["N", 4]
    )
    onnx_graphs.two_batched_inputs(root / "pair" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def served(root: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(root, "--max-body-bytes", str(MAX_BODY))
    yield process
    process.stop()


def direct(root: Path, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model called in this process: what the served answers must equal."""
    import keepwarm

    return dict(keepwarm.load(str(root / name)).predict(inputs))


def post(served: ServerProcess, model: str, body: bytes) -> Any:
    answer = served.post(f"/v1/models/{model}:predict", body)
    assert answer.status_code == 200, answer.text
    return json.loads(answer.content)  # Python's json reads NaN and Infinity


def same(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=want.dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN equals NaN, signs of infinities count


def test_row_and_columnar_literals_reach_the_model_and_come_back(
    served: ServerProcess, root: Path
) -> None:
    x = np.array(ODD, dtype=np.float32)
    want = direct(root, "ident", {"x": x})["y"]
    assert np.isnan(want).sum() == 2 and np.isinf(want).sum() == 3  # passed through
    for document, key in (
        ({"instances": ODD}, "predictions"),
        ({"inputs": ODD}, "outputs"),
        ({"inputs": {"x": ODD}}, "outputs"),
    ):
        body = json.dumps(document).encode()
        assert b"NaN" in body and b"-Infinity" in body
        answer = served.post("/v1/models/ident:predict", body)
        assert answer.status_code == 200, answer.text
        assert b"NaN" in answer.content and b"-Infinity" in answer.content
        assert b"null" not in answer.content
        same(json.loads(answer.content)[key], want)


def test_named_inputs_with_literals_in_both_formats(served: ServerProcess, root: Path) -> None:
    a, b = np.array(ODD, dtype=np.float32), np.array([3, -4], dtype=np.int64)
    want = direct(root, "pair", {"a": a, "b": b})
    rows = [{"a": row, "b": int(v)} for row, v in zip(ODD, b, strict=True)]
    predictions = post(served, "pair", json.dumps({"instances": rows}).encode())["predictions"]
    same([row["a_out"] for row in predictions], want["a_out"])
    same([row["b_out"] for row in predictions], want["b_out"])
    body = json.dumps({"inputs": {"a": ODD, "b": b.tolist()}}).encode()
    outputs = post(served, "pair", body)["outputs"]
    same(outputs["a_out"], want["a_out"])
    same(outputs["b_out"], want["b_out"])


def test_a_large_body_with_literals_and_the_limits(served: ServerProcess, root: Path) -> None:
    """Past 64 KiB (decoded in pieces): the same values; the body and depth limits hold."""
    x = np.random.default_rng(3).random((6000, 4)).astype(np.float32)
    x[::97, 1], x[5, 2], x[5999, 3] = math.nan, math.inf, -math.inf
    want = direct(root, "ident", {"x": x})["y"]
    body = json.dumps({"instances": x.tolist()}).encode()
    assert 64 * 1024 < len(body) < MAX_BODY
    same(post(served, "ident", body)["predictions"], want)
    too_large = json.dumps({"instances": np.tile(x, (3, 1)).tolist()}).encode()
    assert len(too_large) > MAX_BODY
    assert served.post("/v1/models/ident:predict", too_large).status_code == 413
    deep = b'{"instances": ' + b"[" * 100 + b"NaN" + b"]" * 100 + b"}"
    answer = served.post("/v1/models/ident:predict", deep)
    assert answer.status_code == 400 and "nested deeper than" in answer.json()["error"]


def test_an_integer_past_64_bits_is_out_of_range(served: ServerProcess) -> None:
    body = b'{"inputs": {"a": [[1, 2, 3, 4]], "b": [18446744073709551616]}}'
    answer = served.post("/v1/models/pair:predict", body)
    assert answer.status_code == 400
    assert "out of range for int64" in answer.json()["error"], answer.text


def test_tritonclient_http_round_trips_nan_and_infinities(served: ServerProcess) -> None:
    """As with Triton, whose JSON writer and parser take the literals: tritonclient.http
    sends NaN and infinities in JSON (binary_data=False) and parses them in answers.
    The v2 API refused the request as malformed JSON and answered ``null`` (NaN for
    tritonclient: an infinity lost)."""
    import tritonclient.http as httpclient

    x = np.array(ODD, dtype=np.float32)
    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        for binary in (False, True):
            sent = httpclient.InferInput("x", list(x.shape), "FP32")
            sent.set_data_from_numpy(x, binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("y", binary_data=binary)]
            result = client.infer("ident", [sent], outputs=wanted)
            same(result.as_numpy("y"), x)
            if not binary:
                assert b"-Infinity" in json.dumps(result.get_response()).encode()
    finally:
        client.close()
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], '
    answer = served.post("/v2/models/ident/infer", body + b'"data": [NaN, 1, 2, Infinity]}]}')
    assert answer.status_code == 200, answer.text
    assert b'"data":[NaN,1.0,2.0,Infinity]' in answer.content


def test_b64_without_its_padding(server: ServerProcess) -> None:
    """As TF Serving reads it (abseil's decoder: padding optional, but right if given)."""
    body = {"instances": [{"b64": "YWI"}, {"b64": "YQ"}, {"b64": "YWJj"}]}
    answer = server.post("/v1/models/text:predict", body)
    assert answer.status_code == 200, answer.text
    echoed = [row["echo_bytes"]["b64"] for row in answer.json()["predictions"]]
    assert echoed == ["YWI=", "YQ==", "YWJj"]
    answer = server.post("/v1/models/text:predict", {"instances": [{"b64": "YQ="}]})
    assert answer.status_code == 400 and "base64" in answer.json()["error"]

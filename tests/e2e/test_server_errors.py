"""Each bad request gets its documented status and a message naming the problem; the
server keeps serving; no error body names the repository's absolute path."""

from __future__ import annotations

import gzip
import socket
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from support.server_process import ServerProcess

GOOD_ROW = [0.5] * 784
WITH_TRUE = [True, *GOOD_ROW[1:]]  # JSON true first
WITH_FALSE = [*GOOD_ROW[1:], False]  # JSON false last


def v2(name: str = "image", datatype: str = "FP32", shape: Any = (1, 784), data: Any = None) -> Any:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatype,
                "shape": list(shape),
                "data": GOOD_ROW if data is None else data,
            }
        ]
    }


DEEP = b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
LIMIT = 64 * 1024 * 1024
# (method, path, body, headers, status, words the message must contain)
CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("POST", "/v2/models/mlp/infer", v2(datatype="INT32", data=[1] * 784), {}, 400,
     "expected dtype float32, got int32"),
    ("POST", "/v2/models/mlp/infer", v2(shape=(1, 2), data=[1.0, 2.0]), {}, 400,
     "expected shape"),
    ("POST", "/v1/models/mlp:predict", {"instances": [[1.0, 2.0]]}, {}, 400, "expected shape"),
    ("POST", "/v1/models/mlp:predict", {"instances": [["a"] * 784]}, {}, 400, "got strings"),
    # JSON's true and false in a numeric tensor: refused, not taken as 1 and 0 (on the
    # fast decoders' bodies, and on the general ones': nested, named, all booleans).
    ("POST", "/v2/models/mlp/infer", v2(data=WITH_TRUE), {}, 400,
     "input 'image': expected float32 values, got a boolean"),
    ("POST", "/v2/models/mlp/infer", v2(data=[WITH_FALSE]), {}, 400,
     "input 'image': expected float32 values, got a boolean"),
    ("POST", "/v2/models/mlp/infer", v2(data=[True] * 784), {}, 400,
     "input 'image': expected float32 values, got booleans"),
    ("POST", "/v2/models/mlp/infer", v2(datatype="INT32", data=[0] * 783 + [True]), {}, 400,
     "input 'image': expected int32 values, got a boolean"),
    ("POST", "/v1/models/mlp:predict", {"instances": [WITH_FALSE]}, {}, 400,
     "input 'image': expected float32 values, got a boolean"),
    ("POST", "/v1/models/mlp:predict", {"instances": [[False] * 784]}, {}, 400,
     "input 'image': expected float32 values, got booleans"),
    ("POST", "/v1/models/mlp:predict", {"inputs": {"image": [WITH_TRUE]}}, {}, 400,
     "input 'image': expected float32 values, got a boolean"),
    ("POST", "/v1/models/mlp:predict", {"instances": [{"image": WITH_FALSE}]}, {},
     400, "input 'image': expected float32 values, got a boolean"),
    ("POST", "/v2/models/mlp/infer", v2(name="x"), {}, 400, "missing ['image']"),
    ("POST", "/v2/models/mlp/infer", v2(datatype="FP99"), {}, 400, "unknown datatype 'FP99'"),
    ("POST", "/v2/models/mlp/infer", v2(shape=(2**40, 2**40, 2**40)), {}, 400, "too many"),
    ("POST", "/v2/models/mlp/infer", v2(shape=(2, 784)), {}, 400, "needs 1568 elements"),
    ("POST", "/v2/models/mlp/infer", v2(shape=(2**32, 2**32, 0), data=[]), {}, 400, "too many"),
    ("POST", "/v2/models/mlp/infer", {**v2(), "parameters": {"binary_data_output": "yes"}}, {},
     400, "binary_data_output must be true or false, got 'yes'"),
    ("GET", "/v2/models/mlp/versions/7/stats", None, {}, 404, "model 'mlp' has no version 7"),
    ("POST", "/v2/models/mlp/infer", v2(), {"Inference-Header-Content-Length": "-1"}, 400,
     "a number of bytes, at least 0"),
    ("POST", "/v2/models/nope/infer", v2(), {}, 404, "model 'nope' not found"),
    ("POST", "/v1/models/nope:predict", {"instances": [GOOD_ROW]}, {}, 404, "'nope' not found"),
    ("POST", "/v2/models/mlp/versions/7/infer", v2(), {}, 404, "version 7"),
    ("POST", "/v1/models/mlp/versions/7:predict", {"instances": [GOOD_ROW]}, {}, 404,
     "version 7"),
    ("POST", "/v1/models/mlp/labels/canary:predict", {"instances": [GOOD_ROW]}, {}, 404,
     "canary"),
    ("POST", "/v1/models/mlp:predict", {"signature_name": "other", "instances": [GOOD_ROW]}, {},
     404, "signature 'other' is not served"),
    ("POST", "/v1/models/mlp:predict", b'{"instances": [1,', {}, 400, "malformed JSON"),
    ("POST", "/v2/models/mlp/infer", b"not json", {}, 400, "malformed JSON"),
    ("POST", "/v1/models/mlp:predict", DEEP, {}, 400, "nested deeper than 64"),
    ("POST", "/v2/models/mlp/infer", b"x" * (LIMIT + 1), {}, 413, "over the limit"),
    ("POST", "/v2/models/mlp/infer", gzip.compress(b" " * (LIMIT + 1)),
     {"Content-Encoding": "gzip"}, 413, "after decompression"),
    ("POST", "/v2/models/mlp/infer", b"garbage", {"Content-Encoding": "deflate"}, 400,
     "not valid compressed data"),
    ("POST", "/v2/models/mlp/infer", v2(), {"Content-Encoding": "br"}, 400, "not supported"),
    ("POST", "/v2/models/mlp/infer", v2(), {"Keepwarm-Timeout-Ms": "soon"}, 400,
     "Keepwarm-Timeout-Ms"),
    ("POST", "/v2/models/mlp/infer", v2(), {"Inference-Header-Content-Length": "99999"}, 400,
     "outside the body"),
    ("POST", "/v2/models/mlp/infer", {**v2(), "parameters": {"timeout": 1}}, {}, 504,
     "deadline"),
    ("POST", "/v1/models/mlp:predict", {"instances": [GOOD_ROW]},
     {"Keepwarm-Timeout-Ms": "0.001"}, 504, "deadline"),
    ("POST", "/v2/models/mlp/infer", {**v2(), "parameters": {"timeout": -5}}, {}, 400,
     "parameters.timeout"),
    ("GET", "/v2/models/%2E%2E/ready", None, {}, 400, "invalid model name '..'"),
    ("POST", "/v2/repository/index", {"ready": "yes"}, {}, 400, "'ready' must be true or false"),
    ("POST", "/v2/models/a%2Fb/infer", v2(), {}, 400, "invalid model name 'a/b'"),
    ("POST", "/v1/models/..%2F..%2Fetc:predict", {"instances": [1]}, {}, 400,
     "invalid model name"),
    ("POST", "/v1/models/mlp/labels/..:predict", {"instances": [1]}, {}, 400,
     "invalid version label"),
    ("GET", "/v2/models/mlp/versions/x1", None, {}, 400, "positive integers"),
    # Digits beyond ASCII (superscript, Arabic-Indic): not a version, nor a label.
    ("GET", "/v2/models/mlp/versions/%C2%B2", None, {}, 400, "positive integers"),
    ("POST", "/v2/models/mlp/versions/%D9%A1/infer", v2(), {}, 400, "positive integers"),
    ("GET", "/v1/models/mlp/versions/%C2%B2", None, {}, 400, "positive integers"),
    ("POST", "/v1/models/mlp/versions/%D9%A1:predict", {"instances": [GOOD_ROW]}, {}, 400,
     "positive integers"),
    ("POST", "/v2/models/mlp/infer", v2(), {"Inference-Header-Content-Length": "\u00b2"}, 400,
     "not a number"),
    ("POST", "/v2/models/broken/infer", v2(), {}, 503, "broken"),
    ("POST", "/v2/models/empty/infer", v2(), {}, 404, "no version"),
    ("GET", "/v2/models/mlp/infer", None, {}, 405, "not allowed"),
    ("GET", "/v3/anything", None, {}, 404, "no route"),
]  # fmt: skip


def send(server: ServerProcess, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if method == "GET":
        return server.get(path, headers=headers)
    return server.post(path, body, headers=headers)


@pytest.fixture(scope="module")
def answers(server: ServerProcess) -> list[tuple[int, str, Any]]:
    out = []
    for method, path, body, headers, _, _ in CASES:
        answer = send(server, method, path, body, headers)
        out.append((answer.status_code, answer.text, answer.headers))
    return out


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[1]}-{c[4]}" for c in CASES])
def test_bad_request_status_and_message(answers: list[tuple[int, str, Any]], case: int) -> None:
    status, text, headers = answers[case]
    _, _, _, _, want_status, words = CASES[case]
    assert status == want_status, text
    message = orjson.loads(text)["error"]
    assert words in message
    if status == 503:
        assert headers["Retry-After"].isdigit()


def test_server_keeps_serving_after_bad_requests(
    answers: list[tuple[int, str, Any]], server: ServerProcess
) -> None:
    assert len(answers) == len(CASES)
    good = server.post("/v1/models/mlp:predict", {"instances": [GOOD_ROW]})
    assert good.status_code == 200, good.text
    assert server.get("/v2/health/ready").status_code == 200


def test_no_error_body_names_the_repository_path(
    answers: list[tuple[int, str, Any]], server: ServerProcess, served_root: Path
) -> None:
    bodies = [text for status, text, _ in answers if status >= 400]
    bodies.append(server.get("/v1/models/broken").text)  # a FAILED load's reason
    bodies.append(orjson.dumps(server.post("/v2/repository/index").json()).decode())
    # The FAILED model's reason names a file, relative to the root.
    assert any("broken/1" in body for body in bodies)
    for spelling in {str(served_root), str(served_root.resolve())}:
        leaked = [body for body in bodies if spelling in body]
        assert not leaked, leaked


def test_deflate_and_gzip_bodies_are_accepted(server: ServerProcess) -> None:
    body = orjson.dumps(v2())
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        answer = server.post("/v2/models/mlp/infer", data, headers={"Content-Encoding": encoding})
        assert answer.status_code == 200, answer.text


def test_bytes_that_are_not_http_are_a_json_400_and_a_json_log_line(server: ServerProcess) -> None:
    """The parser's refusal: answered as every error, and logged as every record is (one
    JSON line), not as uvicorn's own logging configuration prints it."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"FOO / HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert "not valid HTTP/1.1" in orjson.loads(body)["error"]
    line = server.wait_for_line("Invalid HTTP request received")
    assert orjson.loads(line)["logger"] == "uvicorn.error", line

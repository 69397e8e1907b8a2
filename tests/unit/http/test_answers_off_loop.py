"""A request queued from the event loop for its batch (a batched model gathering a batch)
has its answer encoded by the batch thread that runs it, as a worker thread encodes it
with batching off: the loop only writes the bytes (v2 JSON and binary, TF Serving). An
answer that cannot be encoded there is encoded again on the loop, whose error is the one
the client gets, as a worker thread's would be."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from keepwarm import service_infer
from keepwarm.errors import InvalidInputError
from keepwarm.http import HttpApp
from keepwarm.http.messages import Message
from keepwarm.protocol import tfserving, v2
from support.echo_app import always_gathering, echo_app

V2 = "/v2/models/echo/infer"
TF = "/v1/models/echo:predict"
ROWS = [[0.5] * 4, [0.5] * 4]
V2_JSON = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                                    "data": [0.5] * 8}]})  # fmt: skip
TF_JSON = orjson.dumps({"instances": ROWS})


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HttpApp, list[str]]]:
    """The app over a batched "echo", and the threads that encoded an answer; the batcher
    is always gathering (each request is queued from the loop)."""
    threads: list[str] = []
    always_gathering(monkeypatch)
    for module, name in ((v2, "encode_response"), (tfserving, "encode_predict")):
        encode = getattr(module, name)

        def recorded(*args: Any, __encode: Any = encode, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return __encode(*args, **kwargs)

        monkeypatch.setattr(module, name, recorded)
    with echo_app(tmp_path, "[batching]\nmax_batch_size = 8\n") as app:
        yield app, threads


def post(app: HttpApp, path: str, body: bytes) -> Any:
    """POST ``body`` to ``path``: the status and the body's bytes."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [(b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_queued_requests_answers_are_encoded_on_the_batch_thread(
    served: tuple[HttpApp, list[str]],
) -> None:
    """v2 JSON, v2 with a binary output, and TF Serving: each answered right, encoded off
    the event loop (the loop is this thread)."""
    app, encoders = served
    status, body = post(app, V2, V2_JSON)
    assert status == 200 and orjson.loads(body)["outputs"][0]["data"] == [1.0, 1.0]
    binary = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                                       "data": [0.5] * 8}],
                           "outputs": [{"name": "version",
                                        "parameters": {"binary_data": True}}]})  # fmt: skip
    status, body = post(app, V2, binary)
    assert status == 200 and body.endswith(np.ones(2, np.float32).tobytes())
    status, body = post(app, TF, TF_JSON)
    assert (status, orjson.loads(body)) == (200, {"predictions": [1.0, 1.0]})
    loop = threading.current_thread().name
    assert len(encoders) == 3 and loop not in encoders


def test_an_answer_that_fails_to_encode_there_gets_the_loops_error(
    served: tuple[HttpApp, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder raises off the loop only: the loop encodes the answer again, right.
    It raises everywhere: the client gets the error a worker thread's encoding gives."""
    app, _ = served
    loop = threading.current_thread().name
    encode = v2.encode_response

    def not_there(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name != loop:
            raise InvalidInputError("cannot encode on this thread")
        return encode(*args, **kwargs)

    monkeypatch.setattr(v2, "encode_response", not_there)
    status, body = post(app, V2, V2_JSON)
    assert status == 200 and orjson.loads(body)["outputs"][0]["data"] == [1.0, 1.0]

    def never(*args: Any, **kwargs: Any) -> Any:
        raise InvalidInputError("this answer cannot be encoded")

    monkeypatch.setattr(v2, "encode_response", never)
    queued = post(app, V2, V2_JSON)
    monkeypatch.setattr(service_infer, "gathering", lambda model: False)
    assert queued == post(app, V2, V2_JSON)  # as a worker thread's encoding fails
    assert queued[0] == 400 and b"this answer cannot be encoded" in queued[1]

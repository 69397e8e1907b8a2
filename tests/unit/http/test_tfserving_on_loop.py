"""A small TF Serving ``:predict`` body read whole in one parse (``tflean``) is built
against the signature on the event loop when a batched model is gathering a batch, so
that the loop queues it there (as a v2 JSON body), once; any other body, and a body
whose tensors the signature refuses, goes to a worker thread as before, with the same
answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from keepwarm import service_infer
from keepwarm.http import HttpApp
from keepwarm.http.messages import INLINE_DECODE_BYTES, Message
from keepwarm.protocol import tfserving
from support.echo_app import always_gathering, echo_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[HttpApp]:
    with echo_app(tmp_path, "[batching]\nmax_batch_size = 8\n") as app:
        yield app


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads that built a request's tensors; the batcher is always gathering."""
    threads: list[str] = []
    always_gathering(monkeypatch)
    inputs = tfserving.PredictRequest.inputs

    def recorded(self: tfserving.PredictRequest, signature: Any) -> Any:
        threads.append(threading.current_thread().name)
        return inputs(self, signature)

    monkeypatch.setattr(tfserving.PredictRequest, "inputs", recorded)
    return threads


def predict(app: HttpApp, body: bytes) -> tuple[int, Any]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    path = "/v1/models/echo:predict"
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [(b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def rows(count: int) -> list[list[float]]:
    return [[0.5] * 4 for _ in range(count)]


def test_a_small_body_is_built_once_on_the_loop_and_queued_there(
    app: HttpApp, built: list[str]
) -> None:
    status, answer = predict(app, orjson.dumps({"instances": rows(3)}))
    assert (status, answer) == (200, {"predictions": [1.0, 1.0, 1.0]})
    assert built == [threading.main_thread().name]


def test_a_large_body_is_built_on_a_worker(app: HttpApp, built: list[str]) -> None:
    count = INLINE_DECODE_BYTES // 16 + 1  # "[0.5,0.5,0.5,0.5]," per row: past the size
    status, answer = predict(app, orjson.dumps({"instances": rows(count)}))
    assert (status, answer) == (200, {"predictions": [1.0] * count})
    assert built and threading.main_thread().name not in built


@pytest.mark.parametrize(
    "document",
    [
        {"instances": rows(2), "signature_name": "other"},
        {"instances": [[0.5] * 3]},
        {"inputs": [[1, 2]] * 2},
    ],
)
def test_tensors_the_signature_refuses_get_the_workers_answer(
    app: HttpApp, built: list[str], document: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gathering = predict(app, orjson.dumps(document))
    assert gathering[0] in (400, 404)
    monkeypatch.setattr(service_infer, "gathering", lambda model: False)
    assert predict(app, orjson.dumps(document)) == gathering  # as a lone request's

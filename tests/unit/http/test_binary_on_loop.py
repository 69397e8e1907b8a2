"""A v2 body of binary numeric tensors is decoded on the event loop, however large: its
tensors are views of the body, so a thread hop would cost more than the decode (issue 9:
a 602 kB MobileNetV2 image hopped to a thread to decode, then to another to queue).
A large JSON body is still parsed on a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from keepwarm import signature
from keepwarm.http import HttpApp
from keepwarm.http.messages import INLINE_DECODE_BYTES, Message
from support.echo_app import always_gathering, echo_app

ROWS = INLINE_DECODE_BYTES // 16 + 1  # float32 rows of 4: more than INLINE_DECODE_BYTES


class Recording(ThreadPoolExecutor):
    """The loop's default executor, counting the jobs it is given."""

    jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        Recording.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(params=["", "[batching]\nmax_batch_size = 8\n"], ids=["plain", "batched"])
def app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HttpApp]:
    with echo_app(tmp_path, request.param) as app:
        yield app


def _infer(app: HttpApp, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, int, Any]:
    """POST ``body`` to echo's v2 infer: the status, the default executor's jobs, the body."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(Recording(2))
        path = "/v2/models/echo/infer"
        scope: dict[str, Any] = {
            "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [(b"content-length", str(len(body)).encode()),
                                              *headers],
        }  # fmt: skip
        await app(scope, receive, send)

    Recording.jobs = 0
    asyncio.run(scenario())
    return sent[0]["status"], Recording.jobs, orjson.loads(sent[1]["body"])


def test_a_large_binary_tensor_is_decoded_on_the_loop(app: HttpApp) -> None:
    x = np.ones((ROWS, 4), dtype=np.float32)
    tensor = {"name": "x", "datatype": "FP32", "shape": [ROWS, 4]}
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]})
    length = [(b"inference-header-content-length", str(len(header)).encode())]
    status, jobs, answer = _infer(app, header + x.tobytes(), length)
    assert (status, jobs) == (200, 0)
    assert answer["outputs"][0]["data"] == [1.0] * ROWS


def test_a_large_json_body_is_parsed_on_a_thread(app: HttpApp) -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [ROWS, 4], "data": [1.0] * (ROWS * 4)}
    status, jobs, answer = _infer(app, orjson.dumps({"inputs": [tensor]}), [])
    assert (status, jobs) == (200, 1)
    assert answer["outputs"][0]["data"] == [1.0] * ROWS


def test_a_large_tensor_to_convert_is_converted_on_a_thread(
    app: HttpApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FP64 sent to an FP32 input: the conversion (O(size)) never runs on the event loop,
    even when the batcher is gathering a batch (the request would be queued from the loop)."""
    threads: list[str] = []
    always_gathering(monkeypatch)
    convert = signature._coerce_one

    def recorded(spec: Any, value: Any) -> Any:
        threads.append(threading.current_thread().name)
        return convert(spec, value)

    monkeypatch.setattr(signature, "_coerce_one", recorded)
    x = np.ones((ROWS, 4), dtype=np.float64)
    tensor = {"name": "x", "datatype": "FP64", "shape": [ROWS, 4]}
    header = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]})
    length = [(b"inference-header-content-length", str(len(header)).encode())]
    status, _, answer = _infer(app, header + x.tobytes(), length)
    assert status == 200
    assert answer["outputs"][0]["data"] == [1.0] * ROWS
    assert threads and threading.main_thread().name not in threads

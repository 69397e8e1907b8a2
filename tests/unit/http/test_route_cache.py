"""The app remembers resolved paths (route, checked names): a path seen before answers as
the first time, names are still checked, escapes still decoded, and the memory is bounded.
The repository is empty: a well-formed name is routed, then not found (404)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from keepwarm.http import HttpApp
from keepwarm.http.app import RESOLVED_PATHS


def call(app: HttpApp, method: str, raw_path: bytes) -> tuple[int, Any]:
    """One request through the ASGI app: its status and JSON body."""
    sent = call_messages(app, method, raw_path)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def call_messages(app: HttpApp, method: str, raw_path: bytes) -> list[dict[str, Any]]:
    """One request through the ASGI app: the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = raw_path.split(b"?")[0].decode("latin-1")
    scope = {"type": "http", "method": method, "path": path, "raw_path": raw_path,
             "query_string": b"", "headers": []}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent


def missing(name: str) -> dict[str, str]:
    return {"error": f"model {name!r} not found in the repository"}


@pytest.mark.parametrize(
    ("raw_path", "status", "said"),
    [
        (b"/v2/models/a%2Fb/ready", 400, "invalid model name 'a/b'"),
        (b"/v2/models/%2E%2E/ready", 400, "invalid model name '..'"),
        (b"/v2/models/..%2F..%2Fetc/ready", 400, "invalid model name '../../etc'"),
        (b"/v1/models/m/labels/..%2Fx", 400, "invalid version label '../x'"),
        (b"/v2/models/m/versions/x1/ready", 400, "versions are positive integers"),
        (b"/v2/models/%ff/ready", 400, "not valid UTF-8"),
        (b"/v2/nothing/here", 404, "no route for GET"),
    ],
)
def test_a_refused_path_is_refused_every_time(
    app: HttpApp, raw_path: bytes, status: int, said: str
) -> None:
    for _ in range(3):
        got, body = call(app, "GET", raw_path)
        assert got == status and said in body["error"]


def test_a_path_for_another_method_is_405_every_time(app: HttpApp) -> None:
    for _ in range(3):
        assert call(app, "POST", b"/v2/models/m/ready")[0] == 405
    assert call(app, "GET", b"/v2/models/m/ready") == (404, missing("m"))


def test_a_405_names_the_methods_the_path_takes(app: HttpApp) -> None:
    """RFC 9110: a 405 carries ``Allow`` (HEAD with GET: the app answers it)."""
    for method, path, allowed in (
        ("POST", b"/v2/models/m/ready", b"GET, HEAD"),
        ("OPTIONS", b"/v2/models/m/infer", b"POST"),
        ("DELETE", b"/v1/models/m:predict", b"POST"),
    ):
        sent = call_messages(app, method, path)
        assert sent[0]["status"] == 405
        assert dict(sent[0]["headers"]).get(b"allow") == allowed
        assert f"method {method} is not allowed" in orjson.loads(sent[1]["body"])["error"]


def test_escaped_and_plain_spellings_name_the_same_model_each_time(app: HttpApp) -> None:
    for _ in range(2):
        assert call(app, "GET", b"/v2/models/ml%70/ready") == (404, missing("mlp"))
        assert call(app, "GET", b"/v2/models/mlp/ready") == (404, missing("mlp"))
        assert call(app, "GET", b"/v2/models/mlq/ready") == (404, missing("mlq"))


def test_the_memory_of_paths_is_bounded(app: HttpApp) -> None:
    for i in range(RESOLVED_PATHS + 5):
        assert call(app, "GET", f"/v2/models/m{i}/ready".encode()) == (404, missing(f"m{i}"))
        assert app.resolved_paths <= RESOLVED_PATHS
    assert app.resolved_paths < RESOLVED_PATHS  # emptied once full, then refilled
    assert call(app, "GET", b"/v2/models/m0/ready") == (404, missing("m0"))

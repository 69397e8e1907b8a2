"""The ASGI app: TF Serving REST and KServe v2 routes on one port, ``/metrics`` and
``/openapi.json``. Errors become status codes here, in ``error_response``, and nowhere else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keepwarm.errors import (
    InternalError,
    InvalidInputError,
    KeepwarmError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.http.messages import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    answer_and_close,
    body_left,
    error_response,
)
from keepwarm.http.router import Handler, Route, Router
from keepwarm.http.tfserving import TfServingRoutes
from keepwarm.http.v2 import V2Routes
from keepwarm.service import RETRY_AFTER_SECONDS, InferenceService
from keepwarm.service_names import check_name

log = logging.getLogger("keepwarm.http")
OPENAPI = Path(__file__).with_name("openapi.json")
#: How many resolved paths are kept (all are dropped when full: clients' paths cannot
#: grow it without bound).
RESOLVED_PATHS = 1024
#: An answer given on a request's headers alone: status, header fields, body.
EarlyAnswer = tuple[int, list[tuple[bytes, bytes]], bytes]


class HttpApp:
    """``HttpApp(service, max_body_bytes=..., max_json_depth=...)`` is an ASGI callable."""

    def __init__(
        self, service: InferenceService, *, max_body_bytes: int, max_json_depth: int
    ) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        routes: list[Route] = [
            Route("GET", "/metrics", self.metrics, "server"),
            Route("GET", "/openapi.json", self.openapi, "server"),
        ]
        tfserving = TfServingRoutes(service, max_json_depth=max_json_depth)
        v2 = V2Routes(service, max_json_depth=max_json_depth)
        routes += tfserving.routes() + v2.routes()
        self.router = Router(routes)
        # the handlers that refuse a request for a full queue before reading its body
        self._refusing = frozenset((tfserving.predict, v2.infer))
        # (method, raw path) -> its route and checked parameters: the hot path skips the
        # split, the percent-decoding, the match and the name checks of a path seen before.
        self._resolved: dict[tuple[str, bytes], tuple[Route, dict[str, str]]] = {}

    @property
    def resolved_paths(self) -> int:
        """How many resolved paths are remembered (at most ``RESOLVED_PATHS``)."""
        return len(self._resolved)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request: Request | None = None
        try:
            found = self._route(scope, receive)
        except Exception as exc:
            response = _failed(exc)
        else:
            if isinstance(found, Response):
                response = found
            else:
                handler, request = found
                response = await self.respond(handler, request)
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        body = b"" if scope["method"] == "HEAD" else response.body
        if request is not None and request.leaves_body():  # see DROP_BODY_BYTES
            headers.append((b"connection", b"close"))
            await answer_and_close(send, start, body)
            return
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def respond(self, handler: Handler, request: Request) -> Response:
        """``handler``'s answer to ``request``, an error mapped (``error_response``)."""
        try:
            return await handler(request)
        except Exception as exc:
            return _failed(exc)
        except asyncio.CancelledError:
            if not self.service.shutting_down:
                raise
            # uvicorn cancels what still runs once its shutdown's grace has passed (after
            # the drain timeout): the request gets an answer that says so, not a bare 500
            # (uvicorn's) or a closed connection (the lean path's).
            return _failed(UnavailableError(SHUT_DOWN_UNANSWERED))

    def lean(self, raw_path: bytes) -> tuple[Handler, dict[str, str]] | None:
        """The handler and parameters of a POST to ``raw_path`` when it is an inference
        route resolved before, which may take the lean path (``http/lean.py``)."""
        found = self._resolved.get(("POST", raw_path))
        if found is None or found[0].handler not in self._refusing:
            return None
        return found[0].handler, found[1]

    def early_answer(self, scope: Mapping[str, Any]) -> EarlyAnswer | None:
        """The answer to a request on its headers alone, which the protocol writes as it
        parses them, with no task made for the request (``http/protocol.py``): the 503 of a
        request to an inference route whose model's queue is full and whose body is large
        or of unknown length (the connection closes unread, as ``answer_and_close`` does).
        None otherwise: the request goes to its handler, which refuses a small body itself
        (read and dropped: its connection kept), and checks a path not seen before.

        A refusal through the handler waits for the loop to start the request's task: in
        the overload cell (``bench/overload_segments.py``) the headers' parse to the 503
        written took 0.4 ms at p50 and 9-17 ms at p99, one of the loop's turns, on top of
        the turns that accepted the connection and read its bytes. ``bench/overload_ab.py``
        (120 req/s offered, two runs of 3 rounds each, main and this alternated, machine
        load 3-3.5): the server's own refusal p99 7-21 ms -> 0.5-2.8 ms; the probe's 503
        p99 0.70x and the load client's 0.53x (geometric means of the six paired rounds,
        better in four: rounds swung 34-594 ms), served req/s medians 25.1 and 24.7."""
        found = self.lean(scope.get("raw_path") or b"") if scope["method"] == "POST" else None
        if found is None:
            return None
        service = self.service
        if service.shutting_down or not body_left(dict(scope["headers"])):
            return None
        name = found[1]["model"]
        began = time.perf_counter()
        try:
            service.refuse_when_overloaded(name)  # on the loop, no task: no place kept
        except UnavailableError as exc:
            service.metrics.refused(name, time.perf_counter() - began)
            response = error_response(exc, RETRY_AFTER_SECONDS)
            headers = [
                (b"content-type", response.content_type),
                (b"content-length", b"%d" % len(response.body)),
                *response.headers,
            ]
            return response.status, headers, response.body
        return None

    def _route(self, scope: Scope, receive: Receive) -> tuple[Handler, Request] | Response:
        """The request's handler and the request, or the answer when it has none."""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        key = (scope["method"], raw_path)
        found = self._resolved.get(key)
        if found is None:
            resolved = self._resolve(scope, raw_path)
            if isinstance(resolved, Response):
                return resolved
            found = resolved
            if len(self._resolved) >= RESOLVED_PATHS:
                self._resolved.clear()
            self._resolved[key] = found
        route, params = found
        return route.handler, Request(scope, receive, dict(params), self.max_body_bytes)

    def _resolve(self, scope: Scope, raw_path: bytes) -> tuple[Route, dict[str, str]] | Response:
        """The route of ``raw_path`` and its parameters, names checked (a bad one raises);
        a 405 response when the path exists for another method only."""
        try:
            route, params, other = self.router.match(scope["method"], raw_path.split(b"?", 1)[0])
        except UnicodeDecodeError:
            raise InvalidInputError("the path is not valid UTF-8 after percent-decoding") from None
        if route is None:
            if other:
                refused = error_response(
                    InvalidInputError(f"method {scope['method']} is not allowed here"), 0
                ).with_status(405)
                refused.headers.append((b"allow", ", ".join(other).encode()))
                return refused
            raise ModelNotFoundError(f"no route for {scope['method']} {scope['path']}")
        for key in ("model", "label"):
            if key in params:
                check_name(params[key], "model name" if key == "model" else "version label")
        version = params.get("version")
        if version is not None and not (version.isascii() and version.isdigit()):
            raise InvalidInputError(
                f"version {version!r}: versions are positive integers (labels: /labels/NAME)"
            )
        return route, params

    async def metrics(self, request: Request) -> Response:
        metrics = self.service.metrics
        body = await metrics.render_off_loop()
        if metrics.merge is not None:  # one process of several: the whole server's figures
            body = await metrics.merge(body)
        return Response(200, body, metrics.content_type.encode())

    async def openapi(self, request: Request) -> Response:
        return Response(200, OPENAPI.read_bytes())


#: A request still running when the server's shutdown ended (past the drain timeout).
SHUT_DOWN_UNANSWERED = (
    "the server shut down before this request was answered (it ran past the drain timeout)"
)


def _failed(exc: Exception) -> Response:
    """The answer to a request whose handling raised ``exc``."""
    if isinstance(exc, KeepwarmError):
        return error_response(exc, RETRY_AFTER_SECONDS)
    log.exception("a request failed", exc_info=exc)
    return error_response(
        InternalError("internal error; the server log has the details"), RETRY_AFTER_SECONDS
    )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

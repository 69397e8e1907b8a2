"""The ASGI app: TF Serving REST and KServe v2 routes on one port, ``/metrics`` and
``/openapi.json``. Errors become status codes here, in ``error_response``, and nowhere else."""

from __future__ import annotations

import logging
from pathlib import Path

from keepwarm.errors import InternalError, InvalidInputError, KeepwarmError, ModelNotFoundError
from keepwarm.http.messages import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    answer_and_close,
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
        routes += TfServingRoutes(service, max_json_depth=max_json_depth).routes()
        routes += V2Routes(service, max_json_depth=max_json_depth).routes()
        self.router = Router(routes)
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
            if isinstance(found, Response):
                response = found
            else:
                handler, request = found
                response = await handler(request)
        except KeepwarmError as exc:
            response = error_response(exc, RETRY_AFTER_SECONDS)
        except Exception:
            log.exception("a request failed")
            response = error_response(
                InternalError("internal error; the server log has the details"),
                RETRY_AFTER_SECONDS,
            )
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
                return error_response(
                    InvalidInputError(f"method {scope['method']} is not allowed here"), 0
                ).with_status(405)
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


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

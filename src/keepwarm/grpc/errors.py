"""keepwarm's errors as gRPC status codes: the one place the gRPC transport maps them.

An UNAVAILABLE or RESOURCE_EXHAUSTED answer (an overloaded model, a server shutting
down) carries ``grpc-retry-pushback-ms``, gRPC's Retry-After: the delay a client with a
retry policy waits before trying again. A call whose client cancelled it, or whose
deadline passed, is ended by gRPC itself (it cancels the handler's task): no status is
sent for it, and a request it had queued leaves the queue (``batching.serving.finish``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from keepwarm.errors import Code, KeepwarmError
from keepwarm.service import RETRY_AFTER_SECONDS

log = logging.getLogger("keepwarm.grpc")

STATUS = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

#: Codes worth retrying later; their answers say when (gRPC's server pushback).
RETRY = {Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE}
PUSHBACK = (("grpc-retry-pushback-ms", str(RETRY_AFTER_SECONDS * 1000)),)

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def status_of(exc: KeepwarmError) -> grpc.StatusCode:
    return STATUS.get(exc.code, grpc.StatusCode.INTERNAL)


def mapped(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Wrap an RPC method: a ``KeepwarmError`` ends the call with its status code and
    message; anything else is logged and ends it with INTERNAL."""

    @functools.wraps(handler)
    async def call(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except KeepwarmError as exc:
            trailers = PUSHBACK if exc.code in RETRY else ()
            await context.abort(status_of(exc), exc.message, trailers)
        except Exception:
            log.exception("a gRPC request failed")
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    return call

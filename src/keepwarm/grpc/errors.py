"""keepwarm's errors as gRPC status codes: the one place the gRPC transport maps them.

An UNAVAILABLE or RESOURCE_EXHAUSTED answer (an overloaded model, a server shutting
down) carries ``grpc-retry-pushback-ms``, gRPC's Retry-After: the delay a client with a
retry policy waits before trying again. A call whose client cancelled it, or whose
deadline passed, is ended by gRPC itself: its handler's ``Call`` is left (see
``leaving``), the request is not run if it had not started and leaves its batch's queue
if it waited there, and no status reaches the client from the handler.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from keepwarm.errors import Code, KeepwarmError
from keepwarm.service import RETRY_AFTER_SECONDS
from keepwarm.service_blocking import Call
from keepwarm.service_book import Gone

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
Handler = Callable[[Any, Request, grpc.ServicerContext], Response]


def status_of(exc: KeepwarmError) -> grpc.StatusCode:
    return STATUS.get(exc.code, grpc.StatusCode.INTERNAL)


def mapped(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Wrap an RPC method: a ``KeepwarmError`` ends the call with its status code and
    message; anything else is logged and ends it with INTERNAL."""

    @functools.wraps(handler)
    def call(self: Any, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            return handler(self, request, context)
        except KeepwarmError as exc:
            abort(context, exc)
        except Gone:  # the call has ended already: this status reaches nobody
            context.abort(grpc.StatusCode.CANCELLED, "the client went away")
        except Exception:
            log.exception("a gRPC request failed")
            context.abort(
                grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    return call


def abort(context: grpc.ServicerContext, exc: KeepwarmError) -> NoReturn:
    """End the call with ``exc``'s status and message (and pushback when worth retrying)."""
    if exc.code in RETRY:
        context.set_trailing_metadata(PUSHBACK)
    context.abort(status_of(exc), exc.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def leaving(context: grpc.ServicerContext) -> Call:
    """The ``Call`` a blocking request waits with, left when gRPC ends the RPC early
    (the client cancelled, or its deadline passed)."""
    call = Call()
    if not context.add_callback(call.leave):  # it has ended already
        call.leave()
    return call

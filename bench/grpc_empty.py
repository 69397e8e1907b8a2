"""grpcio's floor: a bare grpcio server whose only method,
``inference.GRPCInferenceService/ServerLive``, answers an empty message at once; prints its
port, then serves until terminated. ``bench/grpc_ab.py --empty KINDS`` drives it with the
``grpc-live`` protocol beside keepwarm's servers, so that the report can say what grpcio
itself costs a unary call next to REST's empty route.

Kinds: ``sync`` (the threaded server, as keepwarm's: a pool of ``THREADS``), ``aio``
(``grpc.aio`` on asyncio's own event loop) and ``aio-uvloop`` (on uvloop's).

    python bench/grpc_empty.py [sync|aio|aio-uvloop] [THREADS]
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_listener")  # as keepwarm's server

import grpc

KINDS = ("sync", "aio", "aio-uvloop")


def same(message: bytes) -> bytes:
    return message


def empty(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b""


async def empty_async(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


def handlers(method: object) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ServerLive": grpc.unary_unary_rpc_method_handler(method, same, same)},
    )


async def serve_async() -> None:
    server = grpc.aio.server(handlers=[handlers(empty_async)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "sync"
    if kind not in KINDS:
        raise SystemExit(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "aio":
        asyncio.run(serve_async())
        return
    if kind == "aio-uvloop":
        import uvloop

        uvloop.run(serve_async())
        return
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    server = grpc.server(ThreadPoolExecutor(threads), handlers=[handlers(empty)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

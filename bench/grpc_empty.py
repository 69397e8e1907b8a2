"""grpcio's floor: a threaded grpcio server (as keepwarm's) whose only method,
``inference.GRPCInferenceService/ServerLive``, answers an empty message at once; prints its
port, then serves until terminated. ``bench/grpc_ab.py --empty`` drives it with the
``grpc-live`` protocol beside keepwarm's servers, so that the report can say what grpcio
itself costs a unary call next to REST's empty route.

    python bench/grpc_empty.py [THREADS]
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_listener")  # as keepwarm's server

import grpc


def same(message: bytes) -> bytes:
    return message


def empty(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b""


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ServerLive": grpc.unary_unary_rpc_method_handler(empty, same, same)},
    )
    server = grpc.server(ThreadPoolExecutor(threads), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

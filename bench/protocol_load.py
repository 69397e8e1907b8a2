"""One load-generating client process, the same for every protocol: ``--concurrency``
asyncio tasks, each with its own connection, sending KServe v2 inference requests back
to back for ``--seconds``, rotating ``--bodies`` different random inputs; only successful
answers count. Every protocol's requests are written by hand on a raw socket (HTTP/1.1
for REST, HTTP/2 for gRPC through ``grpc_wire.py``): grpcio's own client cost this
process about 5x the CPU per call of the REST client, on the cores the server shares.

Protocols: ``rest-json`` (v2 JSON), ``rest-binary`` (v2 with the binary tensor extension),
``grpc-raw`` (``ModelInfer`` with ``raw_input_contents``); ``rest-live`` and ``grpc-live``
(v2 liveness, no model: what each transport costs alone). Prints one JSON line:
``{"rps", "p50_ms", "p99_ms", "ok", "failed", "client_cpu_us"}`` (this process's CPU
time per answered request). Used by ``bench/serve.py``; runnable alone:

    python bench/protocol_load.py grpc-raw 127.0.0.1:8500 mobilenet_v2 image 224,224,3 -c 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

Send = Callable[[int], Awaitable[bool]]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"
PROTOCOLS = ("rest-json", "rest-binary", "grpc-raw", "rest-live", "grpc-live")


def arrays(shape: tuple[int, ...], n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, *shape), dtype=np.float32) for _ in range(n)]


def rest_requests(
    protocol: str, host: str, model: str, name: str, xs: list[np.ndarray]
) -> list[bytes]:
    """Whole HTTP/1.1 requests (keep-alive), one per input."""
    if protocol == "rest-live":
        return [b"GET /v2/health/live HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()]
    out = []
    for x in xs:
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(x.shape)}
        extra = b""
        if protocol == "rest-json":
            tensor["data"] = x.ravel()
            body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
        else:
            raw = x.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            header = orjson.dumps({"inputs": [tensor]})
            body = header + raw
            extra = b"Inference-Header-Content-Length: %d\r\n" % len(header)
        out.append(
            b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (model.encode(), host.encode(), len(body), extra)
            + body
        )
    return out


async def rest_sender(address: str, requests: list[bytes]) -> tuple[Send, Callable[[], None]]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send(i: int) -> bool:
        writer.write(requests[i % len(requests)])
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return 200 <= status < 300

    return send, writer.close


async def grpc_senders(
    address: str, model: str, name: str, xs: list[np.ndarray], c: int, path: str = MODEL_INFER
) -> list[tuple[Send, Callable[[], None]]]:
    """``c`` connections of ``grpc_wire.WireChannel`` (gRPC framed by hand, as REST is),
    calling ``path`` (ServerLive: an empty message)."""
    from grpc_wire import WireChannel
    from keepwarm.grpc.protos.inference import grpc_service_pb2 as pb

    messages = []
    for x in xs if path == MODEL_INFER else ():
        request = pb.ModelInferRequest(model_name=model, raw_input_contents=[x.tobytes()])
        request.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
        messages.append(request.SerializeToString())
    messages = messages or [b""]

    async def sender() -> tuple[Send, Callable[[], None]]:
        channel = WireChannel(address)
        await channel.connect()

        async def send(i: int) -> bool:
            return await channel.call(path, messages[i % len(messages)]) is not None

        return send, channel.close

    return [await sender() for _ in range(c)]


async def run(args: argparse.Namespace) -> dict[str, float]:
    shape = tuple(int(d) for d in args.shape.split(","))
    xs = arrays(shape, args.bodies)
    c = args.concurrency
    if args.protocol.startswith("grpc"):
        path = MODEL_INFER if args.protocol == "grpc-raw" else SERVER_LIVE
        senders = await grpc_senders(args.address, args.model, args.input, xs, c, path)
    else:
        requests = rest_requests(args.protocol, args.address, args.model, args.input, xs)
        senders = [await rest_sender(args.address, requests) for _ in range(c)]
    for send, _ in senders:  # warm every connection
        await send(0)
    latencies: list[list[float]] = [[] for _ in range(c)]
    failed = [0]
    stop = time.perf_counter() + args.seconds

    async def worker(k: int) -> None:
        send, own, i = senders[k][0], latencies[k], k
        while (start := time.perf_counter()) < stop:
            ok = await send(i)
            if ok:
                own.append(time.perf_counter() - start)
            else:
                failed[0] += 1
            i += 1

    begun = time.perf_counter()
    cpu_begun = time.process_time()
    await asyncio.gather(*(worker(k) for k in range(c)))
    took = time.perf_counter() - begun
    cpu = time.process_time() - cpu_begun
    for _, close in senders:
        close()
    flat = np.concatenate([np.asarray(v) for v in latencies]) * 1000
    return {
        "rps": len(flat) / took,
        "p50_ms": float(np.percentile(flat, 50)) if len(flat) else float("nan"),
        "p99_ms": float(np.percentile(flat, 99)) if len(flat) else float("nan"),
        "ok": len(flat),
        "failed": failed[0],
        "client_cpu_us": cpu / max(1, len(flat)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("address", help="host:port (REST or gRPC)")
    parser.add_argument("model")
    parser.add_argument("input", help="the input tensor's name")
    parser.add_argument("shape", help="one example's shape, e.g. 224,224,3")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bodies", type=int, default=8)
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The floor of ``bench/c1_floor.py``: a bare ASGI app on uvicorn (httptools, uvloop) that
serves one SavedModel's ``serving_default`` signature on KServe v2 JSON and binary bodies,
with none of keepwarm's serving code: read the body, decode it with orjson (a binary body's
tensor with ``np.frombuffer``), call the signature, encode the answer. The signature is
called as the direct side of ``c1_floor.py`` calls it, through ``keepwarm.load`` (the
flat call), or with ``--call keyword`` the way TensorFlow documents it.

    python bench/bare_mlp.py MODEL_DIR --mode inline   # the call on the event loop
    python bench/bare_mlp.py MODEL_DIR --mode thread   # the call on one worker thread
    python bench/bare_mlp.py MODEL_DIR --mode hop      # the same, handed over as keepwarm does

``thread`` hands the call over through ``run_in_executor`` (a ``ThreadPoolExecutor``);
``hop`` through ``keepwarm.hop.HopPool`` (eventfd wake-ups with the GIL let go), the
hand-off keepwarm's own requests take.

Prints ``PORT <n>`` once listening. The switch interval is keepwarm's (0.5 ms), so that
a hop between threads costs here what it costs in keepwarm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import orjson

HEADER_LENGTH = b"inference-header-content-length"


def decode(body: bytes, header_length: int | None) -> tuple[str, np.ndarray]:
    if header_length is None:
        tensor = orjson.loads(body)["inputs"][0]
        data = np.asarray(tensor["data"], dtype=np.float32)
    else:
        tensor = orjson.loads(body[:header_length])["inputs"][0]
        data = np.frombuffer(body, dtype=np.float32, offset=header_length)
    return tensor["name"], data.reshape(tensor["shape"])


def encode(name: str, out: np.ndarray) -> bytes:
    tensor = {"name": name, "datatype": "FP32", "shape": list(out.shape), "data": out.ravel()}
    return orjson.dumps(
        {"model_name": "mlp", "outputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY
    )


def make_app(model_dir: str, mode: str, how: str) -> Any:
    import tensorflow as tf

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    output = next(iter(signature.structured_outputs))
    if how == "keepwarm":
        import keepwarm

        predict = keepwarm.load(model_dir).predict

        def call(name: str, x: np.ndarray) -> np.ndarray:
            return predict({name: x})[output]
    elif how == "numpy":
        w1, b1, w2, b2 = numpy_weights(tf.saved_model.load(model_dir))

        def call(name: str, x: np.ndarray) -> np.ndarray:
            h = np.maximum(x @ w1 + b1, 0)
            z = h @ w2 + b2
            e = np.exp(z - z.max(axis=1, keepdims=True))
            result: np.ndarray = e / e.sum(axis=1, keepdims=True)
            return result
    elif how == "session":
        call = session_call(model_dir, output)
    else:

        def call(name: str, x: np.ndarray) -> np.ndarray:
            result: np.ndarray = signature(**{name: x})[output].numpy()
            return result

    call(
        *decode(
            encode("image", np.zeros((1, 784), np.float32)).replace(b"outputs", b"inputs"), None
        )
    )
    executor = ThreadPoolExecutor(1)
    from keepwarm.hop import HopPool

    pool = HopPool(1, "bare-hop")

    timings: list[tuple[float, float]] = []

    def timed(name: str, x: np.ndarray) -> np.ndarray:
        wall, cpu = time.perf_counter(), time.thread_time()
        out = call(name, x)
        timings.append((time.perf_counter() - wall, time.thread_time() - cpu))
        return out

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # the call's own times since the last GET
            await reply(send, stats(timings))
            timings.clear()
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        length = next((int(v) for k, v in scope["headers"] if k.lower() == HEADER_LENGTH), None)
        name, x = decode(body, length)
        if mode == "inline":
            out = timed(name, x)
        elif mode == "thread":
            out = await asyncio.get_running_loop().run_in_executor(executor, timed, name, x)
        else:
            out = await pool.submit(lambda: timed(name, x)).waiter
        await reply(send, encode(output, out))

    return app


async def reply(send: Any, answer: bytes) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(answer)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def stats(timings: list[tuple[float, float]]) -> bytes:
    """The calls' count, median wall and CPU (thread) time in µs, as JSON."""
    walls = sorted(t[0] for t in timings) or [float("nan")]
    cpus = sorted(t[1] for t in timings) or [float("nan")]
    return orjson.dumps({"calls": len(timings), "wall_us": walls[len(walls) // 2] * 1e6,
                         "cpu_us": cpus[len(cpus) // 2] * 1e6})  # fmt: skip


def session_call(model_dir: str, output: str) -> Any:
    """The signature through a TensorFlow 1 session whose kernels run on the caller's
    thread (``inter_op_parallelism_threads=-1``)."""
    import tensorflow as tf

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=-1)
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.load(session, ["serve"], model_dir)
    signature = meta.signature_def["serving_default"]
    feed = next(iter(signature.inputs.values())).name
    run = session.make_callable(signature.outputs[output].name, [feed])

    def call(name: str, x: np.ndarray) -> np.ndarray:
        result: np.ndarray = run(x)
        return result

    return call


def numpy_weights(loaded: Any) -> list[np.ndarray]:
    """The MLP's kernels and biases (784x256, 256, 256x10, 10) as numpy arrays."""
    by_shape = {tuple(v.shape): v.numpy() for v in loaded.variables}
    return [by_shape[(784, 256)], by_shape[(256,)], by_shape[(256, 10)], by_shape[(10,)]]


async def serve(app: Any) -> None:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", http="httptools",
                            lifespan="off", log_level="warning", access_log=False,
                            server_header=False, date_header=False)  # fmt: skip
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--mode", choices=("inline", "thread", "hop"), default="inline")
    parser.add_argument(
        "--call", choices=("keepwarm", "keyword", "numpy", "session"), default="keepwarm"
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    import uvloop

    uvloop.run(serve(make_app(args.model_dir, args.mode, args.call)))


if __name__ == "__main__":
    main()

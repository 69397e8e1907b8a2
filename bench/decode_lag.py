"""The event loop's lag beside threads decoding large JSON bodies in pieces, with the
number of decodes allowed at once (``jsonpieces.DECODERS``) set to each of ``--limits``
in turn, in rotating rounds (the machine's speed drifts; compare within a round).

    PYTHONPATH=src python bench/decode_lag.py --threads 6 --limits 2,64 --rounds 3

Per round and limit: the lag of a 1 ms timer on the loop (p50, p99), decodes per second
and each decode's time (its wait for a place included). ``--api tfserving`` decodes TF
Serving row bodies instead of v2 ones. The switch interval is ``keepwarm serve``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time

import numpy as np
import orjson

from keepwarm.protocol import jsonpieces, tfserving, v2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--limits", default="2,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--api", default="v2", choices=("v2", "tfserving"))
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    if args.api == "v2":
        tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}
        body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
        decode = lambda: v2.decode_request(body)  # noqa: E731
    else:
        body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
        decode = lambda: tfserving.parse_predict(body)  # noqa: E731
    limits = [int(n) for n in args.limits.split(",")]
    for round_ in range(args.rounds):
        shift = round_ % len(limits)
        for limit in limits[shift:] + limits[:shift]:
            jsonpieces.DECODERS = threading.BoundedSemaphore(limit)
            lag, took = measure(decode, args.threads, args.seconds)
            print(f"round {round_} limit {limit:3d}: loop lag p50 {pct(lag, 50):6.2f} ms "
                  f"p99 {pct(lag, 99):6.2f} ms; {len(took) / args.seconds:5.0f} decodes/s, "
                  f"p50 {pct(took, 50):5.0f} ms", flush=True)  # fmt: skip
    return 0


def measure(decode: object, threads: int, seconds: float) -> tuple[list[float], list[float]]:
    stop = time.perf_counter() + seconds
    took: list[float] = []
    lag: list[float] = []

    def work() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            decode()  # type: ignore[operator]
            took.append(time.perf_counter() - began)

    async def probe() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lag.append(time.perf_counter() - began - 0.001)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    asyncio.run(probe())
    for worker in workers:
        worker.join()
    return lag, took


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 9's c=1 cell through the server's request path without HTTP: ONE
``InferenceService`` (``keepwarm serve``'s) over a repository holding the model three
times, ``NAME`` with its ``[batching]`` table (on), ``NAME_off`` and ``NAME_off2`` without
(off, and the control), each request ``service.infer`` awaited on a uvloop event loop as
the v2 route awaits it for a large JSON body (inputs decoded off the loop beforehand:
``decoded=False``, so the request hops to a worker thread, which decodes, predicts and
encodes), the sides taking turns request by request (each cycle the three in a random
order), the same inputs rotated among ``--inputs`` arrays.

Per request: its wall time around ``infer`` and the model's own call inside it (the
runtime's ``predict``, timed by a wrapper put in the same place on every side), so that
what batching adds outside the model (``wall - model``: the loop's and the worker's
Python, the hop, the encoding) is seen apart from the model's scatter. Printed as
``onoff_c1_inproc.report`` prints.

    python bench/onoff_c1_service.py --models .test-cache/examples/models \\
        --model mobilenet_v2 --cycles 1000
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import orjson

from onoff_c1_inproc import arguments, images, report

SIDES = ("on", "off", "off2")


def served_name(model: str, side: str) -> str:
    return model if side == "on" else f"{model}_{side}"


def encode(name: str, version: int, outputs: dict[str, np.ndarray]) -> bytes:
    return orjson.dumps({k: v for k, v in outputs.items()}, option=orjson.OPT_SERIALIZE_NUMPY)


def stamped(predict: Any, stamps: dict[str, float], out: list[float]) -> Any:
    """``predict``, its call's wall time appended to ``out``, its start and end kept in
    ``stamps`` (``model0``, ``model1``)."""
    clock = time.perf_counter

    def call(inputs: Any) -> Any:
        stamps["model0"] = began = clock()
        try:
            return predict(inputs)
        finally:
            stamps["model1"] = ended = clock()
            out.append(ended - began)

    return call


def time_model(service: Any, name: str, out: list[float], stamps: dict[str, float]) -> None:
    """``name``'s runtime call, as its requests make it, timed into ``out``."""
    from keepwarm.batching.model import BatchedModel

    lease, _ = service._leases.take_ready(name, None, None)
    try:
        raw = lease.model.raw
        if isinstance(raw, BatchedModel):
            raw.wait_warm(120)
            loose, runner = raw.batcher._loose, raw.batcher._dispatch._runner
            loose._predict = stamped(loose._predict, stamps, out)
            runner.predict = stamped(runner.predict, stamps, out)
        else:  # the leased model is kept per version: every request's
            lease.model._predict = stamped(lease.model._predict, stamps, out)
    finally:
        lease.release()


#: Per request, the segments of its wall time (``SEGMENTS``), by the stamps taken in it.
SEGMENTS = ("to_decode", "to_model", "model", "to_encode", "encode", "back")


async def run(
    service: Any,
    model: str,
    xs: list[np.ndarray],
    cycles: int,
    inner: dict[str, list[float]],
    stamps: dict[str, float],
) -> dict[str, Any]:
    walls: dict[str, list[float]] = {s: [] for s in SIDES}
    parts: dict[str, dict[str, list[float]]] = {s: {k: [] for k in SEGMENTS} for s in SIDES}
    clock = time.perf_counter

    def decode(signature: Any, x: np.ndarray) -> dict[str, np.ndarray]:
        stamps["decode"] = clock()
        return {signature.inputs[0].name: x}

    def encoding(name: str, version: int, outputs: dict[str, np.ndarray]) -> bytes:
        stamps["encode0"] = clock()
        try:
            return encode(name, version, outputs)
        finally:
            stamps["encode1"] = clock()

    order = list(SIDES)
    shuffle = random.Random(1).shuffle
    for k in range(cycles):
        shuffle(order)
        x = {"input": xs[k % len(xs)]}
        for side in order:
            name = served_name(model, side)
            began = clock()
            service.refuse_when_overloaded(name)
            await service.infer(
                name, None, lambda signature, x=x["input"]: decode(signature, x),
                encoding, protocol="v2", timeout=60.0, decoded=False,
            )  # fmt: skip
            ended = clock()
            walls[side].append(ended - began)
            at = [began, stamps["decode"], stamps["model0"], stamps["model1"],
                  stamps["encode0"], stamps["encode1"], ended]  # fmt: skip
            for key, a, b in zip(SEGMENTS, at, at[1:], strict=False):
                parts[side][key].append(b - a)
    return {s: {"wall": walls[s], "model": inner[s][-cycles:]} | parts[s] for s in SIDES}


def main() -> int:
    args = arguments(__doc__ or "").parse_args()
    sys.setswitchinterval(0.0005)  # keepwarm serve's
    import uvloop

    from keepwarm.repository import Repository
    from keepwarm.service import InferenceService

    xs = images(args.model, args.inputs)
    with tempfile.TemporaryDirectory(prefix="onoff-c1-service-") as tmp:
        repo = Path(tmp) / "repo"
        for side in SIDES:
            target = repo / served_name(args.model, side)
            shutil.copytree(args.models / args.model, target)
            if side != "on":
                (target / "model.toml").unlink(missing_ok=True)
            for version in target.iterdir():
                if version.is_dir():
                    (version / ".keepwarm-ready").touch()  # complete: served at once
        repository = Repository(repo, watch=False)
        repository.refresh()
        for side in SIDES:
            repository.wait_ready(served_name(args.model, side), timeout=300)
        service = InferenceService(repository)
        inner: dict[str, list[float]] = {s: [] for s in SIDES}
        stamps: dict[str, float] = {}
        try:
            for side in SIDES:
                time_model(service, served_name(args.model, side), inner[side], stamps)

            async def both() -> dict[str, Any]:
                await run(service, args.model, xs, 20, inner, stamps)  # warm, unmeasured
                return await run(service, args.model, xs, args.cycles, inner, stamps)

            result = uvloop.run(both())
        finally:
            service.close()
            repository.close()
    print(f"{args.model} served path: {args.cycles} cycles, load {os.getloadavg()}")
    for a, b in (("on", "off"), ("off2", "off")):
        report(result, a, b, ("wall", "outside", *SEGMENTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

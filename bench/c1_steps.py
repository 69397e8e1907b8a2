"""Where keepwarm's idle-path CPU goes at concurrency 1, without HTTP (issue 7's c1 cell):
``InferenceService.infer`` on the MLP, called back to back on an event loop (the v2 route's
calls: ``refuse_when_overloaded`` then ``infer`` with inputs decoded already), against a
bare hop (``keepwarm.hop.HopPool`` running ``keepwarm.load``'s predict, the floor of
``bench/c1_floor.py``'s ``bare-hop``), in alternating blocks. Per side, per request: the
event loop's thread CPU, the worker thread's CPU (``pthread_getcpuclockid``) and the wall
time; then the service's pieces one by one on this thread (admission, lease, the request
book, the batching checks), each timed over many calls; last, the worker's step (``begin``)
on and off with the model's call taken out (a kept answer): batching's own Python, which
alone is steady enough to compare (the worker's per-request on-off figure above gave
+7 to +21 µs in runs of one build, on a busy machine, where this gave +1 µs). Context
switches per request per thread are read from /proc.

    python bench/c1_steps.py --models .test-cache/examples/models --batching both

(``both``: batching on and off side by side, in one process, the on-off difference too.)

Thread CPU is far steadier than wall time on a shared machine: the figures are the
medians over ``--rounds`` of the per-round difference between the two sides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]


def thread_cpu(ident: int) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def switches(ident: int) -> int:
    """Thread ``ident``'s context switches so far (voluntary and not), from /proc."""
    native = next(t.native_id for t in threading.enumerate() if t.ident == ident)
    total = 0
    with open(f"/proc/self/task/{native}/status") as status:
        for line in status:
            if "ctxt_switches" in line:
                total += int(line.split()[-1])
    return total


def thread_named(prefix: str) -> int:
    found = [t.ident for t in threading.enumerate() if t.name.startswith(prefix) and t.ident]
    assert found, f"no thread named {prefix}*"
    return found[0]


def encode(name: str, version: int, outputs: dict[str, np.ndarray]) -> bytes:
    return orjson.dumps({k: v.tolist() for k, v in outputs.items()})


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    """Median over 5 blocks of this thread's CPU µs per call of ``fn``."""
    blocks = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        blocks.append((time.thread_time() - start) / calls * 1e6)
    return statistics.median(blocks)


def pieces(service: Any, calls: int) -> None:
    """The service's idle-path pieces, each alone, on this (the loop's) thread."""
    from keepwarm.batching.serving import admitted, gathering

    leases, book = service._leases, service._book
    lease, _ = leases.take_ready("mlp", None, None)
    x = {"image": np.zeros((1, 784), np.float32)}

    def admission() -> None:
        service.refuse_when_overloaded("mlp")
        place = admitted("mlp")
        if place is not None:
            place.release()

    def take() -> None:
        taken, _ = leases.take_ready("mlp", None, None)
        taken.release()

    def track() -> None:
        with book.track("mlp", "v2") as record:
            record.label = "1"

    steps: dict[str, Callable[[], Any]] = {
        "admission (admit, admitted, release)": admission,
        "take_ready + release": take,
        "request book: track + end": track,
        "  of which metrics.request": lambda: book.metrics.request("mlp", "1", "v2", "OK", 1e-3),
        "  of which statistics.record": lambda: book.statistics.record("mlp", "1", 1e-3),
        "gathering": lambda: gathering(lease.model),
        "signature.coerce (worker, batched)": lambda: lease.model.signature.coerce(x),
    }
    for name, fn in steps.items():
        print(f"  {per_call_us(fn, calls):6.2f} us  {name}")
    lease.release()


def take_out_model(lease: Any) -> Callable[[], None]:
    """The MLP's call in ``lease``'s path (batching on: the batcher's; off: the leased
    model's, kept per version) answers at once with its answer to zeros; the undo."""
    answer = lease.model.predict({"image": np.zeros((1, 784), np.float32)})
    raw = lease.model.raw
    owner = raw.batcher._loose if hasattr(raw, "batcher") else lease.model
    call = owner._predict
    owner._predict = lambda inputs: answer

    def put_back() -> None:
        owner._predict = call

    return put_back


def model_free(services: dict[str, Any], calls: int, rounds: int = 15) -> None:
    """Batching's own Python on a worker, the model taken out: ``begin`` (the worker's
    step) on each side with the model's call answering at once with a kept answer, in
    alternating blocks on this thread. Deterministic work only, so the on-off figure is
    steady where the full request's (a model call's noise on top) is not."""
    from keepwarm.batching.serving import begin

    x = {"image": np.zeros((1, 784), np.float32)}
    taken, steps, undo = [], {}, []
    for name, service in services.items():
        lease, _ = service._leases.take_ready("mlp", None, None)
        taken.append(lease)
        undo.append(take_out_model(lease))
        steps[name] = lambda model=lease.model, lease=lease: begin(model, x, None, lease)
    figures: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for index in range(rounds):
            for name in list(steps)[:: 1 if index % 2 else -1]:
                figures[name].append(per_call_us(steps[name], calls // 5))
    finally:
        for put_back in undo:
            put_back()
        for lease in taken:
            lease.release()
    print("the worker's step (begin) with the model's call taken out (CPU us per call):")
    for name, values in figures.items():
        print(f"    {statistics.median(values):6.2f} us  {name}")
    if len(figures) == 2:
        on, off = figures["keepwarm-on"], figures["keepwarm-off"]
        diff = statistics.median(a - b for a, b in zip(on, off, strict=True))
        print(f"    {diff:+6.2f} us  on - off (median per-round difference)")


async def compare(
    services: dict[str, Any], model_dir: Path, rounds: int, count: int, model: bool = True
) -> None:
    """``services`` (``keepwarm-on``/``keepwarm-off``, one or both) against a bare hop,
    in alternating blocks: per side, per request, loop and worker thread CPU and wall.
    ``model`` false: every side's model call answers at once (``take_out_model``)."""
    import keepwarm
    from keepwarm.hop import HopPool

    x = {"image": np.random.default_rng(0).random((1, 784), np.float32)}
    predict = keepwarm.load(str(model_dir)).predict
    if not model:
        answer = predict(x)
        predict = lambda inputs: answer  # noqa: E731
    pool = HopPool(1, "bare-hop")
    workers: dict[str, int] = {}

    def served(name: str, service: Any) -> Callable[[], Awaitable[bytes]]:
        def decode(signature: Any) -> dict[str, np.ndarray]:
            workers[name] = threading.get_ident()  # the worker's (the decode runs there)
            return x

        async def side() -> bytes:
            service.refuse_when_overloaded("mlp")
            return await service.infer(  # type: ignore[no-any-return]
                "mlp", None, decode, encode, protocol="v2", decoded=True
            )

        return side

    async def bare() -> bytes:
        answer = encode("mlp", 1, await pool.submit(lambda: predict(x)).waiter)
        workers["bare-hop"] = thread_named("bare-hop")  # started by the first hop
        return answer

    sides: dict[str, Callable[[], Awaitable[bytes]]] = {
        name: served(name, service) for name, service in services.items()
    }
    sides["bare-hop"] = bare
    for _ in range(300):
        for side in sides.values():
            await side()
    loop_thread = threading.get_ident()
    figures: dict[str, list[tuple[float, ...]]] = {name: [] for name in sides}
    for index in range(rounds):
        shift = index % len(sides)
        order = list(sides)[shift:] + list(sides)[:shift]
        for name in order if index % 2 == 0 else reversed(order):
            side, worker = sides[name], workers[name]
            loop_cs0, worker_cs0 = switches(loop_thread), switches(worker)
            loop0, worker0, wall0 = thread_cpu(loop_thread), thread_cpu(worker), time.perf_counter()
            for _ in range(count):
                await side()
            figures[name].append(((thread_cpu(loop_thread) - loop0) / count * 1e6,
                                  (thread_cpu(worker) - worker0) / count * 1e6,
                                  (time.perf_counter() - wall0) / count * 1e6,
                                  (switches(loop_thread) - loop_cs0) / count,
                                  (switches(worker) - worker_cs0) / count))  # fmt: skip
    print("side           loop us  worker us  wall us  loop cs  worker cs  (per request, medians)")
    for name, rows in figures.items():
        loop, worker, wall, loop_cs, worker_cs = (
            statistics.median(column) for column in zip(*rows, strict=True)
        )
        print(f"{name:13s} {loop:8.1f} {worker:10.1f} {wall:8.1f} {loop_cs:8.2f} {worker_cs:10.2f}")
    pairs = [(name, "bare-hop") for name in services]
    if len(services) == 2:
        pairs.append(("keepwarm-on", "keepwarm-off"))
    for mine, floor in pairs:
        above = [
            [a - b for a, b in zip(m, f, strict=True)]
            for m, f in zip(figures[mine], figures[floor], strict=True)
        ]
        loop, worker, wall = (
            statistics.median(column) for column in list(zip(*above, strict=True))[:3]
        )
        print(f"{mine} - {floor}: loop {loop:+.1f}  worker {worker:+.1f}  wall {wall:+.1f} us"
              "   (median per-round difference)")  # fmt: skip
    pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--batching", choices=("on", "off", "both"), default="on")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=2000, help="per side per round")
    parser.add_argument(
        "--no-model", action="store_true", help="every side's model call answers at once"
    )
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # keepwarm serve's
    from keepwarm.repository import Repository
    from keepwarm.service import InferenceService

    modes = ("on", "off") if args.batching == "both" else (args.batching,)
    with tempfile.TemporaryDirectory(prefix="c1-steps-") as tmp:
        services: dict[str, Any] = {}
        repositories = []
        try:
            for mode in modes:
                repo_dir = Path(tmp) / mode
                shutil.copytree(args.models / "mlp" / "1", repo_dir / "mlp" / "1")
                (repo_dir / "mlp" / "1" / ".keepwarm-ready").touch()
                if mode == "on":
                    (repo_dir / "mlp" / "model.toml").write_text(
                        "[batching]\nmax_batch_size = 32\n"
                    )
                repository = Repository(repo_dir, watch=False)
                repositories.append(repository)
                repository.refresh()
                repository.wait_ready("mlp", timeout=300)
                services[f"keepwarm-{mode}"] = InferenceService(repository)
            print(f"MLP, batching {args.batching}, load {os.getloadavg()[0]:.1f}")
            import uvloop

            model_dir = Path(tmp) / modes[0] / "mlp" / "1"
            if args.no_model:
                for service in services.values():
                    lease, _ = service._leases.take_ready("mlp", None, None)
                    take_out_model(lease)  # kept: the leased model is the version's
                    lease.release()
            uvloop.run(compare(services, model_dir, args.rounds, args.requests, not args.no_model))
            for name, service in services.items():
                print(f"pieces, {name} (this thread's CPU per call):")
                pieces(service, 20000)
            model_free(services, 20000)
        finally:
            for service in services.values():
                service.close()
            for repository in repositories:
                repository.close()


if __name__ == "__main__":
    main()

"""The request path: what a lease + predict costs over calling the runtime directly.

All in one run, on two ONNX models: a tiny one built here (MatMul, input 1x4) and the
example MLP (784-256-10, ``keepwarm.examples``, built into ``.test-cache/examples`` unless
up to date). Every ONNX Runtime session here (direct or keepwarm's) has the same options:
ONNX Runtime's defaults (as in the issue's figures: the direct tiny call about 6 µs), or
``--intra-op-threads N`` (1 makes the direct call cheaper, so the same overhead weighs
more).

1. single thread: per-call time (perf_counter_ns around each call, median over
   ``--calls`` calls, blocks of the variants interleaved) of
   - ``direct``: ``run`` on a prepared feed dict of the session the repository loaded;
   - ``repository``: ``with repo.lease(name) as m: m.predict(x)``;
   - ``repository_raw``: the same lease, ``m.raw.predict({name: x})`` (no signature check);
   - ``direct_cache``: ``run`` on the session ``keepwarm.load`` loaded;
   - ``load``: ``keepwarm.load(path).predict(x)`` (a lease inside ``Model.predict``);
   - ``direct_own``: ``run`` on a session the bench makes itself (reported only).
   Target: ``repository`` at most ``--max-overhead-us`` (2 µs) above ``direct``, ``load``
   above ``direct_cache``: each path against the runtime called on its very session (two
   sessions of one model differ by up to 1.5 µs a call from run to run on this machine,
   which is not keepwarm's cost; the figures against ``direct_own`` are printed too).
2. 4 and 8 threads, each calling in a loop, all switching variant together every 50 ms:
   30 rounds (80 without ``--quick``) of one slice per variant, the order rotated; per
   round, each path's throughput over its direct call's in the same round. Target: the
   median of those ratios at least 0.8x (a round where a slice saw no call is left out).
3. arrival (tiny model only): one thread leases model ``a`` while a version of model ``b``
   holding 30,000 files is renamed into the repository (polled every 0.25 s, no watcher).
   Statistics over the leases that overlap the time from the rename to ``b``'s READY
   event. Target: p99 at most 6 ms, max at most 20 ms, at Python's default switch
   interval (the bench refuses to judge at another one). The same statistics over a
   0.7 s control window just before the rename show the machine's own noise.

The machine is shared: run it when it is quiet and read the environment record.
Exits non-zero when a target is missed. ``--json PATH`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment import environment as recorded_environment
from hotpath_arrival import ARRIVAL_FILES, bench_arrival
from hotpath_measure import Call, per_call, thread_rounds
from hotpath_models import add_model, build_tiny, example_mlp, model_toml, ort_options

ROOT = Path(__file__).resolve().parents[1]
MAX_OVERHEAD_US = 2.0
MIN_THROUGHPUT_RATIO = 0.8
ARRIVAL_P99_MS = 6.0
ARRIVAL_MAX_MS = 20.0
# Each keepwarm path and the direct call it is judged against (the same session).
JUDGED = {"repository": "direct", "repository_raw": "direct", "load": "direct_cache"}
DEFAULT_SWITCH_INTERVAL = 0.005


# ------------------------------------------------------------------ the variants


def session_of(leased: Any) -> Any:
    """The ONNX Runtime session inside a keepwarm-loaded ONNX model."""
    return leased.raw._session


def direct_call(session: Any, x: np.ndarray) -> Call:
    feed = {session.get_inputs()[0].name: x}
    outputs = [o.name for o in session.get_outputs()]
    run = session.run

    def direct() -> Any:
        return run(outputs, feed)

    return direct


def variants_for(own: Any, repo: Any, model: Any, name: str, x: np.ndarray) -> dict[str, Call]:
    """Each keepwarm path, and the runtime called directly on the very session that path
    runs (``direct``: the repository's, ``direct_cache``: ``keepwarm.load``'s), and on a
    session of the bench's own (``direct_own``, reported, not judged: two sessions of one
    model differ by up to 1.5 us a call here from run to run)."""
    with repo.lease(name) as leased:
        repo_session = session_of(leased)
    lease = model.acquire()
    try:
        cache_session = session_of(lease.model)
    finally:
        lease.release()
    input_name = own.get_inputs()[0].name

    def repository() -> Any:
        with repo.lease(name) as leased:
            return leased.predict(x)

    def repository_raw() -> Any:
        with repo.lease(name) as leased:
            return leased.raw.predict({input_name: x})

    def load() -> Any:
        return model.predict(x)

    return {
        "direct": direct_call(repo_session, x),
        "repository": repository,
        "repository_raw": repository_raw,
        "direct_cache": direct_call(cache_session, x),
        "load": load,
        "direct_own": direct_call(own, x),
    }


def bench_model(
    label: str, onnx_file: Path, x: np.ndarray, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    import onnxruntime as ort

    import keepwarm

    root = work / f"repo-{label}"
    add_model(root, label, onnx_file, model_toml(args))
    options = ort.SessionOptions()
    for key, value in ort_options(args).items():
        setattr(options, key, value)
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    cache = keepwarm.ModelCache()
    out: dict[str, Any] = {"model": label, "file": str(onnx_file)}
    with keepwarm.Repository(root, poll_seconds=60, watch=False) as repo:
        repo.wait_ready(label, timeout=120)
        model = keepwarm.load(
            root / label / "1" / "model.onnx", options=ort_options(args), cache=cache
        )
        variants = variants_for(session, repo, model, label, x)
        times = per_call(variants, args.calls)
        medians = {name: statistics.median(t) / 1000 for name, t in times.items()}
        out["single_us"] = {name: round(v, 3) for name, v in medians.items()}
        out["overhead_us"] = {
            name: round(medians[name] - medians[base], 3) for name, base in JUDGED.items()
        }
        out["overhead_own_session_us"] = {
            name: round(medians[name] - medians["direct_own"], 3) for name in JUDGED
        }
        out["calls"] = args.calls
        threads: dict[str, Any] = {}
        timed = {k: variants[k] for k in ("direct", "repository", "direct_cache", "load")}
        pairs = {k: JUDGED[k] for k in ("repository", "load")}
        for n in (4, 8):
            threads[str(n)] = thread_rounds(timed, pairs, n, args.rounds, args.seconds)
        out["threads"] = threads
    cache.close()
    return out


# ------------------------------------------------------------------ report


def judge(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    missed = []
    for m in results["models"]:
        for name in ("repository", "load"):
            over = m["overhead_us"][name]
            if over > args.max_overhead_us:
                missed.append(f"{m['model']}: {name} {over:.2f} us over direct > {MAX_OVERHEAD_US}")
        for n, t in m["threads"].items():
            for name, ratio in t["ratio"].items():
                if ratio < MIN_THROUGHPUT_RATIO:
                    missed.append(f"{m['model']}: {name} {n} threads {ratio:.2f}x < 0.8x")
    a = results["arrival"]
    if any("error" in r for r in a["rounds"]):
        missed.append("arrival: " + "; ".join(r["error"] for r in a["rounds"] if "error" in r))
    if a["switch_interval"] != DEFAULT_SWITCH_INTERVAL:
        missed.append(f"arrival: switch interval {a['switch_interval']} is not the default")
    if a["worst_p99_ms"] is not None and a["worst_p99_ms"] > ARRIVAL_P99_MS:
        missed.append(f"arrival: p99 {a['worst_p99_ms']} ms > {ARRIVAL_P99_MS} ms")
    if a["worst_max_ms"] is not None and a["worst_max_ms"] > ARRIVAL_MAX_MS:
        missed.append(f"arrival: max {a['worst_max_ms']} ms > {ARRIVAL_MAX_MS} ms")
    return missed


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{'model':<6} {'path':<15} {'1 thread us':>12} {'over us':>8} {'own s.':>7} "
        f"{'4 thr /s':>10} {'ratio':>6} {'8 thr /s':>10} {'ratio':>6}"
    )
    for m in results["models"]:
        for name in m["single_us"]:
            over = m["overhead_us"].get(name)
            own = m["overhead_own_session_us"].get(name)
            cells = []
            for n in ("4", "8"):
                t = m["threads"][n]
                per_s = t["per_s"].get(name)
                ratio = t["ratio"].get(name)
                cells.append(
                    f"{per_s if per_s is not None else '-':>10} "
                    f"{ratio if ratio is not None else '-':>6}"
                )
            print(
                f"{m['model']:<6} {name:<15} {m['single_us'][name]:>12.2f} "
                f"{'-' if over is None else f'{over:.2f}':>8} "
                f"{'-' if own is None else f'{own:.2f}':>7} {' '.join(cells)}"
            )
    a = results["arrival"]
    print(f"\narrival of {a['files']} files (switch interval {a['switch_interval']}):")
    for r in a["rounds"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in r.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--max-overhead-us", type=float, default=MAX_OVERHEAD_US)
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        help="ONNX Runtime's intra_op_num_threads for every session (default: its own)",
    )
    args = parser.parse_args(argv)
    args.calls = 20_000 if args.quick else 100_000
    args.rounds = 30 if args.quick else 80
    args.seconds = 0.05
    args.files = ARRIVAL_FILES
    args.arrival_rounds = 1 if args.quick else 3
    args.control_seconds = 0.7
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="keepwarm-hotpath-") as tmp:
        work = Path(tmp)
        tiny = work / "tiny.onnx"
        build_tiny(tiny)
        models = [
            bench_model("tiny", tiny, np.ones((1, 4), np.float32), args, work),
            bench_model("mlp", example_mlp(), np.ones((1, 784), np.float32), args, work),
        ]
        arrival = bench_arrival(tiny, args, work)
    results: dict[str, Any] = {
        "environment": recorded_environment(args, ("onnxruntime", "onnx")),
        "models": models,
        "arrival": arrival,
    }
    print_table(results)
    missed = judge(results, args)
    results["missed"] = missed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for line in missed:
        print("MISSED:", line)
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

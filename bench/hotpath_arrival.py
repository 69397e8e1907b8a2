"""The arrival part of ``bench/hotpath.py``: leases of one model while a version of another,
holding many files, is renamed into the repository."""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from hotpath_models import add_model, model_toml

ARRIVAL_FILES = 30_000


def make_arrival(staging: Path, tiny: Path, files: int) -> None:
    """A version directory holding the tiny model and ``files`` small files."""
    staging.mkdir(parents=True)
    shutil.copy(tiny, staging / "model.onnx")
    per_dir = 1000
    for i in range(files):
        sub = staging / "assets" / f"{i // per_dir:03d}"
        if i % per_dir == 0:
            sub.mkdir(parents=True)
        (sub / f"{i:05d}.txt").write_bytes(b"x" * 16)
    (staging / ".keepwarm-ready").touch()


def stats_ms(durations: list[float]) -> dict[str, Any]:
    ms = sorted(d * 1000 for d in durations)
    if not ms:
        return {"leases": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "leases": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(ms[-1], 4),
    }


def arrival_round(
    root: Path, staging: Path, name: str, x: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    import keepwarm
    from keepwarm.core.ids import ModelId
    from keepwarm.core.states import State

    ready_at: list[float] = []
    ready = threading.Event()
    target = ModelId(name, 1)

    def on_event(event: Any) -> None:
        if event.key == target and event.state is State.READY:
            ready_at.append(event.time)
            ready.set()

    (root / name).mkdir()
    (root / name / "model.toml").write_text(model_toml(args))
    starts: list[float] = []
    durations: list[float] = []
    stop = threading.Event()
    leasing = threading.Event()
    with keepwarm.Repository(root, poll_seconds=0.25, watch=False) as repo:
        repo.wait_ready("a", timeout=60)
        repo.subscribe(on_event)

        def leaser() -> None:
            clock = time.perf_counter
            mono = time.monotonic
            for _ in range(200):
                with repo.lease("a") as m:
                    m.predict(x)
            leasing.set()
            while not stop.is_set():
                s = mono()
                t = clock()
                with repo.lease("a") as m:
                    m.predict(x)
                durations.append(clock() - t)
                starts.append(s)

        thread = threading.Thread(target=leaser)
        thread.start()
        assert leasing.wait(30)
        # A control window before the version appears: the machine's own noise (other
        # processes, the scheduler) while the poll thread scans the repository.
        control_from = time.monotonic()
        time.sleep(args.control_seconds)  # a measuring window, not synchronisation
        appeared = time.monotonic()
        staging.rename(root / name / "1")
        ok = ready.wait(120)
        stop.set()
        thread.join()
    (root / name / "1").rename(staging)
    shutil.rmtree(root / name)
    if not ok:
        return {"error": "the new version did not become READY within 120 s"}
    end = ready_at[0]
    pairs = list(zip(starts, durations, strict=True))
    window = [d for s, d in pairs if appeared <= s + d and s <= end]
    control = [d for s, d in pairs if control_from <= s and s + d < appeared]
    return {
        "window_ms": round((end - appeared) * 1000, 1),
        **stats_ms(window),
        "control": stats_ms(control),
    }


def bench_arrival(tiny: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / "arrival"
    add_model(root, "a", tiny, model_toml(args))
    staging = work / "arrival-staging"
    started = time.perf_counter()
    make_arrival(staging, tiny, args.files)
    made = time.perf_counter() - started
    x = np.ones((1, 4), np.float32)
    rounds = [arrival_round(root, staging, f"b{i}", x, args) for i in range(args.arrival_rounds)]
    good = [r for r in rounds if "error" not in r]
    worst = max(good, key=lambda r: r["p99_ms"] or 0.0) if good else None
    return {
        "files": args.files,
        "files_written_s": round(made, 2),
        "switch_interval": sys.getswitchinterval(),
        "rounds": rounds,
        "worst_p99_ms": worst["p99_ms"] if worst else None,
        "worst_max_ms": max((r["max_ms"] or 0.0) for r in good) if good else None,
    }

"""A Python-runtime model whose ``predict`` records its input and then waits for a gate:
what a test needs to fill the server's worker threads and queue requests behind them.
Named in a version's ``keepwarm.toml`` as ``support.gated_model:GatedEcho``."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keepwarm.repository import Repository
from keepwarm.signature import Signature, TensorSpec
from support.repo_builders import place

GATE_TIMEOUT_S = 30.0
F32 = np.dtype("float32")
GATED = {"keepwarm.toml": '[python]\nclass = "support.gated_model:GatedEcho"\n'}


class Gate:
    lock: ClassVar[threading.Lock] = threading.Lock()
    runs: ClassVar[list[float]] = []  # the first value of each input that ran, in order
    running: ClassVar[threading.Semaphore] = threading.Semaphore(0)  # released per run
    open: ClassVar[threading.Event] = threading.Event()

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.runs = []
        cls.running = threading.Semaphore(0)
        cls.open.clear()


class GatedEcho:
    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, 4)),), outputs=(TensorSpec("y", F32, (None, 4)),)
    )

    def load(self, path: str | os.PathLike[str]) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with Gate.lock:
            Gate.runs.append(float(x.reshape(-1)[0]))
        Gate.running.release()
        if not Gate.open.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        return {"y": x}


def gated_leases(service: Any) -> int:
    """Leases held on version 1 of model ``gated`` in ``service``'s repository (-1: none
    loaded)."""
    entry = service.repository.status().models["gated"].versions[1].manager
    return -1 if entry is None else int(entry.leases)


def gated_repository(root: Path, model_toml: str = "[warmup]\nruns = 0\n") -> Repository:
    """A started repository at ``root`` whose model ``gated`` (version 1, ``GatedEcho``,
    ``model_toml`` as its model.toml) is READY; the caller closes it."""
    place(root / "gated", 1, files=GATED)
    (root / "gated" / "model.toml").write_text(model_toml)
    repository = Repository(root, allow_unsafe=True)
    repository.start()
    repository.wait_ready("gated", timeout=GATE_TIMEOUT_S)
    return repository

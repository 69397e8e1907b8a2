"""A Python-runtime model whose ``predict`` records its input and then waits for a gate:
what a test needs to fill the server's worker threads and queue requests behind them.
Named in a version's ``keepwarm.toml`` as ``support.gated_model:GatedEcho``."""

from __future__ import annotations

import os
import threading
from typing import ClassVar

import numpy as np

from keepwarm.signature import Signature, TensorSpec

GATE_TIMEOUT_S = 30.0
F32 = np.dtype("float32")


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

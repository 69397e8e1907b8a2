"""The model ``bench/workers.py`` serves, importable by name in a worker process
(``busy_model:Busy``): a pure-Python model that holds the GIL for ``busy_ms`` of CPU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")


class Busy:
    """Spins for the milliseconds of thread CPU time in the file ``busy_ms``, then answers
    ``x + 1``: Python work that holds the GIL, as a tokenizer or a tree walk does."""

    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, 4)),), outputs=(TensorSpec("y", F32, (None, 4)),)
    )

    def load(self, path: Path) -> None:
        self.seconds = float((path / "busy_ms").read_text()) / 1000

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        end = time.thread_time() + self.seconds
        spins = 0
        while time.thread_time() < end:
            spins += 1
        return {"y": inputs["x"] + 1}

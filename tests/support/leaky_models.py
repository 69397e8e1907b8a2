"""A Python model that leaks on purpose, for the worker memory tests (importable by name
in a worker: ``support.leaky_models:Leaky``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keepwarm.signature import Signature, TensorSpec

LEAK_BYTES = 2 << 20  # per call, written so that the pages are resident
LEAK_CAP = 24 << 20  # then it stops: a test under load must not eat the machine
PAGE = 4096


class Leaky:
    """Keeps ``LEAK_BYTES`` more with every call, up to ``LEAK_CAP``; answers ``x + 1`` and
    its process id."""

    signature = Signature(
        inputs=(TensorSpec("x", np.dtype("float32"), (None, 4)),),
        outputs=(
            TensorSpec("y", np.dtype("float32"), (None, 4)),
            TensorSpec("pid", np.dtype("int64"), (None,)),
        ),
    )

    def load(self, path: Path) -> None:
        self.kept: list[bytearray] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self.kept) * LEAK_BYTES < LEAK_CAP:
            block = bytearray(LEAK_BYTES)
            block[::PAGE] = b"x" * (LEAK_BYTES // PAGE)
            self.kept.append(block)
        x = inputs["x"]
        return {"y": x + 1, "pid": np.full(len(x), os.getpid(), dtype=np.int64)}

"""What a worker process does with a load description it receives: unpickle it, load,
warm up, predict. Run in ``multiprocessing`` spawn processes, so everything here is
importable by name (``support.description_worker``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import KeepwarmError
from keepwarm.loading import LoadDescription, RuntimeSpec
from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")


class Doubler:
    """A Python model the caller names by class: ``y = 2 * x``."""

    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, 2)),), outputs=(TensorSpec("y", F32, (None, 2)),)
    )

    def load(self, path: Path) -> None:
        self.path = path

    def predict(self, inputs: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        x = inputs["x"] if isinstance(inputs, dict) else inputs  # pickled: gets the array
        return {"y": x * 2}


def load_and_predict(blob: bytes, inputs: dict[str, list[Any]]) -> tuple[Any, ...]:
    """("ok", outputs as lists, warmup note) or ("error", type name, message)."""
    description = pickle.loads(blob)
    assert isinstance(description, LoadDescription)
    spec = RuntimeSpec(description)
    try:
        model = spec.load()
        note = spec.warmup(model)
        outputs = model.predict(model.signature.coerce(inputs))
    except KeepwarmError as exc:
        return ("error", type(exc).__name__, exc.message)
    return ("ok", {name: value.tolist() for name, value in outputs.items()}, note)

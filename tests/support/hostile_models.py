"""Plain Python models that misbehave, for the hostile-use tests.

``Exits`` tries to stop the thread running it: a row whose first value is -1 calls
``sys.exit(3)``, -2 raises ``KeyboardInterrupt``, -3 ``GeneratorExit`` (all
``BaseException``s that are not ``Exception``s); any other row is doubled. A row of -4
holds the call until the test sets ``Exits.gate`` (in-process only), so that other
requests queue behind it and join the failing batch. ``FailsAtEight`` is ``Exits`` that
raises at a batch of exactly 8 rows (a bucket that cannot be warmed)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")
SIGNATURE = Signature((TensorSpec("x", F32, (None, 2)),), (TensorSpec("y", F32, (None, 2)),))
RAISES: dict[float, type[BaseException]] = {-2.0: KeyboardInterrupt, -3.0: GeneratorExit}
GATE_TIMEOUT_S = 60.0


class Exits:
    signature = SIGNATURE
    gate: ClassVar[threading.Event] = threading.Event()
    held: ClassVar[threading.Event] = threading.Event()

    def load(self, path: Any) -> None:
        del path

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        firsts = set(x[:, 0].tolist()) if x.size else set()
        if -4.0 in firsts:
            Exits.held.set()
            if not Exits.gate.wait(GATE_TIMEOUT_S):
                raise TimeoutError("the test never opened the gate")
        if -1.0 in firsts:
            sys.exit(3)
        for value, kind in RAISES.items():
            if value in firsts:
                raise kind()
        return {"y": x * 2}


class FailsAtEight(Exits):
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs["x"]) == 8:
            raise RuntimeError("no room for 8 rows")
        return super().predict(inputs)


def place_exiting(model_dir: Path, model_toml: str = "", cls: str = "Exits") -> Path:
    """Version 1 of ``cls`` under ``model_dir`` (served with ``--allow-unsafe``)."""
    version = model_dir / "1"
    version.mkdir(parents=True)
    (version / "keepwarm.toml").write_text(f'[python]\nclass = "support.hostile_models:{cls}"\n')
    if model_toml:
        (model_dir / "model.toml").write_text(model_toml)
    (version / ".keepwarm-ready").touch()
    return version

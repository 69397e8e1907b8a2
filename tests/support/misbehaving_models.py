"""Plain Python models for the library's hostile-use tests (``keepwarm.load(...,
options={"class": ...})``): ``Doubles`` answers as its signature says (``y = 2 * x``); the
others break that promise one way each (a row too many or too few, an output of another
name, dtype or shape, a text where an array belongs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")
SIGNATURE = Signature((TensorSpec("x", F32, (None, 2)),), (TensorSpec("y", F32, (None, 2)),))


class Doubles:
    signature = SIGNATURE

    def load(self, path: Any) -> None:
        del path

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": inputs["x"] * 2}


class RenamesOutput(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"z": inputs["x"] * 2}


class AddsOutput(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": inputs["x"] * 2, "extra": inputs["x"]}


class AnswersText(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return "hello"


class AnswersWiderRows(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": np.zeros((len(inputs["x"]), 3), F32)}


class AnswersScalar(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": np.float32(1.0)}


class AnswersFloatsAsIntegers(Doubles):
    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": (inputs["x"] * 2).astype(np.int64)}


class AnswersFloat64(Doubles):
    """Plain numpy code often widens to float64: the values fit the float32 output."""

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": inputs["x"].astype(np.float64) * 2}


class TwoInputsNamedX(Doubles):
    """Two inputs of one name: no dict of inputs can match both."""

    signature = Signature(
        (TensorSpec("x", F32, (None, 2)), TensorSpec("x", F32, (None, 3))),
        (TensorSpec("y", F32, (None, 2)),),
    )


class TwoOutputsNamedY(Doubles):
    signature = Signature(
        (TensorSpec("x", F32, (None, 2)),),
        (TensorSpec("y", F32, (None, 2)), TensorSpec("y", F32, (None, 2))),
    )


class DoublesThree(Doubles):
    """``Doubles`` over rows of three."""

    signature = Signature((TensorSpec("x", F32, (None, 3)),), (TensorSpec("y", F32, (None, 3)),))


class WideRows(Doubles):
    """Rows of 1 MiB (float32 ``[-1, 262144]``) that ``predict`` never reads: a zero per
    row. Generated inputs of many rows are allocated (zeros, never touched) and nothing
    more; past the machine's memory, their allocation raises MemoryError."""

    ROW_BYTES = 1 << 20
    signature = Signature(
        (TensorSpec("x", F32, (None, ROW_BYTES // 4)),), (TensorSpec("y", F32, (None, 1)),)
    )

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": np.zeros((len(inputs["x"]), 1), F32)}


class ModelsOwnError(Exception):
    """An exception type of the model's own."""


class RaisesItsOwn(Doubles):
    """``Doubles`` that refuses a negative input with an exception of its own type."""

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        if (inputs["x"] < 0).any():
            raise ModelsOwnError("no negative inputs")
        return {"y": inputs["x"] * 2}


class ExitsOnClose(Doubles):
    """``Doubles`` whose ``close()`` calls ``sys.exit(3)``."""

    def close(self) -> None:
        raise SystemExit(3)


def two_versions(root: Path, cls: str = "Doubles") -> Path:
    """Model ``m`` under ``root``: versions 1 and 2 of ``cls`` (``Doubles``), both served (a
    Python model: allow_unsafe)."""
    for version in (1, 2):
        directory = root / "m" / str(version)
        directory.mkdir(parents=True)
        (directory / "keepwarm.toml").write_text(
            f'[python]\nclass = "support.misbehaving_models:{cls}"\n'
        )
        (directory / ".keepwarm-ready").touch()
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    return root

"""Tensor specs, model signatures, and the one place inputs are checked against them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError

Shape = tuple[int | None, ...]
Inputs = Mapping[str, np.ndarray] | np.ndarray
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype[Any]
    shape: Shape | None  # None: unknown rank; None inside: any size on that axis

    def describe(self) -> str:
        dims = (
            "?"
            if self.shape is None
            else "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"
        )
        return f"{self.name}: {self.dtype.name}{dims}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "shape": None if self.shape is None else [-1 if d is None else d for d in self.shape],
        }


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = "serving_default"
    _by_name: dict[str, TensorSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({spec.name: spec for spec in self.inputs})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    def widen_json(self, inputs: Inputs) -> Inputs:
        """JSON has no 1 vs 1.0: integer arrays decoded from JSON, going to a float input,
        become that float type (``coerce`` refuses int to float for arrays built in code)."""
        if isinstance(inputs, np.ndarray):
            if len(self.inputs) != 1:
                return inputs  # coerce says why
            inputs = {self.inputs[0].name: inputs}
        widened = {}
        for name, value in inputs.items():
            spec = self._by_name.get(name)
            if spec is not None and spec.dtype.kind == "f":
                array = np.asarray(value)
                if array.dtype.kind in "iub":
                    value = array.astype(spec.dtype)
            widened[name] = value
        return widened

    def coerce(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Check ``inputs`` against the signature and cast same-kind dtypes (float64 -> float32).

        A bare array is accepted for single-input models. Raises ``InvalidInputError``
        naming the input, what was expected and what was given.
        """
        if type(inputs) is np.ndarray and len(self.inputs) == 1:
            spec = self.inputs[0]  # the hot path: one array, already the right dtype and rank
            if inputs.dtype == spec.dtype and _shape_ok(spec.shape, inputs.shape):
                return {spec.name: inputs}
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                names = ", ".join(s.name for s in self.inputs)
                raise InvalidInputError(
                    f"this model takes {len(self.inputs)} inputs ({names}); "
                    "pass a dict of input name to array"
                )
            inputs = {self.inputs[0].name: inputs}
        unknown = [k for k in inputs if k not in self._by_name]
        missing = [s.name for s in self.inputs if s.name not in inputs]
        if unknown or missing:
            raise InvalidInputError(
                f"inputs do not match the signature: missing {missing}, unexpected {unknown}; "
                f"expected {[s.describe() for s in self.inputs]}"
            )
        return {name: _coerce_one(self._by_name[name], value) for name, value in inputs.items()}


TEXT_KINDS = "OSU"  # numpy kinds of text tensors: object, bytes, str


def _shape_ok(want: Shape | None, got: tuple[int, ...]) -> bool:
    if want is None:
        return True
    if len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):  # noqa: SIM110 (a loop: no generator on the hot path)
        if w is not None and w != g:
            return False
    return True


def _coerce_one(spec: TensorSpec, value: Any) -> np.ndarray:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype != spec.dtype:
        if array.dtype.kind == spec.dtype.kind or (
            spec.dtype.kind in TEXT_KINDS and array.dtype.kind in TEXT_KINDS
        ):
            array = array.astype(spec.dtype)
        else:
            raise InvalidInputError(
                f"input {spec.name!r}: expected dtype {spec.dtype.name}, got {array.dtype.name}"
            )
    if not _shape_ok(spec.shape, array.shape):
        raise InvalidInputError(
            f"input {spec.name!r}: expected shape {spec.describe().split(':', 1)[1].strip()}"
            f" (-1 = any size), got {list(array.shape)}"
        )
    return array

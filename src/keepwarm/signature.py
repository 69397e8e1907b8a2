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


def dtype_text(dtype: np.dtype[Any]) -> str:
    """A dtype's name in messages: a string tensor's is "string", not numpy's "object"."""
    return "string" if dtype.kind == "O" else dtype.name


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
        return f"{self.name}: {dtype_text(self.dtype)}{dims}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "shape": None if self.shape is None else [-1 if d is None else d for d in self.shape],
        }


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs.

    ``batch_groups``: groups of inputs whose leading dimension is one and the same unknown
    size (a batch), checked to agree before the model runs. None (the default) means every
    input whose leading size is unknown shares it, as Keras, SavedModel and TF Serving
    assume; a runtime that knows better (ONNX names its symbolic dimensions) passes them.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = "serving_default"
    batch_groups: tuple[tuple[str, ...], ...] | None = None
    _by_name: dict[str, TensorSpec] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _shared: list[tuple[str, ...]] = field(
        default_factory=list, init=False, compare=False, repr=False
    )
    # One input: (name, dtype, the whole shape when every size is known, the sizes after an
    # unknown leading one when those are known and not ()): an array of that very dtype
    # whose shape equals either passes without ``_shape_ok``. None: no such shortcut.
    _one: tuple[str, np.dtype[Any], Shape | None, Shape | None] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_name.update({spec.name: spec for spec in self.inputs})
        groups = self.batch_groups
        if groups is None:
            batched = tuple(s.name for s in self.inputs if s.shape and s.shape[0] is None)
            groups = (batched,)
        self._shared.extend(group for group in groups if len(group) > 1)
        if len(self.inputs) == 1:
            spec = self.inputs[0]
            shape = spec.shape
            if shape is not None and None not in shape:
                object.__setattr__(self, "_one", (spec.name, spec.dtype, shape, None))
            elif shape is not None and len(shape) > 1 and None not in shape[1:]:
                # a match of the sizes after the first has the rank too, as they are not ()
                object.__setattr__(self, "_one", (spec.name, spec.dtype, None, shape[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    def widen_json(self, inputs: Inputs) -> Inputs:
        """JSON has no 1 vs 1.0: integer arrays decoded from JSON, going to a float input,
        become that float type (``coerce`` refuses int to float for arrays built in code)."""
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                return inputs  # coerce says why
            inputs = {self.inputs[0].name: inputs}
        widened = {}
        for name, value in inputs.items():
            spec = self._by_name.get(name)
            if spec is not None and spec.dtype.kind == "f":
                try:
                    array = np.asarray(value)
                except (ValueError, TypeError):
                    array = None  # ragged: coerce names the input
                if array is not None and array.dtype.kind in "iub":
                    value = array.astype(spec.dtype)
            widened[name] = value
        return widened

    def coerce(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Check ``inputs`` against the signature and cast where no value changes.

        A bare array (or nested list) is accepted for single-input models. Casts:

        - integers to a narrower or unsigned integer type only when every value fits (a
          vectorised min/max check); otherwise ``InvalidInputError`` with the range;
        - float to float (float64 -> float32), text to text;
        - nested lists of integers to a float input (JSON clients send ``1`` for ``1.0``);
          integer *arrays* to a float input are refused (``widen_json`` is for decoded JSON);
        - floats are never rounded into an integer input: refused, even when integral.

        Inputs that share an unknown leading dimension (``batch_groups``) must agree on it.
        Raises ``InvalidInputError`` naming the input, what was expected and what was given.
        """
        one = self._one
        if one is not None and type(inputs) is np.ndarray and inputs.dtype is one[1]:
            # the hottest path: one array of the very dtype, its shape one tuple compare
            got = inputs.shape
            if got == one[2] or got[1:] == one[3]:
                return {one[0]: inputs}
        specs = self.inputs
        if type(inputs) is np.ndarray and len(specs) == 1:
            spec = specs[0]  # the hot path: one array, already the right dtype and rank
            if inputs.dtype == spec.dtype and _shape_ok(spec.shape, inputs.shape):
                return {spec.name: inputs}
        elif type(inputs) is dict and len(inputs) == len(specs):
            for spec in specs:  # the hot path for dicts: every array already right
                value = inputs.get(spec.name)
                if (
                    type(value) is not np.ndarray
                    or value.dtype != spec.dtype
                    or not _shape_ok(spec.shape, value.shape)
                ):
                    break
            else:
                if self._shared:
                    self._check_shared(inputs)
                return inputs
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Mapping):
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise InvalidInputError(
                    f"this model takes {len(specs)} inputs ({names}); "
                    "pass a dict of input name to array"
                )
            inputs = {specs[0].name: inputs}
        unknown = [k for k in inputs if k not in self._by_name]
        missing = [s.name for s in specs if s.name not in inputs]
        if unknown or missing:
            raise InvalidInputError(
                f"inputs do not match the signature: missing {missing}, unexpected {unknown}; "
                f"expected {[s.describe() for s in specs]}"
            )
        coerced = {name: _coerce_one(self._by_name[name], value) for name, value in inputs.items()}
        if self._shared:
            self._check_shared(coerced)
        return coerced

    def _check_shared(self, arrays: Mapping[str, np.ndarray]) -> None:
        for group in self._shared:
            first = arrays[group[0]].shape[0]
            for name in group:
                if arrays[name].shape[0] != first:
                    sizes = ", ".join(f"{n}: {arrays[n].shape[0]}" for n in group)
                    raise InvalidInputError(
                        f"inputs {', '.join(map(repr, group))} share their leading (batch) "
                        f"dimension, so their sizes must agree; got {sizes}"
                    )


TEXT_KINDS = "OSU"  # numpy kinds of text tensors: object, bytes, str
_BOUNDS: dict[np.dtype[Any], tuple[int, int]] = {}  # integer dtype -> (min, max), filled lazily


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
    if isinstance(value, np.ma.MaskedArray):  # its mask was dropped without a word
        raise InvalidInputError(
            f"input {spec.name!r}: a masked array, whose mask no model reads; pass "
            "value.filled(fill_value) with the value masked entries should have"
        )
    if isinstance(value, np.ndarray):
        array, from_list = value, False
    else:
        try:
            array, from_list = np.asarray(value), True
        except (ValueError, TypeError) as exc:  # numpy: "inhomogeneous shape"
            raise InvalidInputError(
                f"input {spec.name!r}: expected a {spec.describe().split(': ', 1)[1]} tensor, "
                f"got ragged nested lists (rows of different lengths): {exc}"
            ) from None
    if array.dtype != spec.dtype:
        array = _cast(spec, array, from_list)
    if not _shape_ok(spec.shape, array.shape):
        raise InvalidInputError(
            f"input {spec.name!r}: expected shape {spec.describe().split(':', 1)[1].strip()}"
            f" (-1 = any size), got {list(array.shape)}"
        )
    return array


def _cast(spec: TensorSpec, array: np.ndarray, from_list: bool) -> np.ndarray:
    """``array`` as ``spec.dtype`` when no value changes (see ``Signature.coerce``)."""
    want, have = spec.dtype, array.dtype
    if have.kind in "iu" and want.kind in "iu":
        if array.size and not np.can_cast(have, want):
            bounds = _BOUNDS.get(want)
            if bounds is None:
                info = np.iinfo(want)
                bounds = _BOUNDS[want] = (int(info.min), int(info.max))
            low, high = int(array.min()), int(array.max())
            if low < bounds[0] or high > bounds[1]:
                raise InvalidInputError(
                    f"input {spec.name!r}: expected dtype {want.name} (values "
                    f"{bounds[0]}..{bounds[1]}), got {have.name} values in [{low}, {high}], "
                    f"which {want.name} cannot hold"
                )
        return array.astype(want)
    if (have.kind == want.kind and have.kind not in "iu") or (
        have.kind in TEXT_KINDS and want.kind in TEXT_KINDS
    ):
        return array.astype(want)
    if from_list and have.kind in "iu" and want.kind == "f":
        return array.astype(want)  # JSON clients send 1 for 1.0
    hint = ""
    if have.kind == "f" and want.kind in "iu":
        hint = f" (floats are not rounded into integers: round and cast them to {want.name})"
    raise InvalidInputError(
        f"input {spec.name!r}: expected dtype {dtype_text(want)}, got {dtype_text(have)}{hint}"
    )

"""Pure helpers: which requests can share a batch, merging them, splitting the outputs.

A request is a dict of input name to array whose first axis is its batch (rows). Requests
share a batch only when every input agrees on dtype and on every non-batch axis, except
the axes ``pad_axes`` lists: there, inputs are padded with zeros (empty strings for text)
up to the largest in the batch, and outputs that carry the padded size on an axis their
signature leaves open are cropped back to each request's own size. A batch is padded with
rows (copies of its last row) up to its bucket, one of 1, 2, 4, ... ``max_batch_size``, so
that the model only ever sees sizes warmed at load. Outputs are split by rows after a
length check: a model that answers with the wrong number of rows fails the batch, it never
shifts results.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from keepwarm.errors import InternalError, InvalidConfigError

if TYPE_CHECKING:
    from keepwarm.signature import Signature

Arrays = dict[str, np.ndarray]
ALL_INPUTS = "*"  # the pad_axes key that applies to every input


class BatchSplitError(InternalError):
    """A model answered a batch with outputs that cannot be split back into requests."""


@dataclass(frozen=True)
class PadAxes:
    """Non-batch axes (>= 1) that may be padded, per input name (``"*"``: every input)."""

    axes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, tuple[int, ...]] = {}
        for name, axes in dict(self.axes).items():
            if not isinstance(name, str) or not name:
                raise InvalidConfigError(
                    f"pad_axes: an input name is a non-empty string, got {name!r}"
                )
            if not isinstance(axes, list | tuple) or not all(
                type(a) is int and a >= 1 for a in axes
            ):
                raise InvalidConfigError(
                    f"pad_axes[{name!r}]: expected a list of axes >= 1 (axis 0 is the "
                    f"batch), got {axes!r}"
                )
            clean[name] = tuple(sorted(set(axes)))
        object.__setattr__(self, "axes", MappingProxyType(clean))

    @classmethod
    def of(cls, value: PadAxes | Sequence[int] | Mapping[str, Sequence[int]] | None) -> PadAxes:
        """From a list of axes (every input) or a table of input name to axes."""
        if value is None:
            return NO_PADDING
        if isinstance(value, PadAxes):
            return value
        table: dict[str, Any] = dict(value) if isinstance(value, Mapping) else {ALL_INPUTS: value}
        return cls(table)  # checked in __post_init__

    def check(self, signature: Signature) -> None:
        """InvalidConfigError when an entry names an input the signature lacks or an axis
        past its rank (for ``"*"``: past every input's): padding there never happens, and
        such a table loaded and batched nothing across sizes, silently."""
        ranks = {s.name: None if s.shape is None else len(s.shape) for s in signature.inputs}
        have = ", ".join(f"{name!r}: {rank} axes" for name, rank in ranks.items())
        for name, axes in self.axes.items():
            if name == ALL_INPUTS:
                if None in ranks.values():
                    continue  # an input of unknown rank may have any axis
                top = max(r for r in ranks.values() if r is not None)
                if axes and axes[-1] >= top:
                    raise InvalidConfigError(
                        f"pad_axes: axis {axes[-1]} to pad, but no input has one ({have})"
                    )
            elif name not in ranks:
                raise InvalidConfigError(
                    f"pad_axes[{name!r}]: the model has no input {name!r} (inputs: "
                    f"{', '.join(ranks)})"
                )
            elif (rank := ranks[name]) is not None and axes and axes[-1] >= rank:
                raise InvalidConfigError(
                    f"pad_axes[{name!r}]: axis {axes[-1]} to pad, but input {name!r} has "
                    f"{rank} axes (0 is the batch)"
                )

    def for_input(self, name: str) -> tuple[int, ...]:
        return self.axes.get(name, self.axes.get(ALL_INPUTS, ()))

    def __bool__(self) -> bool:
        return any(self.axes.values())


NO_PADDING = PadAxes()


def buckets(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... and ``max_batch_size`` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


def bucket_for(rows: int, max_batch_size: int) -> int:
    """The smallest bucket holding ``rows``; ``rows`` itself past ``max_batch_size``."""
    if rows >= max_batch_size:
        return rows
    size = 1
    while size < rows:
        size *= 2
    return min(size, max_batch_size)


def rows_of(inputs: Mapping[str, np.ndarray]) -> int:
    """A request's rows; 0 when it cannot be batched (as ``rows_and_key`` says, cheaper)."""
    rows = -1
    for array in inputs.values():
        shape = array.shape
        if not shape:
            return 0
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            return 0
    return rows if rows > 0 else 0


def rows_and_key(inputs: Mapping[str, np.ndarray], pad: PadAxes) -> tuple[int, Hashable] | None:
    """A request's rows and the key of the requests it may share a batch with; None when it
    cannot be batched (no inputs, a scalar input, inputs disagreeing on their rows)."""
    rows = -1
    key = []
    padded = bool(pad.axes)  # else every axis keys as it is (no per-axis look-up)
    for name in sorted(inputs) if len(inputs) > 1 else inputs:
        array = inputs[name]
        shape = array.shape
        if not shape:
            return None
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        tail = shape[1:]
        if padded:
            axes = pad.for_input(name)
            tail = tuple(-1 if axis in axes else size for axis, size in enumerate(tail, 1))
        # The dtype itself, not ``dtype.str`` (built anew at each read: 1.9 of the 3.1 µs
        # this took per MLP request, on the event loop); equal dtypes concatenate alike.
        key.append((name, array.dtype, tail))
    if rows <= 0:
        return None
    return rows, tuple(key)


@dataclass(frozen=True)
class Merged:
    """A batch's inputs, and how to take its outputs apart."""

    inputs: Arrays
    rows: tuple[int, ...]  # each request's rows, in order
    padded_rows: int  # rows the model sees (the bucket)
    padded: Mapping[int, int]  # axis -> the size padded to (only axes that were padded)
    own: tuple[Mapping[int, int], ...]  # per request: axis -> its own size there


def merge(parts: Sequence[Mapping[str, np.ndarray]], bucket: int, pad: PadAxes) -> Merged:
    """One batch of ``parts`` (requests of one key), padded with rows up to ``bucket``."""
    rows = tuple(next(iter(part.values())).shape[0] for part in parts)
    total = sum(rows)
    if len(parts) == 1 and total == bucket:
        return Merged(dict(parts[0]), rows, total, {}, ({},))
    names = list(parts[0])
    targets = {name: _target_shape([p[name] for p in parts], pad.for_input(name)) for name in names}
    padded_axes, own = _padded_axes(parts, targets, pad)
    inputs: Arrays = {}
    for name in names:
        arrays = [_pad_to(p[name], targets[name]) for p in parts]
        if bucket > total:
            last = arrays[-1][-1:]
            arrays.append(np.repeat(last, bucket - total, axis=0))
        inputs[name] = np.concatenate(arrays, axis=0)
    return Merged(inputs, rows, max(bucket, total), padded_axes, own)


def _target_shape(arrays: Sequence[np.ndarray], axes: tuple[int, ...]) -> tuple[int, ...]:
    shape = list(arrays[0].shape[1:])
    for axis in axes:
        if axis <= len(shape):
            shape[axis - 1] = max(a.shape[axis] for a in arrays)
    return tuple(shape)


def _padded_axes(
    parts: Sequence[Mapping[str, np.ndarray]],
    targets: Mapping[str, tuple[int, ...]],
    pad: PadAxes,
) -> tuple[dict[int, int], tuple[dict[int, int], ...]]:
    """Axes where outputs can be cropped: each padded input agrees on the padded size
    there, and each request on its own size (else the axis is left as the model gives it)."""
    sizes: dict[int, set[int]] = {}
    for name, target in targets.items():
        for axis in pad.for_input(name):
            if axis <= len(target):
                sizes.setdefault(axis, set()).add(target[axis - 1])
    padded = {axis: next(iter(s)) for axis, s in sizes.items() if len(s) == 1}
    own: list[dict[int, int]] = []
    for part in parts:
        mine: dict[int, int] = {}
        for axis in list(padded):
            found = {
                part[name].shape[axis]
                for name in targets
                if axis in pad.for_input(name) and axis < part[name].ndim
            }
            if len(found) == 1:
                mine[axis] = found.pop()
        own.append(mine)
    # An axis is cropped only when every request knows its size there.
    keep = {axis: size for axis, size in padded.items() if all(axis in m for m in own)}
    return keep, tuple({a: m[a] for a in keep} for m in own)


def _pad_to(array: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] == tail:
        return array
    widths = [(0, 0)] + [(0, want - have) for have, want in zip(array.shape[1:], tail, strict=True)]
    if array.dtype.kind == "O":
        out = np.full((array.shape[0], *tail), b"", dtype=object)
        out[tuple(slice(0, n) for n in array.shape)] = array
        return out
    return np.pad(array, widths)


def split(
    outputs: Mapping[str, np.ndarray],
    merged: Merged,
    model: str,
    crop: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Arrays]:
    """Each request's rows of ``outputs``; ``BatchSplitError`` naming ``model`` and the
    output when an output does not have one row per batch row.

    After padding, an output axis is cropped back to each request's own size where it has
    the padded size and ``crop`` lists it for that output (the axes the signature leaves
    open); without ``crop`` (no signature), wherever the size matches."""
    if len(merged.rows) == 1 and not merged.padded and merged.padded_rows == merged.rows[0]:
        return [dict(outputs)]
    for name, array in outputs.items():
        got = np.shape(array)
        if not got or got[0] != merged.padded_rows:
            raise BatchSplitError(
                f"model {model!r} returned output {name!r} with shape {list(got)} for a batch "
                f"of {merged.padded_rows} rows: a batched model must return one row per input "
                "row on the first axis; the batch's results cannot be matched to its requests "
                "(turn batching off for this model)"
            )
    arrays = {name: np.asarray(array) for name, array in outputs.items()}
    results: list[Arrays] = []
    start = 0
    for rows, own in zip(merged.rows, merged.own, strict=True):
        result: Arrays = {}
        for name, array in arrays.items():
            index: list[slice] = [slice(start, start + rows)]
            open_axes = None if crop is None else crop.get(name, ())
            for axis in range(1, array.ndim):
                size = merged.padded.get(axis)
                if (
                    size is not None
                    and array.shape[axis] == size
                    and (open_axes is None or axis in open_axes)
                ):
                    index.append(slice(0, own[axis]))
                else:
                    index.append(slice(None))
            result[name] = array[tuple(index)]
        results.append(result)
        start += rows
    return results

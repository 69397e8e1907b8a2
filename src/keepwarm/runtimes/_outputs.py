"""A Python model's answer checked against the outputs its signature declares.

A model's ``predict`` is the user's code: it may answer an output of another name, an
extra one, text where numbers were declared, or a shape the signature rules out. Handed on
as it came, such an answer reached the caller (and the server's encoders) as if the model
had promised it; now it fails the call with ``InternalError`` naming the model, the output,
what came and what the signature says. A dtype is cast only where no value changes (as
inputs are, ``keepwarm.signature``): float to float (float64 to float32: numpy code widens
easily), text to text, and integers to another integer type when every value fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keepwarm.errors import InternalError
from keepwarm.signature import TEXT_KINDS, TensorSpec, _shape_ok

Arrays = dict[str, np.ndarray]


def checked_outputs(result: Arrays, specs: tuple[TensorSpec, ...], what: str) -> Arrays:
    """``result`` when it matches ``specs`` (a new dict where a dtype was cast), else
    ``InternalError`` naming ``what`` (the model)."""
    if len(result) != len(specs) or any(spec.name not in result for spec in specs):
        names = {spec.name for spec in specs}
        missing = [spec.name for spec in specs if spec.name not in result]
        unexpected = [name for name in result if name not in names]
        raise InternalError(
            f"{what} answered outputs its signature does not declare: missing {missing}, "
            f"unexpected {unexpected}; expected {[spec.describe() for spec in specs]}"
        )
    cast: Arrays | None = None
    for spec in specs:
        value = result[spec.name]
        if value.dtype != spec.dtype:
            value = _cast(spec, value, what)
            cast = cast if cast is not None else dict(result)
            cast[spec.name] = value
        if not _shape_ok(spec.shape, value.shape):
            raise _refused(spec, value, what)
    return result if cast is None else cast


def _cast(spec: TensorSpec, value: np.ndarray, what: str) -> np.ndarray:
    want, have = spec.dtype, value.dtype
    same_kind = have.kind == want.kind and have.kind in "fcb"
    text = have.kind in TEXT_KINDS and want.kind in TEXT_KINDS
    if same_kind or text:
        return value.astype(want)
    if have.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        if not value.size or (info.min <= int(value.min()) and int(value.max()) <= info.max):
            return value.astype(want)
    raise _refused(spec, value, what)


def _refused(spec: TensorSpec, value: Any, what: str) -> InternalError:
    dims = ", ".join(str(d) for d in value.shape)
    return InternalError(
        f"{what} answered output {spec.name!r} as {value.dtype.name}[{dims}]; "
        f"expected {spec.describe()} (-1 = any size)"
    )

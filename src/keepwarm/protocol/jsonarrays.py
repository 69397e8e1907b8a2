"""Numpy arrays from decoded JSON values, with one vectorised check per tensor (no
per-element Python): shapes checked by their true size, values only of a kind the
tensor's dtype takes (no booleans as numbers, no floats into integers, no out-of-range
integers), strings as object arrays of UTF-8 bytes, and errors in JSON's words."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonwide
from keepwarm.protocol.dtypes import OBJECT, TEXT_KINDS

MAX_DIMS = 64  # numpy's own limit on the number of axes


def checked_shape(shape: Any, *, tensor: str) -> tuple[list[int], int]:
    """``shape`` (a list of non-negative integers) and its number of elements, checked.

    Python integers do not overflow, so a shape whose product exceeds any real tensor is
    refused here by its true size, before numpy (whose sizes are 64-bit) sees it. A shape
    with a zero dimension has no elements, but numpy still refuses one whose other
    dimensions' product, in bytes, is past 2**63 (``[2**32, 2**32, 0]``): refused here too.
    """
    if not isinstance(shape, list):
        raise _bad_shape(shape, tensor)
    for dim in shape:  # a loop, not ``any`` over a generator: on every request
        if type(dim) is not int or dim < 0:
            raise _bad_shape(shape, tensor)
    if len(shape) > MAX_DIMS:
        raise InvalidInputError(f"input {tensor!r}: {len(shape)} dimensions; at most {MAX_DIMS}")
    count = math.prod(shape)
    if count >= 2**62 or (not count and math.prod(filter(None, shape)) >= 2**59):
        raise InvalidInputError(f"input {tensor!r}: shape {shape} has too many elements")
    return shape, count


def _bad_shape(shape: Any, tensor: str) -> InvalidInputError:
    return InvalidInputError(
        f"input {tensor!r}: shape must be a list of non-negative integers, got {shape!r}"
    )


def array_from_json(value: Any, dtype: np.dtype[Any] | None, *, tensor: str) -> np.ndarray:
    """A numpy array from a JSON value (nested lists or a scalar).

    ``dtype`` None: numpy's own inference (bools, ints as int64, floats as float64,
    strings). A target dtype accepts only values of a compatible kind (integers into a
    float tensor, but not floats into an integer one, nor out-of-range integers).
    """
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InvalidInputError(f"input {tensor!r}: not a rectangular tensor ({exc})") from None
    if array.dtype == OBJECT and dtype is None:
        raise InvalidInputError(f"input {tensor!r}: mixed or null values are not a tensor")
    if dtype is None:
        return array
    if array.dtype.kind in "iuf" and _holds_booleans(value, array):
        raise InvalidInputError(f"input {tensor!r}: expected {dtype.name} values, got a boolean")
    if dtype == jsonwide.U64 and array.dtype.kind == "f" and jsonwide.only_integers(value):
        exact = jsonwide.uint64_array(value)  # integers past int64's, made float64
        if exact is None:
            raise _out_of_range(tensor, dtype)
        return exact
    return cast(array, dtype, tensor=tensor)


def _holds_booleans(value: Any, array: np.ndarray) -> bool:
    """Whether the JSON ``value`` that numpy made the numeric ``array`` holds a ``true`` or
    ``false`` (numpy takes them as 1 and 0 beside numbers). One can hide only where the
    array holds 0 or 1: a tensor without either is settled by one pass of numpy over the
    array; else the lists' element types are looked at (in C: ``set(map(type, row))``).

    Only the general decoders come here (the fast ones take no booleans: simdjson reads
    none as a number). ``bench/ab.py`` (MLP, v2 JSON with nested ``data``, the general
    path; random values, so the numpy pass settles each; c=1, 10 rounds of 3 s): req/s
    0.99x, CPU per request 1.00x. A 784-number tensor 80% zeros costs the look at its
    types: 65 against 29 us for its conversion (timeit, under the bench lock), about 4%
    of such a request's server CPU; ``orjson.dumps`` searched for ``t``/``f``, and the
    body searched for ``true``/``false``, were no cheaper."""
    if not isinstance(value, list):
        return False  # a scalar bool is a bool array; a numpy array holds no JSON
    flat = array.reshape(-1)
    if not ((flat == 0) | (flat == 1)).any():
        return False
    rows = [value]
    while rows:
        row = rows.pop()
        if row and type(row[0]) is list:  # rectangular: numpy made numbers of it
            rows.extend(row)
        elif bool in set(map(type, row)):
            return True
    return False


def cast(array: np.ndarray, dtype: np.dtype[Any], *, tensor: str) -> np.ndarray:
    """``array`` as ``dtype``, refusing lossy kinds (float -> int, text -> number, ...)."""
    have, want = array.dtype.kind, dtype.kind
    if want in TEXT_KINDS:
        if have not in TEXT_KINDS and array.size:
            raise _mismatch(tensor, dtype, array)
        return text_array(array, tensor=tensor)
    # JSON's true and false are no numbers: booleans are refused by a numeric tensor
    compatible = have == want or (want == "f" and have in "iu") or (want in "iu" and have in "iu")
    if not compatible and (array.size or have not in "fiub"):
        if want in "iu" and have == "f" and _integers_beyond(array, np.iinfo(dtype)):
            raise _out_of_range(tensor, dtype)
        raise _mismatch(tensor, dtype, array)
    if want in "iu" and have in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise _out_of_range(tensor, dtype)
    if array.dtype == dtype:
        return array
    if not _may_overflow(array.dtype, dtype):
        return array.astype(dtype)
    return _quiet_astype(array, dtype)  # 1e300 as float32 is inf, as numpy says


def _integers_beyond(array: np.ndarray, info: np.iinfo[Any]) -> bool:
    """Whether floats meant for an integer tensor are all whole numbers, some past its
    range: integers past 64 bits, which JSON parsers read as floats (orjson does). The
    float nearest -2**63 - 1 is -2**63: at int64's low end, the bound is past too."""
    with np.errstate(invalid="ignore"):
        whole = bool((np.floor(array) == array).all())
    low = array <= info.min if info.bits == 64 and info.min else array < info.min
    return whole and bool((low | (array >= info.max + 1)).any())


def _out_of_range(tensor: str, dtype: np.dtype[Any]) -> InvalidInputError:
    info = np.iinfo(dtype)
    return InvalidInputError(
        f"input {tensor!r}: values out of range for {dtype.name} ([{info.min}, {info.max}])"
    )


def _errstate_astype(array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return array.astype(dtype)


def _quiet_astype_maker() -> Callable[[np.ndarray, np.dtype[Any]], np.ndarray]:
    """``array.astype(dtype)`` with overflow ignored, as under ``np.errstate(over=
    "ignore")``: with numpy 2's error state set directly where numpy keeps it (a context
    variable holding what ``_make_extobj`` makes), as ``errstate`` itself does without
    its Python class around it: 9-10 against 19-22 us per MLP input (784 numbers, FP64
    to FP32) on a server's request path. ``np.errstate`` itself where numpy lacks those."""
    try:
        from numpy._core._multiarray_umath import _make_extobj
        from numpy._core._ufunc_config import _extobj_contextvar  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numpy 1.x
        return _errstate_astype
    with np.errstate(over="ignore"):
        expected = _extobj_contextvar.get()
    if type(_make_extobj(over="ignore")) is not type(expected):  # pragma: no cover
        return _errstate_astype

    def astype(array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
        token = _extobj_contextvar.set(_make_extobj(over="ignore"))
        try:
            cast: np.ndarray = array.astype(dtype)
        finally:
            _extobj_contextvar.reset(token)
        return cast

    return astype


_quiet_astype = _quiet_astype_maker()


def _may_overflow(have: np.dtype[Any], want: np.dtype[Any]) -> bool:
    """Whether casting a compatible ``have`` to ``want`` can overflow (and numpy warn): a
    float to a narrower float, or anything to float16 (70000 is past its range). Integers
    were range-checked; 64-bit integers fit float32's range (2**64 < 3.4e38)."""
    return want.kind == "f" and (want.itemsize == 2 or have.itemsize > want.itemsize)


def text_array(array: np.ndarray, *, tensor: str) -> np.ndarray:
    """Strings as an object array of UTF-8 bytes (what TF and ONNX string inputs take)."""
    if array.dtype == OBJECT:
        out = np.empty(array.shape, dtype=OBJECT)
        flat = out.reshape(-1)
        for i, item in enumerate(array.reshape(-1)):
            if isinstance(item, str):
                flat[i] = item.encode()
            elif isinstance(item, bytes):
                flat[i] = item
            else:
                raise InvalidInputError(
                    f"input {tensor!r}: expected strings, got {json_kind(item)}"
                )
        return out
    if array.dtype.kind == "U":
        return np.char.encode(array, "utf-8").astype(OBJECT)
    return array.astype(OBJECT)


def _mismatch(tensor: str, dtype: np.dtype[Any], array: np.ndarray) -> InvalidInputError:
    got = "strings" if array.dtype.kind in TEXT_KINDS else array.dtype.name
    got = "booleans" if array.dtype.kind == "b" else got
    if dtype.kind in TEXT_KINDS:  # a BYTES (string) tensor: said in JSON's words
        got = "numbers" if array.dtype.kind in "iuf" else got
        return InvalidInputError(f"input {tensor!r}: expected strings, got {got}")
    if array.dtype == OBJECT:  # strings, or what JSON gave that is no tensor value
        flat = array.reshape(-1)[:1000]
        odd = [v for v in flat if type(v) not in (int, float, str, bytes)][:1]
        odd = odd or [v for v in flat if type(v) not in (int, float)][:1]  # a null first
        got = json_kind(odd[0]) if odd else got
    return InvalidInputError(f"input {tensor!r}: expected {dtype.name} values, got {got}")


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words (for error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"

"""UINT64 tensors from JSON integers past int64's range, exactly.

numpy makes float64 of a list of integers one of which is 2**63 or more (``[1, 2**63]``),
rounding them (2**64 - 1 becomes 2**64, out of range): a uint64 tensor given such a
list reads it again as uint64. Reached only by a uint64 tensor whose numbers numpy made
float64 (such integers, or floats, which stay refused)."""

from __future__ import annotations

from typing import Any

import numpy as np

U64 = np.dtype(np.uint64)


def only_integers(value: Any) -> bool:
    """Whether the JSON ``value`` (nested lists, rectangular: numpy made numbers of it)
    holds integers only (no float, and no boolean: ``type`` is exactly ``int``)."""
    if not isinstance(value, list):
        return type(value) is int
    rows = [value]
    while rows:
        row = rows.pop()
        if row and type(row[0]) is list:
            rows.extend(row)
        elif not set(map(type, row)) <= {int}:
            return False
    return True


def uint64_array(value: Any) -> np.ndarray | None:
    """The integers of ``value`` as uint64, exactly; None when one is negative or 2**64
    or more."""
    try:
        return np.array(value, dtype=U64)
    except OverflowError:
        return None

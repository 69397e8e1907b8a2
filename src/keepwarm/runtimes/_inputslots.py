"""Input tensors kept per thread and refilled, for the flat call's small inputs.

``FlatCall`` turns each input array into a TensorFlow tensor (``EagerTensor(array, ...)``)
on every call. Back to back that costs ~10 µs; in the server, where the worker thread
wakes for each request after the HTTP round trip, it cost as much as running the MLP
itself: a ``cProfile`` (thread CPU time) of the worker at concurrency 1 put 74-110 µs per
request on the conversion beside 83-117 µs in ``TFE_Py_Execute``. A tensor made once over
a 64-byte-aligned array of our own aliases that array (TensorFlow shares the memory of
an aligned array rather than copying it; checked when the slot is made: a slot whose
tensor does not see a write to its array is never used), so each call copies the input
into the array (``np.copyto``: ~1 µs for the MLP's 3 KiB) and hands TensorFlow the same
tensor again.

Measured in one process (``HopPool`` hand-off to a worker thread, the MLP's flat call
on [1, 784] FP32, 0.2 ms between calls as a lone HTTP client's, 8 interleaved rounds of
1500 calls, machine load ~3 on 2 vCPUs): p50 631 → 465 µs (every round faster, by 52 to
254 µs) and the worker's CPU per call 241 → 182 µs. ``keepwarm serve`` against the
version before (``bench/ab.py``, MLP, v2 JSON, concurrency 1, 8 interleaved rounds of 3 s,
load ~2): req/s 1.11x, p50 1.056 → 0.954 ms, CPU per request 0.92x; TF Serving rows at
concurrency 1 (8 rounds): 1.13x, p50 0.735 → 0.665 ms, CPU 0.88x; v2 JSON at 32 (batched,
5 rounds): 1.01x, CPU 1.00x (no change). Again at concurrency 1, v2 JSON, with batching
off too (8 rounds, load 5-7): on 1.08x, p50 0.799 → 0.704 ms, CPU 0.92x; off 1.03x,
0.725 → 0.710 ms, CPU 0.94x. Above the direct call (``bench/c1_floor.py --base-src``, 5
rounds of 2 s, load ~3; the direct call itself with the slots): v2 JSON +0.509 → +0.517
ms batching on, +0.545 → +0.446 off; binary +0.548 → +0.506 on, +0.565 → +0.410 off.

A slot belongs to one thread (``threading.local``), which runs one call at a time, so no
two calls share an array; each input of a call has its own (two inputs of one shape
too). Only numeric inputs of at most ``SLOT_BYTES`` take a slot: a large input is handed
over as it is (aliased when aligned), where a copy would grow with its size; the 16 KiB
bound was not measured, only the MLP's 3 KiB. At most ``SLOTS`` slots per thread are
kept (a batch thread sees one per batch size): they are all dropped when a new one would
pass that. So a model holds at most 64 KiB per thread that called it (a server's workers
and batch threads), freed with the model. An output may be a slot's tensor (an
identity) or share its memory; the flat call copies each output out (``numpy()``), as
it must for a caller's own aligned arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: The largest input (bytes) refilled into a kept tensor; larger ones are converted.
SLOT_BYTES = 16 * 1024
#: Slots (an input's place, shape, dtype and device) kept per thread.
SLOTS = 4
#: The alignment at which TensorFlow aliases an array's memory (``EIGEN_MAX_ALIGN_BYTES``
#: at most).
ALIGN = 64

Convert = Callable[[np.ndarray, str, Any], Any]
_NONE: tuple[None, None] = (None, None)


class InputSlots:
    """``slots.tensor(array, device, place)``: a tensor holding ``array``'s values (see the
    module docstring), made by ``convert(array, device, None)`` when no slot fits. ``place``
    is the input's position in the call: two inputs of one shape never share a slot."""

    __slots__ = ("_convert", "_local")

    def __init__(self, convert: Convert) -> None:
        self._convert = convert
        self._local = threading.local()

    def tensor(self, value: Any, device: str, place: int) -> Any:
        if type(value) is not np.ndarray or value.nbytes > SLOT_BYTES:
            return self._convert(value, device, None)
        try:
            kept: dict[tuple[Any, ...], tuple[Any, Any]] = self._local.kept
        except AttributeError:  # this thread's first call
            kept = self._local.kept = {}
        key = (place, value.shape, value.dtype, device)
        found = kept.get(key)
        if found is None:
            if len(kept) >= SLOTS:
                kept.clear()
            found = kept[key] = self._slot(value, device)
        array, tensor = found
        if array is None:
            return self._convert(value, device, None)
        np.copyto(array, value, casting="no")
        return tensor

    def _slot(self, value: np.ndarray, device: str) -> tuple[Any, Any]:
        """An aligned array of ``value``'s shape and dtype and the tensor over it, or
        ``(None, None)`` when TensorFlow would not alias it (or the dtype is not numeric)."""
        if value.dtype.kind not in "biufc" or value.size == 0:
            return _NONE
        raw = np.empty(value.nbytes + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        array = raw[start : start + value.nbytes].view(value.dtype).reshape(value.shape)
        array.fill(0)
        tensor = self._convert(array, device, None)
        array.flat[0] = 1
        if tensor.numpy().flat[0] != 1:  # copied, not aliased: refilling would not reach it
            return _NONE
        return array, tensor

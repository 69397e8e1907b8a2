"""The flat call's kept input tensors (``runtimes/_inputslots.py``): one tensor per thread
and shape, refilled with each call's values; converted as before where a slot would not
work (large, not numeric, not aliased by TensorFlow)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_models import random_inputs as _inputs
from runtime_models import same_outputs as _same

from keepwarm.runtimes._inputslots import SLOT_BYTES, SLOTS, InputSlots
from keepwarm.runtimes.savedmodel import SavedModelRuntime


class Counted:
    """TensorFlow's own conversion, counted."""

    def __init__(self, copy_first: bool = False) -> None:
        from tensorflow.python.eager import context
        from tensorflow.python.framework import ops

        context.context().ensure_initialized()
        self.convert = ops.EagerTensor
        self.copy_first = copy_first
        self.calls = 0

    def __call__(self, value: Any, device: str, dtype: Any) -> Any:
        self.calls += 1
        if self.copy_first:  # as a TensorFlow that copied every array would
            value = np.array(value)
        return self.convert(value, device, dtype)


def test_the_mlp_s_calls_refill_one_tensor_per_thread(example_models: Path) -> None:
    model = SavedModelRuntime().load(
        example_models / "mlp" / "1", signature=None, options={"tf_executor": "default"}
    )
    assert model.call_path == "flat"
    flat = model._call
    counted = Counted()
    flat._slots = InputSlots(counted)
    batches = [_inputs(model, 1, seed=i) for i in range(4)]
    for inputs in batches:  # each call's own values reach the model
        _same(model.predict(inputs), model.call_ordinary(inputs))
    assert counted.calls == 1
    other = threading.Thread(target=lambda: model.predict(batches[0]))
    other.start()
    other.join(timeout=60)
    assert counted.calls == 2  # another thread, its own slot
    given = batches[1]["image"].copy()
    model.predict(batches[1])
    np.testing.assert_array_equal(batches[1]["image"], given)  # the caller's array untouched


def test_two_inputs_of_one_shape_have_a_slot_each() -> None:
    slots = InputSlots(Counted())
    a = slots.tensor(np.zeros((2, 3), np.float32), "", 0)
    b = slots.tensor(np.ones((2, 3), np.float32), "", 1)
    assert a is not b
    np.testing.assert_array_equal(a.numpy(), np.zeros((2, 3)))


def test_values_are_refilled_and_outputs_are_the_caller_s_own() -> None:
    slots = InputSlots(Counted())
    first = slots.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), "", 0)
    held = first.numpy()
    second = slots.tensor(np.full((2, 3), 5, np.float32), "", 0)
    assert second is first
    np.testing.assert_array_equal(second.numpy(), np.full((2, 3), 5))
    np.testing.assert_array_equal(held, np.arange(6).reshape(2, 3))  # numpy() copied


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(SLOT_BYTES // 4 + 1, np.float32),  # large: aliased as it is
        np.array([b"a", b"b"], dtype=object),  # not numeric
        np.zeros((0, 3), np.float32),  # empty
    ],
    ids=["large", "objects", "empty"],
)
def test_inputs_without_a_slot_are_converted_each_call(value: np.ndarray) -> None:
    counted = Counted()
    slots = InputSlots(counted)
    for _ in range(3):
        tensor = slots.tensor(value, "", 0)
        assert tensor.shape == value.shape
    assert counted.calls == 3


def test_a_tensor_that_copies_its_array_is_not_kept() -> None:
    counted = Counted(copy_first=True)
    slots = InputSlots(counted)
    for value in (1.0, 2.0):
        tensor = slots.tensor(np.full(4, value, np.float32), "", 0)
        np.testing.assert_array_equal(tensor.numpy(), np.full(4, value))
    assert counted.calls == 3  # the probe's, then each call's own


def test_the_slots_kept_per_thread_are_bounded() -> None:
    counted = Counted()
    slots = InputSlots(counted)
    for n in range(1, SLOTS + 2):
        slots.tensor(np.zeros(n, np.float32), "", 0)
    assert len(slots._local.kept) == 1  # dropped when the next would pass SLOTS
    slots.tensor(np.zeros(SLOTS + 1, np.float32), "", 0)
    assert counted.calls == SLOTS + 1

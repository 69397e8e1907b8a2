"""A server's frozen heap (``InferenceService(freeze_heap=True)``): frozen once a version is
READY, and an unloaded model's memory is still reclaimed."""

from __future__ import annotations

import gc
import shutil
import threading
import types
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.memory import freeze_heap, release_memory
from keepwarm.core.states import State
from keepwarm.repository import Repository
from keepwarm.service import InferenceService

WAIT_S = 60.0


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test process's heap, thawed again whatever the test did."""
    yield
    gc.unfreeze()


def test_release_memory_collects_frozen_cycles(thawed: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    gc.freeze()
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: out of the collector's reach
    release_memory()
    assert ref() is None
    assert gc.get_freeze_count() > 0  # frozen again afterwards


def test_an_unloaded_model_is_reclaimed_from_a_frozen_heap(
    tmp_path: Path, example_models: Path, thawed: None
) -> None:
    shutil.copytree(example_models / "mlp", tmp_path / "mlp")
    seen: list[Event] = []
    changed = threading.Condition()

    def record(event: Event) -> None:
        with changed:
            seen.append(event)
            changed.notify_all()

    def wait_for(kind: str, state: State | None = None) -> None:
        def found() -> bool:
            key = ModelId("mlp", 1)
            return any(e.kind == kind and e.key == key and e.state is state for e in seen)

        with changed:
            assert changed.wait_for(found, WAIT_S), (kind, state)

    repository = Repository(tmp_path, poll_seconds=0.05, watch=False)
    service = InferenceService(repository, freeze_heap=True)  # subscribed first
    repository.subscribe(record)
    try:
        gc.unfreeze()
        repository.start()
        repository.wait_ready("mlp", timeout=WAIT_S)
        wait_for("state", State.READY)  # the service's subscriber ran before ours
        assert gc.get_freeze_count() > 0
        with repository.lease("mlp") as model:
            parts = [  # what the loaded model holds (not module functions such as tf.constant)
                v
                for v in vars(model.raw.inner).values()
                if type(v).__weakrefoffset__ and not isinstance(v, types.FunctionType)
            ]
            refs = [weakref.ref(v) for v in parts]
        assert refs, "the loaded model holds no objects to follow"
        del model, parts
        shutil.rmtree(tmp_path / "mlp" / "1")
        repository.refresh()
        wait_for("reclaimed")
        assert [r for r in refs if r() is not None] == []
    finally:
        service.close()
        repository.close()


def test_freezing_frees_young_cycles_and_release_memory_the_frozen_ones(thawed: None) -> None:
    gc.collect()
    old_a, old_b = Node(), Node()
    old_a.other, old_b.other = old_b, old_a
    old = weakref.ref(old_a)
    gc.collect()  # survivors: now in the oldest generation
    del old_a, old_b  # an old cycle: garbage
    young_a, young_b = Node(), Node()
    young_a.other, young_b.other = young_b, young_a
    young = weakref.ref(young_a)
    del young_a, young_b  # a young cycle: garbage
    freeze_heap()
    assert young() is None  # the young generations were collected before freezing
    assert old() is not None and gc.get_freeze_count() > 0  # frozen with the heap
    release_memory()
    assert old() is None

"""Small fakes for manager tests: a spec whose loads can be held, failed or counted."""

from __future__ import annotations

import threading
from typing import Any


class FakeModel:
    def __init__(self, name: str, nbytes: int) -> None:
        self.name = name
        self.nbytes = nbytes
        self.closed = threading.Event()
        self.calls = 0

    def close(self) -> None:
        self.closed.set()


class FakeSpec:
    """Loads a ``FakeModel``; ``gate`` (when set) holds each load until it is set."""

    def __init__(
        self,
        name: str,
        nbytes: int = 100,
        *,
        gate: threading.Event | None = None,
        fail: Exception | None = None,
        warm_fail: Exception | None = None,
    ) -> None:
        self.name = name
        self.nbytes = nbytes
        self.gate = gate
        self.fail = fail
        self.warm_fail = warm_fail
        self.loads = 0
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.format = "fake"
        self.made: list[FakeModel] = []

    @property
    def description(self) -> str:
        return f"fake model {self.name}"

    def estimate_nbytes(self) -> int:
        return self.nbytes

    def load(self) -> Any:
        with self._lock:
            self.loads += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        model = FakeModel(self.name, self.nbytes)
        self.made.append(model)
        return model

    def warmup(self, model: Any) -> None:
        if self.warm_fail is not None:
            raise self.warm_fail

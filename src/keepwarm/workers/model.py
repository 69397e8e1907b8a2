"""``WorkerModel``: a loaded model whose ``predict`` runs in worker processes.

Made by the load path (``RuntimeSpec.load``) when a model's ``[workers]`` table or
isolation says so; it is a ``runtimes.base.LoadedModel`` like any other, so batching wraps
it (a batch slot per process) and the manager, the repository and the server serve it
without knowing. ``on_broken`` is how the manager learns that its workers crash-looped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keepwarm.batching.executor import ThreadExecutor
from keepwarm.signature import Signature
from keepwarm.workers.group import WorkerGroup, WorkerInfo


class WorkerModel:
    """The model ``group`` serves; its signature and size as the workers loaded it."""

    def __init__(self, group: WorkerGroup, on_close: Callable[[WorkerGroup], None]) -> None:
        loaded = group.loaded
        assert loaded is not None
        self.group = group
        self.signature: Signature = loaded.signature
        self.nbytes = loaded.nbytes
        self.nbytes_source = loaded.nbytes_source
        self.format = loaded.format
        self.processes = len(group.infos())
        self._on_close = on_close
        self._executor: ThreadExecutor | None = None

    @property
    def executor(self) -> ThreadExecutor:
        """Where a batcher runs this model's batches: a thread per worker process (each
        waits on its worker), so batching runs as many batches at once as there are
        processes, beside the other models' batch threads."""
        if self._executor is None:
            self._executor = ThreadExecutor(self.processes, name="keepwarm-worker-batch")
        return self._executor

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.group.predict(inputs)

    def workers(self) -> list[WorkerInfo]:
        return self.group.infos()

    def on_broken(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once if the model can no longer be served."""
        self.group.on_broken(callback)

    def close(self) -> None:
        """Stop its worker processes (each unloads the model first)."""
        self.group.close()
        self._on_close(self.group)
        if self._executor is not None:
            self._executor.close()

"""The user-facing model objects: a ``Model`` handle and a leased model."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from keepwarm.core.states import State
from keepwarm.runtimes.base import LoadedModel
from keepwarm.signature import Inputs, Outputs, Signature

if TYPE_CHECKING:
    from keepwarm.core.lease import Lease
    from keepwarm.core.manager import Manager
    from keepwarm.loading import RuntimeSpec


class Model:
    """A handle to a cached model, safe to keep at module level.

    Each ``predict`` holds the model in memory for its length; if the model was evicted
    in between, ``predict`` loads it again through the cache.
    """

    __slots__ = (
        "_get",
        "_give",
        "_key",
        "_loaded_signature",
        "_manager",
        "_spec",
        "_take",
        "uri",
        "version",
    )

    def __init__(self, manager: Manager, key: Hashable, spec: RuntimeSpec) -> None:
        self._manager = manager
        self._get = manager.get  # bound once: the hot path
        self._take = manager.take
        self._give = manager.give
        self._key = key
        self._spec = spec
        self._loaded_signature: Signature | None = None
        self.uri = spec.uri
        self.version = spec.version

    def predict(self, inputs: Inputs) -> Outputs:
        """Run the model: a numpy array (single-input models) or a dict of name to array.

        Returns a dict of output name to numpy array. Raises ``InvalidInputError`` naming
        the input when a dtype or shape does not match the signature. An exception the
        model itself raises is raised as it was, not wrapped (README, Errors).
        """
        entry = self._get(self._key)
        if entry is not None and self._take(entry):  # READY: a count, no lock, no Lease
            try:
                model: LoadedModel = entry.model
                return model.predict(model.signature.coerce(inputs))
            finally:
                self._give(entry)
        lease = self._manager.acquire(self._key, self._spec)
        try:
            model = lease.model
            return model.predict(model.signature.coerce(inputs))
        finally:
            lease.release()

    def acquire(self, *, timeout: float | None = None) -> Lease:
        """A lease whose ``model`` is a ``LeasedModel`` (``.version``: the version that
        answered, when the URI is a versioned directory or a version was asked for)."""
        lease = self._manager.acquire(self._key, self._spec, timeout=timeout)
        lease.model = LeasedModel(lease.model, str(self.uri), self._spec.answered)
        return lease

    def ensure_loaded(self) -> None:
        """Load the model now (if it is not loaded), raising its load error if any."""
        if self._loaded_signature is not None and self._manager.state(self._key) is State.READY:
            return  # loaded: requests are counted when they predict
        lease = self._manager.acquire(self._key, self._spec)
        try:
            self._loaded_signature = lease.model.signature
        finally:
            lease.release()

    @property
    def signature(self) -> Signature:
        """The inputs and outputs (name, dtype, shape) of the model loaded now, loading it
        if needed: a versioned directory loads its highest version again after an eviction,
        whose signature may differ from the first one's."""
        entry = self._get(self._key)
        if entry is not None and self._take(entry):
            try:
                signature: Signature = entry.model.signature
                return signature
            finally:
                self._give(entry)
        lease = self._manager.acquire(self._key, self._spec)
        try:
            self._loaded_signature = lease.model.signature
            return self._loaded_signature
        finally:
            lease.release()

    @property
    def nbytes(self) -> int:
        """The model's size in memory (see ``nbytes_source``), loading it if needed."""
        lease = self._manager.acquire(self._key, self._spec)
        try:
            return int(lease.model.nbytes)
        finally:
            lease.release()

    @property
    def format(self) -> str | None:
        return self._spec.format

    def __repr__(self) -> str:
        state = self._manager.state(self._key)
        return f"<keepwarm.Model {self.uri!r} format={self.format} state={state}>"


class LeasedModel:
    """A model held in memory for the length of a ``with ... lease(...)`` block."""

    __slots__ = ("_coerce", "_model", "_predict", "name", "version")

    def __init__(self, model: LoadedModel, name: str, version: int | None) -> None:
        self._model = model
        self._predict = model.predict  # bound once: the hot path
        self._coerce = model.signature.coerce
        self.name = name
        self.version = version

    def predict(self, inputs: Inputs) -> Outputs:
        return self._predict(self._coerce(inputs))

    @property
    def signature(self) -> Signature:
        return self._model.signature

    @property
    def nbytes(self) -> int:
        return int(self._model.nbytes)

    @property
    def raw(self) -> Any:
        """The runtime's own loaded model."""
        return self._model

    def __repr__(self) -> str:
        return f"<keepwarm.LeasedModel {self.name!r} version={self.version}>"


__all__ = ["LeasedModel", "Model"]

"""Waiting until a model of a ``Repository`` can serve (``Repository.wait_ready``): a
lease is tried, and while the model is not listed yet, or its version not ready yet (or
failed for now: a retry after its backoff may still load it), the manager's changes are
waited for, up to the timeout; the error then says the model's status."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from keepwarm.core.timeouts import check_timeout
from keepwarm.errors import (
    DeadlineExceededError,
    KeepwarmError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.repository_catalog import Catalog
from keepwarm.repository_requests import RepositoryRequests, Version
from keepwarm.repository_status import repository_status


def wait_ready(
    requests: RepositoryRequests,
    catalog: Catalog,
    name: str,
    version: Version,
    timeout: float | None,
) -> int:
    """The version of ``name`` that serves, once one can (see ``Repository.wait_ready``)."""
    bound = check_timeout(timeout)  # None (or math.inf): no bound
    deadline = None if bound is None else time.monotonic() + bound
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            lease = requests.acquire(name, version, timeout=left)
            break
        except (ModelNotFoundError, UnavailableError, DeadlineExceededError) as exc:
            # Not listed yet, or failed for now (a retry after its backoff may still
            # load it): wait for a change that could make it serve.
            left = None if deadline is None else deadline - time.monotonic()
            test = _listed if isinstance(exc, ModelNotFoundError) else _servable
            if (left is not None and left <= 0) or not catalog.manager.wait_for(
                partial(test, catalog, name, version), left
            ):
                raise UnavailableError(
                    f"model {name!r} (version {version}) was not ready within {timeout} s "
                    f"({exc.message}); status: {_model_status(catalog, name)}"
                ) from None
    with lease as model:
        return int(model.version)


def _model_status(catalog: Catalog, name: str) -> dict[str, Any] | None:
    model = repository_status(catalog).models.get(name)
    return model.to_dict() if model is not None else None


def _servable(catalog: Catalog, name: str, version: Version) -> bool:
    try:
        catalog.choose(name, version)
    except UnavailableError:
        return catalog.settling(name, version if isinstance(version, int) else None)
    except KeepwarmError:
        return True
    return True


def _listed(catalog: Catalog, name: str, version: Version) -> bool:
    try:
        catalog.choose(name, version)
    except ModelNotFoundError:
        return False
    except KeepwarmError:
        return True
    return True

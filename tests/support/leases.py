"""Assertions on repository leases."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest


def assert_refused(
    lease: AbstractContextManager[object], error: type[Exception], match: str
) -> None:
    """Entering ``lease`` (a ``repo.lease(...)``) raises ``error`` matching ``match``."""
    with pytest.raises(error, match=match), lease:
        pass

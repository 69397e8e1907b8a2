"""A caller's ``timeout=`` for a wait (a lease on a model still loading), checked once
before the wait begins."""

from __future__ import annotations

import math

from keepwarm.errors import InvalidInputError


def check_timeout(timeout: object) -> float | None:
    """Seconds to wait: None or ``math.inf`` (no bound: None), or a number (one already
    past, 0 or below, fails the wait at once); else InvalidInputError. ``"5"`` raised
    TypeError, ``True`` waited 1 s, ``nan`` passed at once, ``inf`` raised OverflowError."""
    if timeout is None:
        return None
    if type(timeout) not in (int, float) or math.isnan(timeout):  # type: ignore[arg-type]
        raise InvalidInputError(
            f"timeout={timeout!r} ({type(timeout).__name__}): expected a number of seconds, "
            "or None to wait without bound"
        )
    return None if timeout == math.inf else float(timeout)  # type: ignore[arg-type]

"""``keepwarm.early_signals`` on this process's own signals: recorded and raised during
the start; only recorded once ``hold`` is called (an event loop being set up), then raised
by ``raise_pending``; ``restore`` puts the previous handlers back."""

from __future__ import annotations

import os
import signal

import pytest

from keepwarm import early_signals
from keepwarm.early_signals import Terminated


def test_a_signal_is_raised_where_it_lands_and_again_by_raise_pending() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    restore = early_signals.install()
    try:
        with pytest.raises(Terminated):  # the handler runs as the call returns
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Terminated):  # swallowed by start-up code: raised again here
            early_signals.raise_pending()
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == previous
    early_signals.raise_pending()  # forgotten by restore: nothing raised


def test_a_held_signal_is_recorded_not_raised_until_raise_pending() -> None:
    """uvloop's signal set-up interrupted by a raised SIGTERM left its loop running and
    unclosable (exit 1, three tracebacks): the server holds signals over it."""
    restore = early_signals.install()
    try:
        early_signals.hold()
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # Python code runs on: the handler ran, and raised nothing
        with pytest.raises(Terminated):
            early_signals.raise_pending()
    finally:
        restore()

"""How the supervisor passes a signal on to its server processes (real processes): a
process not yet ready gets SIGTERM for a SIGINT (in its interpreter's own start-up a SIGINT
is a KeyboardInterrupt raised inside the initialisation, printed as "Fatal Python error")
and SIGKILL for a second signal; a ready one gets the signal given. Each ends as a server
stopped by the signal the supervisor was given (SIGINT 130, SIGTERM 0)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest

from keepwarm.server_child import ChildSpec
from keepwarm.settings import Settings
from keepwarm.supervisor import _Child
from keepwarm.supervisor_output import Output

WAIT_S = 30.0
SLEEPER = "import signal, time; {}; print('up', flush=True); time.sleep(60)"


def _child(ignore_sigterm: bool = False) -> _Child:
    child = _Child(ChildSpec("models", Settings(), 0, 1, -1, "peers", os.getpid()))
    # SIGINT's default action, as the real child command sets it (a test run in the
    # background of a shell inherits SIGINT ignored, and so would this process)
    setup = "signal.signal(signal.SIGINT, signal.SIG_DFL)"
    if ignore_sigterm:
        setup += "; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    child.proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER.format(setup)], stdout=subprocess.PIPE, text=True
    )
    assert child.proc.stdout is not None and child.proc.stdout.readline() == "up\n"
    return child


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(WAIT_S)
    assert proc.stdout is not None
    proc.stdout.close()


def _output(ready: bool) -> Output:
    output = Output(io.StringIO(), 1)
    if ready:
        output.ready.add(0)
    return output


@pytest.mark.parametrize(("given", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_starting_process_gets_sigterm(given: signal.Signals, code: int) -> None:
    child = _child()
    assert child.proc is not None
    try:
        child.signal(given, _output(ready=False))
        died = child.proc.wait(WAIT_S)
    finally:
        _end(child.proc)
    assert died == -signal.SIGTERM
    assert child.exit_code(died) == code
    assert child.exit_code(0) == code  # its own SIGTERM handler ended it (exit 0)


def test_a_second_signal_kills_a_starting_process() -> None:
    child = _child(ignore_sigterm=True)
    assert child.proc is not None
    output = _output(ready=False)
    try:
        child.signal(signal.SIGINT, output)
        with pytest.raises(subprocess.TimeoutExpired):
            child.proc.wait(0.5)  # SIGTERM, not SIGINT: ignored here
        child.signal(signal.SIGINT, output)
        died = child.proc.wait(WAIT_S)
    finally:
        _end(child.proc)
    assert died == -signal.SIGKILL
    assert child.exit_code(died) == 130


def test_a_ready_process_gets_the_signal_given() -> None:
    child = _child()
    assert child.proc is not None
    try:
        child.signal(signal.SIGINT, _output(ready=True))
        died = child.proc.wait(WAIT_S)
    finally:
        _end(child.proc)
    assert died == -signal.SIGINT
    assert child.exit_code(died) == 130
    assert child.exit_code(1) == 1  # a ready process that failed on its own says so

"""What ``keepwarm serve`` prints while it starts (``keepwarm.server_output.Progress``)."""

from __future__ import annotations

import io

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.server_output import Progress


def lines(out: io.StringIO) -> list[str]:
    return [line.split(" in ")[0].split(" at ")[0] for line in out.getvalue().splitlines()]


def test_ready_at_comes_after_the_line_of_every_load_it_waited_for() -> None:
    # Events arrive on their own thread after the states changed: when the first READY
    # event is handled, the second version may be READY already (the server is ready)
    # while its own line is still to come. 'ready at' was printed between the two lines.
    out = io.StringIO()
    progress = Progress(out, ready=lambda: True)
    first, second = ModelId("digits", 1), ModelId("mlp", 1)
    for key in (first, second):
        progress.on_event(Event("state", key, State.LOADING))
    progress.on_event(Event("state", first, State.READY))
    progress.check()  # the server's own check, once its ports are open
    progress.on_event(Event("state", second, State.WARMING))
    progress.on_event(Event("state", second, State.READY))
    assert lines(out) == [
        "loading digits version 1 ...",
        "loading mlp version 1 ...",
        "loaded digits version 1",
        "loaded mlp version 1",
        "ready",
    ]


def test_a_load_that_ends_without_ready_or_failed_does_not_hold_ready_back() -> None:
    out = io.StringIO()
    progress = Progress(out, ready=lambda: True)
    gone = ModelId("gone", 3)
    progress.on_event(Event("state", gone, State.LOADING))
    progress.on_event(Event("state", gone, State.UNLOADED))  # its files removed mid-load
    assert lines(out) == ["loading gone version 3 ...", "ready"]


def test_ready_at_is_said_once_and_only_when_the_server_is_ready() -> None:
    out = io.StringIO()
    ready = [False]
    progress = Progress(out, ready=lambda: ready[0])
    key = ModelId("mlp", 1)
    progress.on_event(Event("state", key, State.LOADING))
    progress.on_event(Event("state", key, State.FAILED, reason="bad files"))
    progress.check()
    assert "ready" not in lines(out)
    ready[0] = True
    progress.check()
    progress.check()
    assert lines(out).count("ready") == 1
    assert "FAILED mlp version 1 after 0.0 s: bad files" in out.getvalue()

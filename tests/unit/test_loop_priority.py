"""``favour_loop``: the event loop's thread keeps its nice value; every other thread, made
before or after (from the loop's thread, from another thread, natively by a thread
already nicer), runs ``WORKER_NICE`` nicer; the hook stops on its undo. Run in a child
process: nice values of this test process's own threads are never raised."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, os, threading
    from keepwarm.loop_priority import WORKER_NICE, favour_loop

    def nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    found = {}
    before_ready, before_go = threading.Event(), threading.Event()

    def made_before():
        before_ready.set()
        before_go.wait()
        found["before"] = nice()

    early = threading.Thread(target=made_before)
    early.start()
    before_ready.wait()
    base = nice()
    undo = favour_loop()

    def made_after():
        found["after"] = nice()
        inner = threading.Thread(target=lambda: found.__setitem__("from_worker", nice()))
        inner.start()
        inner.join()

    later = threading.Thread(target=made_after)
    later.start()
    later.join()
    before_go.set()
    early.join()
    found["loop"] = nice()
    undo()
    plain = threading.Thread(target=lambda: found.__setitem__("after_undo", nice()))
    plain.start()
    plain.join()
    print(json.dumps({"base": base, "step": WORKER_NICE, **found}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
def test_every_thread_but_the_loops_runs_nicer() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout)
    base, nicer = found["base"], min(19, found["base"] + found["step"])
    assert found["loop"] == base  # the loop's own is never touched
    assert found["before"] == nicer  # a thread that was there already
    assert found["after"] == nicer  # one started later, from the loop's thread
    assert found["from_worker"] == nicer  # one started by a worker: not twice as nice
    assert found["after_undo"] == base  # the hook stopped: inherited from the loop's

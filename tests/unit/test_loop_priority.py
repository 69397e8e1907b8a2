"""``favour_loop``: a thread ``threading`` does not know (a native one; here one started
with ``_thread``) runs ``WORKER_NICE`` nicer once seen at two walks; the event loop's
thread and Python's threads keep their value (a thread holding the GIL, preempted by the
loop, would stall it). Run in a child process: nice values of this test process's own
threads are never raised."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import _thread, json, os, threading, time
    from keepwarm.loop_priority import WORKER_NICE, favour_loop

    def nice(thread):
        return os.getpriority(os.PRIO_PROCESS, thread)

    ids, release = {}, threading.Event()

    def native():
        ids["native"] = threading.get_native_id()
        release.wait()

    def python():
        ids["python"] = threading.get_native_id()
        release.wait()

    base = nice(threading.get_native_id())
    stop = favour_loop(every=0.02)
    _thread.start_new_thread(native, ())
    worker = threading.Thread(target=python)
    worker.start()
    deadline = time.monotonic() + 30
    while "native" not in ids or nice(ids["native"]) == base:
        assert time.monotonic() < deadline, "the native thread was never made nicer"
        time.sleep(0.02)
    time.sleep(0.2)  # several walks more
    found = {
        "base": base,
        "step": WORKER_NICE,
        "loop": nice(threading.get_native_id()),
        "native": nice(ids["native"]),
        "python": nice(ids["python"]),
    }
    stop()
    release.set()
    worker.join()
    print(json.dumps(found))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
def test_native_threads_run_nicer_than_the_loop_and_pythons_threads() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(done.stdout)
    assert found["native"] == min(19, found["base"] + found["step"])
    assert found["loop"] == found["base"]  # the loop's own is never touched
    assert found["python"] == found["base"]  # a Python thread may hold the GIL: never

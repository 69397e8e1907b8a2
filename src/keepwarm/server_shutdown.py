"""``keepwarm serve`` past its drain timeout: requests still running then are not waited
for. Their worker processes are stopped at once (``stop_worker_calls``: each request is
answered 503 saying why), and the process exits without waiting for calls still running
in its own threads (``exit_past_running_calls``)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

log = logging.getLogger("keepwarm.server")


def stop_worker_calls() -> None:
    """Past the drain timeout: every worker process still in a model call is killed now,
    its request answered 503 saying why, and the other workers stopped; the calls have had
    their time (a hung model's request got uvicorn's bare 500 three seconds later, and the
    exit waited 10 s more per model for the call)."""
    from keepwarm.workers.pool import default_pool

    pool = default_pool()
    pool.hurry("was still running when the server's drain timeout passed")
    pool.close()


def exit_past_running_calls() -> None:
    """Exit 0 now, the logs flushed, without waiting for model calls still running in this
    process past the drain timeout: the interpreter's exit would wait for their threads
    (gRPC's pool is joined at exit), and a model that never returns kept the server from
    exiting at all. Everything the server holds is closed by now."""
    log.warning("model calls still running past the drain timeout: exiting without them")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)

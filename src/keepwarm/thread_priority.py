"""The scheduling priority of the threads that run models, in ``keepwarm serve``.

On a machine with few cores the server's event loop (which accepts, parses and answers,
and refuses with 503 when a model's queue is full) shares the cores with the threads that
run the models: the batch executor's, and the runtime's own pools (TensorFlow's intra-
and inter-op threads, ONNX Runtime's). Under overload those keep every core busy, and each
time the loop wakes it waits for one. Raising the loop's priority needs ``CAP_SYS_NICE``;
lowering the model threads' does not: Linux keeps a nice value and a scheduling policy per
thread, and a new thread starts with its creator's. So a thread that runs models lowers
itself (``lower_this_thread``) before it starts work, and a model's load does so before the
runtime makes its pools, which then inherit it.

Nothing happens until ``configure`` is called (the server does, from ``Settings``): the
library face keeps its threads as its caller made them. A lowered thread stays lowered: an
unprivileged process cannot raise a priority again, so only threads that do nothing but
model work are lowered (each load has a thread of its own; the executors' threads only
run batches). The scope (``model_priority_scope``) picks which: ``"all"`` (the default),
the load's thread with the pools it makes and the batch executor's threads; ``"runtime"``,
the load's thread and its pools only. TensorFlow's pools do the model's arithmetic (with
MobileNetV2 served, two unnamed threads of TensorFlow's, made during the load, held
most of the model's CPU time); the executor's threads run Python between the calls
(stacking, splitting, encoding, under the interpreter lock), and lowered they start
batches late (below). The executor's threads are made by the loop's side (the first
batch's dispatch), not by the load, so under ``"runtime"`` they keep the server's
priority; a runtime that made its pools on its first call instead of at the load (no
warm run) would keep them at the server's priority too.

Measured and not kept (sessions 28-29, ``bench/overload_ab.py``, MobileNetV2 JSON at 40
req/s offered, then about 1.1x what it served, beside the idle MLP, rounds of 8 s
alternated; the loop's stalls there are waits for a core, not for the lock:
``bench/overload_stalls.py``):

- The loop's thread raised instead (nice -10, ``SCHED_RESET_ON_FORK``; needs
  ``CAP_SYS_NICE``), built in, 4 rounds against main: the load client's 503 p99 28.5
  against 21.0 ms, the loop's wait for a core per wake-up 0.17-0.36 against 0.36-0.55
  ms, but served 18.5 against 28.4 req/s. The load client's own lateness (its 2 ms sleep
  late by 9-19 ms at p99) is in its figure, and the loop's priority does not shorten it.
- A short scheduler slice for the loop (EEVDF's ``sched_runtime``, 0.1 ms), 4 rounds:
  p99 28.1 against 16.1 ms, served 28.5 against 34.2.
- Scope ``"all"``: ``model_nice`` 5, 3 rounds: p99 14.0 against 16.5 ms, within the
  rounds' spread. ``idle`` and 19 against off, 4 rounds: p99 15.4 and 15.3 against 36.2
  ms, every round lower; a second run, 19 and ``batch`` + 19, 3 rounds: 14.4 and 9.4
  against 14.4, not. Throughput at 32 clients, alternated: JSON (``bench/ab.py``) 0.82x
  (idle) and 0.89x (19); binary (``bench/binary_limit.py``) 0.59x, 0.90x and 0.74x
  (``batch`` + 19), CPU per image up to 1.58x: the lowered executor got a core late,
  and its batches, 16 images each when off, became runs of single images between
  batches of 32.

Scope ``"runtime"`` (session 30, the same cell beside the idle MLP, 3 builds in rotated
rounds of 8 s, 4 rounds; the machine shared, load 2.0-2.9). At 40 req/s offered (now
0.7x what the server ran, 50-58 req/s, with the probe's 40 beside it), nice 19 and
``idle`` against off: the load client's 503 p99 5.6 and 5.9 against 7.7 ms (rounds in
rotated order 7.6 / 5.2 / 6.1 / 4.9 and 4.3 / 7.2 / 6.2 / 5.6 against 9.2 / 11.4 / 6.1 /
6.3), the probe's 3.0 and 4.5 against 6.1, the loop's wait for a core per wake-up 127-139
and 101-145 against 212-248 us, served 50.6 and 49.6 against 54.9 req/s, the 200s' p99
over its bound 1.02 and 1.11 against 1.06. At 200 req/s (about 4x what was served, as
``bench/serve_batching.py``'s cell offers now): p99 11.1 and 12.4 against 22.2 ms, every
round lower (10.2 / 11.1 / 13.2 / 11.1 and 15.9 / 12.2 / 9.9 / 12.6 against 28.6 /
19.9 / 23.2 / 21.2), the probe's 10.6 and 11.1 against 18.4, the loop's wait 152-173
and 105-123 against 251-294 us, the load client's own lateness (p99) 2.7-4.0 and
2.2-3.7 against 4.4-7.2 ms, served 56.9 and 53.7 against 57.5 req/s, over the bound 1.18
and 1.33 against 1.15. The server's own time from headers to 503 stayed 0.1-1.0 ms p99.
Throughput at 32 clients, the servers up at once, alternated, three runs (load 2.0-4.6),
nice 19 ``runtime`` against off: JSON (``bench/ab.py``, 5-6 rounds) 0.94x, 0.96x and
0.98x (CPU per request 1.01x, 1.00x, 1.09x; ``"all"`` 0.98x in the first run, within
the spread: session 29 read 0.89x); binary (``bench/binary_limit.py``, 4 rounds) 0.90,
0.91 and 0.77x of the in-process limit against 0.98, 0.84 and 0.82x off (0.92x, 1.08x,
0.94x; rounds 0.70-1.12), the lowered side's batches in two rounds of the last run runs
of single images between batches of 32, as in session 29 with the executor lowered too.
A third overload run at 200 req/s, 3 rounds, the machine busier (load 3.2-3.3; off
served 35 req/s in two rounds): nice 10 and 19 ``runtime`` against off, p99 32.8 and
15.6 against 87.6 ms (rounds in rotated order 54.9 / 30.2 / 32.8 and 10.3 / 18.6 / 15.6
against 388 / 35.5 / 87.6), the probe's 27.2 and 12.8 against 41.9, the loop's wait
176-340 and 162-192 against 287-669 us, served 47.6 and 52.1 against 35.2 req/s; JSON
at 32 clients (5 rounds) nice 10 0.99x: the middle value keeps the throughput but not
the 503s' gain.
So the runtime's pools lowered, the executor's threads left alone, halve the 503s' p99
at the issue's rate, but the model then yields its cores to the machine's other work
too: at 32 clients on the shared machine it served 0.92-0.98x (not clearly at least
0.97x). No default changed; ``model_nice = 19`` with ``model_priority_scope =
"runtime"`` is the setting for a machine that serves and does little else.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

_log = logging.getLogger("keepwarm.thread_priority")

#: The highest nice value Linux has (the lowest priority).
MAX_NICE = 19
#: ``model_policy`` values and the scheduling policies they name (Linux).
POLICIES = ("normal", "batch", "idle")
#: ``model_priority_scope`` values: which model threads are lowered. ``"all"``: the
#: runtime's pools (made by a load's thread) and the batch executor's threads;
#: ``"runtime"``: the runtime's pools only (the executor's threads run Python: stacking,
#: splitting, encoding, holding the interpreter lock).
SCOPES = ("all", "runtime")
#: The parts of the server that call ``lower_this_thread``.
PARTS = ("runtime", "executor")

_lock = threading.Lock()
_target: tuple[int, str] | None = None  # (nice, policy) once configured
_parts: frozenset[str] = frozenset(PARTS)  # the parts lowered (``scope``)
_warned = False


def configure(nice: int, policy: str = "normal", scope: str = "all") -> tuple[int, str] | None:
    """From now on, ``lower_this_thread`` puts the calling thread at ``nice`` steps above
    the calling process's own nice value now (at most 19) and under ``policy`` (one of
    ``POLICIES``), when it is one of the parts ``scope`` (one of ``SCOPES``) names.
    ``nice=0`` with ``"normal"`` turns it off. Returns what is in force (None: off, or
    not Linux)."""
    global _target, _parts
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if type(nice) is not int or not 0 <= nice <= MAX_NICE:
        raise ValueError(f"nice must be an integer from 0 to {MAX_NICE}, got {nice!r}")
    with _lock:
        _parts = frozenset(PARTS) if scope == "all" else frozenset({scope})
        if (nice == 0 and policy == "normal") or not sys.platform.startswith("linux"):
            _target = None
        else:
            base = os.getpriority(os.PRIO_PROCESS, 0)
            _target = (min(MAX_NICE, base + nice), policy)
        return _target


def configured() -> tuple[int, str] | None:
    """What ``configure`` set: (absolute nice, policy), or None when off."""
    return _target


def lower_this_thread(part: str) -> None:
    """Lower the calling thread, which runs ``part`` (one of ``PARTS``: a load's thread,
    whose runtime pools inherit it, or a batch executor's), to the configured priority
    (nothing when not configured or when the scope leaves ``part`` out, and never raises
    it: a thread already lower stays so). A failure is logged once."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    target = _target
    if target is None or part not in _parts:
        return
    _lower(threading.get_native_id(), *target)


def _lower(tid: int, nice: int, policy: str) -> None:
    """Lower thread ``tid`` (never raises it); a failure is logged once."""
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        if policy != "normal":
            chosen = os.SCHED_BATCH if policy == "batch" else os.SCHED_IDLE
            if os.sched_getscheduler(tid) != chosen:
                os.sched_setscheduler(tid, chosen, os.sched_param(0))
    except OSError as exc:  # a seccomp filter, a container's rules: serve as it is
        _warn(exc)


def _warn(exc: OSError) -> None:
    global _warned
    if not _warned:
        _warned = True
        _log.warning("could not lower the priority of a model thread: %s", exc)


__all__ = [
    "MAX_NICE",
    "PARTS",
    "POLICIES",
    "SCOPES",
    "configure",
    "configured",
    "lower_this_thread",
]

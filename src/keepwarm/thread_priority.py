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
run batches).

Measured and not kept (session 28, ``bench/overload_ab.py``, MobileNetV2 JSON at 40 req/s
offered, ``bench/serve_batching.py``'s overload cell's rate, rounds alternated; the loop's
stalls there are waits for a core, not for the lock: ``bench/overload_stalls.py``):

- The loop's thread raised instead, ten nice values above the process, its later threads
  at the default (``SCHED_RESET_ON_FORK``; needs ``CAP_SYS_NICE``). Set from outside
  during the load, 3 rounds: load client's 503 p99 15.4 against 28.0 ms, served 35.5
  against 34.8 req/s. Built in, from the start, against main: 4 rounds of 6 s, p99 28.5
  against 21.0 ms (rounds 16.1 / 37.2 / 19.8 / 61.0 against 40.0 / 21.6 / 20.4 / 12.2),
  the probe's 20.8 against 29.6, the loop's wait for a core per wake-up 0.17-0.36 against
  0.36-0.55 ms, but served 18.5 against 28.4 req/s (medians); 3 rounds of 12 s while
  other work held the machine: p99 232 against 37 ms, served 18.5 against 20.0. The load
  client's own wait for a core (its 2 ms sleep late by 9-19 ms at p99) is in its figure,
  and the loop's priority does not shorten it.
- A short scheduler slice for the loop (EEVDF's ``sched_runtime``, 0.1 ms, no privilege
  needed, Linux 6.12+), 4 rounds each: p99 28.1 against 16.1 ms, served 28.5 against 34.2.
- This module's own lever at that rate, ``model_nice`` 5 against off, 3 rounds of 8 s:
  p99 14.0 against 16.5 ms (rounds 12.0 / 34.8 / 14.0 against 25.3 / 16.5 / 12.5), the
  probe's 30.5 against 29.5, served 34.5 against 38.7 req/s: within the rounds' spread.
- The strongest settings of this lever as the default (session 29, same cell at 40 req/s
  beside the idle MLP, rounds of 8 s alternated; two runs while other work shared the
  machine, load 2-4). ``model_policy = "idle"`` (SCHED_IDLE) and ``model_nice = 19``
  against off, 4 rounds: the 503s' p99 15.4 and 15.3 against 36.2 ms (rounds 16.2 / 9.7 /
  19.2 / 14.5 and 10.7 / 16.6 / 18.7 / 14.0 against 21.6 / 48.6 / 23.7 / 88.9), the loop's
  wait for a core per wake-up 150-199 and 198-259 against 413-934 us, served 24.4 and 30.6
  against 19.3 req/s. The second run, 3 rounds, ``model_nice = 19`` and ``batch`` + 19
  against off: p99 14.4 and 9.4 against 14.4 ms (rounds 14.4 / 8.4 / 16.1 and 9.4 / 21.4 /
  9.4 against 11.3 / 14.4 / 27.9), the probe's 32.4 and 20.3 against 19.8, but served 33.0
  and 25.9 against 39.1 req/s; the 200s' p99 over its bound 1.13 and 1.20 against 1.18
  (idle in the first run 1.22, rounds up to 1.40, against 1.00). Throughput, the servers
  up at once, runs alternated: MobileNetV2 JSON at 32 clients (``bench/ab.py``, 5 rounds)
  0.82x idle and 0.89x at 19 (CPU per request 1.12x and 1.07x); the MLP 0.92x and 1.09x;
  MobileNetV2 binary at 32 clients (``bench/binary_limit.py``, 4 rounds) 17.0 (idle) and
  26.0 (19) against 28.8 img/s, and in the second run 31.5 (19) and 35.5 (batch + 19)
  against 42.5, CPU per image 1.58x, 1.27x and 1.09x: the lowered executor gets a core
  late, and its batches, 16 images each when off, became runs of single images between
  batches of 32. So the 503s' p99 fell in one run of two (every round off above every
  round lowered) and not in the other, and throughput fell 0.6-0.9x: no default changed.
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

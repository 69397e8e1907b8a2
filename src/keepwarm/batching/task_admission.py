"""A request's place in its model's batching queue, reserved from the request's task on
the event loop before its body is read, so that a full queue refuses it at once:

- ``admit_request`` (event loop, before the body is read): refuses at once when the
  model's queue is full, else reserves a place for the request, held in its task's
  context until ``admitted`` takes it (the request is about to be queued) or, at the
  latest, until the task ends.
- ``admitted``: the place reserved, handed to the caller that queues the request (or
  releases it when the request failed).

Both are re-exported by ``keepwarm.batching.serving``, the server's side of batching."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from keepwarm.batching.registry import Admission, admit, refuse_when_full

#: The place in a batching queue reserved for the request its task serves.
#: A model's name instead: it was admitted and is not batched.
_admission: ContextVar[Admission | str | None] = ContextVar("keepwarm_admission", default=None)


def admit_request(name: str) -> None:
    """From the request's task: ``UnavailableError`` when every batched version of model
    ``name`` has a full queue; else a place reserved (see the module docstring)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # a blocking caller (no event loop): refused or not, no place kept
        refuse_when_full(name)
        return
    admission = admit(name)
    if admission is None:
        if task is not None:
            _admission.set(name)  # not batched: ``admitted`` need not look again
        return
    if task is None:
        admission.release()
        return
    _admission.set(admission)
    admission.task = task  # ``_disown`` takes its callback off without looking it up again
    task.add_done_callback(admission.release)


def admitted(name: str) -> Admission | None:
    """The place this task reserved for model ``name`` (admitting it now if it had not:
    ``UnavailableError`` when full); the caller releases it once the request is queued
    or has failed (its task no longer does). None: ``name`` is not batched."""
    found = _admission.get()
    if found is not None:
        _admission.set(None)
        if found == name:  # admitted just now, and not batched
            return None
        if isinstance(found, Admission) and found.name == name:
            _disown(found)
            return found
    return admit(name)  # the caller releases it: no task callback to add and take off


def _disown(admission: Admission) -> None:
    """The caller of ``admitted`` releases ``admission`` now: its task need not (a done
    callback less to run at the task's end). The task ``admit_request`` found, not looked
    up again: ``asyncio.current_task`` costs a ``getpid`` system call (Python 3.11's
    running-loop check), ~0.45 µs, and showed at 2.4% of the loop's samples at 4 clients
    (``py-spy --gil``)."""
    task = admission.task  # kept: ``submit`` takes its loop from it
    if task is not None:
        task.remove_done_callback(admission.release)

"""``batching.serving``'s admission keeps the request's task: ``submit`` takes the event
loop from it (no look-up: Python 3.11's costs a ``getpid`` system call), and a place given
back lets go of the task, so that no reference cycle (the task's context holds the
admission) is left to the garbage collector."""

from __future__ import annotations

import asyncio
import threading
from contextlib import ExitStack

import numpy as np

from keepwarm.batching.registry import Admission, admit
from keepwarm.batching.serving import admit_request, admitted, finish, submit
from keepwarm.batching.task_admission import _admission
from keepwarm.model import LeasedModel
from support.batch_models import held_rows


def test_a_request_queued_with_its_admission_waits_on_its_tasks_loop() -> None:
    with held_rows(max_batch_size=4, max_queue=2) as (model, (_inner, gate)):
        gate.set()

        async def request() -> list[list[float]]:
            admit_request("rows")
            admission = admitted("rows")
            assert admission is not None and admission.task is asyncio.current_task()
            stack, released = ExitStack(), threading.Event()
            stack.callback(released.set)  # the lease's release
            x = {"x": np.full((1, 3), 1.0, np.float32)}
            queued = submit(LeasedModel(model, "rows", 3), x, None, stack, None, admission)
            assert queued.loop is asyncio.get_running_loop()
            admission.release()
            assert admission.task is None  # given back: the task let go of
            outputs = await finish(queued)
            assert released.is_set()
            return outputs["x_echo"].tolist()  # type: ignore[no-any-return]

        async def scenario() -> list[list[float]]:
            return await asyncio.ensure_future(request())

        assert asyncio.run(scenario()) == [[2.0] * 3]


def test_a_place_its_task_gives_back_at_its_end_lets_go_of_the_task() -> None:
    with held_rows(max_batch_size=4, max_queue=2) as (model, _):

        async def failing() -> Admission:
            admit_request("rows")
            found = _admission.get()
            assert isinstance(found, Admission) and found.task is asyncio.current_task()
            return found  # a request that failed before it was queued

        async def scenario() -> Admission:
            # its done callbacks run in the order added: the place's before this await's
            return await asyncio.ensure_future(failing())

        admission = asyncio.run(scenario())
        assert admission.task is None and not model.batcher.full
        again = admit("rows")
        assert again is not None
        again.release()

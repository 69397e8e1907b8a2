"""Nothing waits forever on a worker process: a load that hangs inside a worker is ended
at ``workers.ready_timeout`` (the worker killed, the load failed naming the model and the
bound, a later load free to run); a request waiting for a worker that restarts ends at
its deadline (504) and, without one, after ``workers.start_timeout`` (503); one waiting
for a busy worker ends at its deadline."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.deadline import request_deadline
from keepwarm.errors import DeadlineExceededError, ModelLoadError, UnavailableError
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from keepwarm.settings import Settings
from keepwarm.workers import default_pool
from support.waiting import process_alive, wait_until
from support.worker_models import Gate, LoadGate

X = np.ones((1, 4), np.float32)
BOUND_S = 30.0  # a wait that was to end after a second or two ended well before this
READY_S = 3.0  # workers.ready_timeout: the load that hangs is killed after this
START_S = 10.0  # workers.start_timeout: a worker starts in 1-3 s here, busy


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[LoadGate]:
    directory = tmp_path / "gate"
    directory.mkdir()
    gate = LoadGate(directory)
    yield gate
    gate.close()


def test_a_load_that_hangs_in_its_worker_is_killed_at_ready_timeout(
    tmp_path: Path, gate: LoadGate
) -> None:
    # The bound covers the worker's import of the model's module, before its load says
    # where it runs: 1 s was passed on a loaded machine (the worker killed before that).
    settings = Settings.from_env({}, workers={"ready_timeout": READY_S}, retry_initial=0.01)
    cache = ModelCache(settings=settings, warmup=False)
    try:
        model_dir = tmp_path / "slow"
        model_dir.mkdir()
        (model_dir / "gate").write_text(str(gate.directory))
        gate.hold()
        started = time.monotonic()
        with pytest.raises(ModelLoadError) as caught:
            _load(cache, model_dir)
        assert time.monotonic() - started < BOUND_S
        message = caught.value.message
        assert "model 'slow'" in message and f"{READY_S:g} s (workers.ready_timeout)" in message
        assert "killed" in message
        # The killed worker, as the message names it (on a loaded machine it may not
        # have reached the model's load within the bound: the import before it counts).
        named = re.search(r"worker process (\d+) did not load it", message)
        assert named is not None, message
        pid = int(named.group(1))
        assert wait_until(lambda: not process_alive(pid))
        # The load returned (as a failure): the next one runs, and serves.
        (gate.directory / "hold").unlink()
        assert wait_until(lambda: _answers(cache, model_dir))
        loaded = gate.wait_loading()  # the killed worker's, if it got that far, comes first
        if loaded == pid:
            loaded = gate.wait_loading()
        assert loaded != pid
    finally:
        cache.close()


def _load(cache: ModelCache, model_dir: Path) -> Any:
    return cache.load(
        model_dir, options={"class": "support.worker_models:SlowToLoad"}, workers=True
    )


def _answers(cache: ModelCache, model_dir: Path) -> bool:
    try:
        return bool(np.array_equal(_load(cache, model_dir).predict(X)["y"], X + 1))
    except ModelLoadError:
        return False  # the retry's backoff has not passed yet


def _repository(root: Path, gate: LoadGate) -> Path:
    version = root / "slow" / "1"
    version.mkdir(parents=True)
    (root / "slow" / "model.toml").write_text("[workers]\nprocesses = 1\n\n[warmup]\nruns = 0\n")
    (version / "keepwarm.toml").write_text('[python]\nclass = "support.worker_models:SlowToLoad"\n')
    (version / "gate").write_text(str(gate.directory))
    (version / ".keepwarm-ready").touch()  # complete: taken at the first scan
    return root


def _infer(service: InferenceService, timeout: float | None) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = service.infer_blocking(
        "slow",
        None,
        lambda signature: {"x": X},
        lambda name, version, outputs: outputs,
        protocol="v2",
        timeout=timeout,
    )
    return result


def test_requests_waiting_for_a_restarting_worker_end_at_their_deadline_or_start_timeout(
    tmp_path: Path, gate: LoadGate
) -> None:
    settings = Settings.from_env(
        {}, allow_unsafe=True, workers={"start_timeout": START_S}, poll_seconds=600, watch=False
    )
    repository = Repository(_repository(tmp_path / "models", gate), settings=settings)
    service = InferenceService(repository)
    try:
        repository.refresh()  # one scan: it loads (no poll thread needed)
        first = gate.wait_loading()
        assert repository.wait_ready("slow", None, 60)
        np.testing.assert_array_equal(_infer(service, None)["y"], X + 1)

        gate.hold()
        os.kill(first, signal.SIGKILL)
        restarted = gate.wait_loading()  # the restart is inside its load, held there
        assert restarted != first

        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"model 'slow'.*worker process"):
            _infer(service, 0.2)
        assert time.monotonic() - started < BOUND_S

        started = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            _infer(service, None)  # no deadline: start_timeout bounds the wait
        waited = time.monotonic() - started
        assert START_S <= waited < START_S + BOUND_S
        assert "restarting" in caught.value.message
        assert f"{START_S:g} s (workers.start_timeout)" in caught.value.message

        gate.let_one_load()  # the restart ends; the model answers again
        assert wait_until(lambda: any(i.pid == restarted for i in default_pool().workers()))
        np.testing.assert_array_equal(_infer(service, 5.0)["y"], X + 1)
    finally:
        service.close()
        repository.close()


def test_a_request_waiting_for_a_busy_worker_ends_at_its_deadline(
    no_retry_cache: Callable[[int], ModelCache], tmp_path: Path
) -> None:
    cache = no_retry_cache(3)
    gate = Gate(tmp_path)
    try:
        model = cache.load(tmp_path, options={"class": "support.worker_models:Gated"}, workers=True)
        first: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: first.update(model.predict(X)))
        thread.start()
        gate.wait_started()  # the one worker is busy with that call
        token = request_deadline.set(time.monotonic() + 0.2)
        try:
            with pytest.raises(DeadlineExceededError, match=r"waited for a worker process$"):
                model.predict(X)
        finally:
            request_deadline.reset(token)
        gate.let_one_finish()
        thread.join(BOUND_S)
        np.testing.assert_array_equal(first["y"], X + 1)  # the busy call was not disturbed
    finally:
        gate.close()


def _hung_call(
    cache: ModelCache, path: Path, gate: Gate
) -> tuple[Any, dict[str, Any], threading.Thread, int]:
    """The gated model at ``path`` loaded in a worker, and a call to it on a thread, inside
    its model now (held by ``gate``): the worker model, the call's outcome (``answer`` or
    ``error``, once it ends), the thread and the worker's pid."""
    model = cache.load(path, options={"class": "support.worker_models:Gated"}, workers=True)
    with model.acquire() as leased:
        worker_model = getattr(leased.raw, "inner", leased.raw)
    calls: dict[str, Any] = {}

    def call() -> None:
        try:
            calls["answer"] = worker_model.predict({"x": X})
        except Exception as exc:
            calls["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return worker_model, calls, thread, gate.wait_started()


def test_closing_kills_a_worker_still_in_its_call_at_once(
    no_retry_cache: Callable[[int], ModelCache], tmp_path: Path
) -> None:
    """A model closed while its call hangs (a server past its drain timeout unloads it):
    after the group's wait for running calls, the worker still in its call is killed at
    once. It was sent a stop it could not read before its model returned and waited for
    10 s more: a server with a hung model exited 20 s per such model after its drain
    timeout (47 s with --drain-timeout 2 and two models)."""
    cache = no_retry_cache(3)
    gate = Gate(tmp_path)
    try:
        worker_model, calls, thread, pid = _hung_call(cache, tmp_path, gate)
        closing = threading.Thread(target=worker_model.group.close)
        closing.start()
        assert wait_until(lambda: worker_model.workers() == [], BOUND_S)  # its wait ended
        gone = wait_until(lambda: not process_alive(pid), 5.0)  # within the 10 s a stop took
        gate.let_one_finish()  # what a hung model that returned late would do
        closing.join(BOUND_S)
        thread.join(BOUND_S)
        assert gone, "the worker still in its call was asked to stop, not killed"
        assert "answer" not in calls
        error = calls["error"]
        assert isinstance(error, UnavailableError), calls
        assert "was unloaded while this request ran" in error.message  # not "restarted"
    finally:
        gate.close()


def test_a_hurried_pool_kills_a_worker_in_its_call_without_waiting(
    no_retry_cache: Callable[[int], ModelCache], tmp_path: Path
) -> None:
    """``keepwarm serve`` past its drain timeout hurries the pool: unloading a model whose
    call hangs then kills its worker at once, where it waited 10 s for the call first (a
    server with a hung model took 10 s more per model to exit)."""
    cache = no_retry_cache(3)
    gate = Gate(tmp_path)
    try:
        worker_model, calls, thread, pid = _hung_call(cache, tmp_path, gate)
        default_pool().hurry()
        started = time.monotonic()
        closing = threading.Thread(target=worker_model.group.close)
        closing.start()
        closing.join(BOUND_S)
        took = time.monotonic() - started
        gate.let_one_finish()
        thread.join(BOUND_S)
        assert not closing.is_alive() and not process_alive(pid)
        assert took < 5.0, f"close waited {took:.1f} s for the hung call (10 s unhurried)"
        assert "answer" not in calls
        assert isinstance(calls["error"], UnavailableError), calls
        assert "was unloaded while this request ran" in calls["error"].message
    finally:
        gate.close()

"""Worker faults: a worker killed in the middle of a batch fails only that batch's
requests and comes back with its model loaded; a crash loop ends in FAILED while other
models serve; no worker outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.errors import UnavailableError
from keepwarm.model import Model
from keepwarm.workers import WorkerModel, default_pool
from support.waiting import process_alive, wait_until
from support.worker_models import Gate

MODELS = "support.worker_models"
X = np.ones((1, 4), np.float32)


@pytest.fixture
def cache(no_retry_cache: Callable[[int], ModelCache]) -> ModelCache:
    return no_retry_cache(2)  # the counts stay those of one crash loop


def _worker(model: Model) -> WorkerModel:
    with model.acquire() as leased:
        raw = leased.raw
    inner = getattr(raw, "inner", raw)
    assert isinstance(inner, WorkerModel)
    return inner


def _call(model: Model, results: dict[str, Any], name: str) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = model.predict(X)["y"]
        except Exception as exc:
            results[name] = exc

    thread = threading.Thread(target=run, name=f"test-{name}")
    thread.start()
    return thread


def test_kill_9_mid_batch_fails_only_that_batch(cache: ModelCache, tmp_path: Path) -> None:
    model_dir = tmp_path / "gated"
    model_dir.mkdir()
    gate = Gate(model_dir)
    try:
        model = cache.load(
            model_dir,
            options={"class": f"{MODELS}:Gated"},
            workers=True,
            batching={"max_batch_size": 8, "max_delay_ms": 0},
        )
        with model.acquire() as leased:
            batcher = leased.raw.batcher
        worker = _worker(model)
        (info,) = worker.workers()
        results: dict[str, Any] = {}
        threads = [_call(model, results, "first")]  # occupies the worker
        gate.wait_started()
        threads += [_call(model, results, f"a{i}") for i in range(2)]
        assert wait_until(lambda: batcher.queued == 2)
        gate.let_one_finish()  # "first" answers; a0 and a1 run as one batch
        gate.wait_started()  # that batch is inside predict, in the worker
        threads += [_call(model, results, f"b{i}") for i in range(2)]
        assert wait_until(lambda: batcher.queued == 2)  # the next batch waits
        os.kill(info.pid, signal.SIGKILL)
        gate.wait_started()  # the next batch runs on the restarted worker...
        gate.let_one_finish()  # ... and answers
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads)
        np.testing.assert_array_equal(results["first"], X + 1)
        for name in ("a0", "a1"):
            error = results[name]
            assert isinstance(error, UnavailableError), error
            assert "model 'gated'" in error.message and "signal 9" in error.message
        for name in ("b0", "b1"):
            np.testing.assert_array_equal(results[name], X + 1)
        (after,) = worker.workers()
        assert after.pid != info.pid and after.restarts == 1
        answers: dict[str, Any] = {}
        thread = _call(model, answers, "next")
        gate.wait_started()
        gate.let_one_finish()
        thread.join(30)
        np.testing.assert_array_equal(answers["next"], X + 1)
    finally:
        gate.close()


def test_a_crash_loop_ends_in_failed_and_other_models_serve(
    cache: ModelCache, tmp_path: Path
) -> None:
    (tmp_path / "crashes").mkdir()
    (tmp_path / "steady").mkdir()
    steady = cache.load(tmp_path / "steady", options={"class": f"{MODELS}:Affine"}, workers=True)
    crashes = cache.load(tmp_path / "crashes", options={"class": f"{MODELS}:Crashes"}, workers=True)
    restarts = default_pool().counts().get("crashes", {}).get("restarts", 0)
    errors = []
    for _ in range(10):  # bounded: max_restarts=2 means the third death breaks it
        with pytest.raises(UnavailableError) as caught:
            crashes.predict(X)
        errors.append(caught.value.message)
        np.testing.assert_array_equal(steady.predict(X)["y"], X * 2 + 1)
        if "times in a row" in errors[-1]:
            break
    assert "exited with code 3" in errors[0]
    assert "about to die on purpose" in errors[0]  # the worker's own last words
    assert "oneDNN" not in errors[0]  # native start-up chatter is not among them
    assert wait_until(lambda: _state(cache, "crashes")[0] == "FAILED")
    _state_name, reason = _state(cache, "crashes")
    assert "died or failed to start 3 times in a row" in reason
    assert "workers.max_restarts" in reason
    assert default_pool().counts()["crashes"]["restarts"] - restarts == 2
    assert not [w for w in default_pool().workers() if "crashes" in w.models]
    np.testing.assert_array_equal(steady.predict(X)["y"], X * 2 + 1)


def _state(cache: ModelCache, name: str) -> tuple[str, str]:
    for key, info in cache.stats()["models"].items():
        if key.endswith(f"/{name}"):
            return info["state"], info["reason"] or ""
    raise AssertionError(f"no model {name}")


_SCRIPT = """
import os, sys
import numpy as np
import keepwarm
model = keepwarm.load(sys.argv[1], options={"class": "support.worker_models:Affine"},
                      workers={"processes": 2})
model.predict(np.ones((1, 4), np.float32))
from keepwarm.workers import default_pool
print(" ".join(str(w.pid) for w in default_pool().workers()), flush=True)
if sys.argv[2] == "hang":
    sys.stdin.read()
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_no_worker_outlives_its_server(tmp_path: Path, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), "hang" if how == "kill" else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    ) as server:
        assert server.stdout is not None
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
        if how == "kill":
            server.kill()
        assert server.wait(60) is not None
    assert wait_until(lambda: not any(process_alive(pid) for pid in pids))

"""Worker processes: models loaded once per process, answers equal to in-process ones,
tensors through the shared buffer (grown when too small), errors typed, nothing left."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.errors import InvalidInputError, ModelLoadError, ResourceExhaustedError
from keepwarm.settings import Settings
from keepwarm.workers import WorkerModel, default_pool
from keepwarm.workers.remote import RemoteError
from support.waiting import process_alive, wait_until

MODELS = "support.worker_models"


@pytest.fixture
def cache() -> Iterator[ModelCache]:
    settings = Settings.from_env({}, workers={"buffer_bytes": 4096, "max_buffer_bytes": 1 << 22})
    cache = ModelCache(settings=settings, warmup=False)
    yield cache
    cache.close()


def _raw(cache: ModelCache, model_dir: Path, cls: str, **kwargs: object) -> WorkerModel:
    model = cache.load(model_dir, options={"class": f"{MODELS}:{cls}"}, **kwargs)  # type: ignore[arg-type]
    with model.acquire() as leased:
        raw = leased.raw
    inner = getattr(raw, "inner", raw)
    assert isinstance(inner, WorkerModel)
    return inner


def test_results_equal_in_process_and_each_process_loads_once(
    cache: ModelCache, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    local = cache.load(tmp_path, options={"class": f"{MODELS}:Affine"}, workers=False)
    remote = cache.load(tmp_path, options={"class": f"{MODELS}:Affine"}, workers={"processes": 2})
    assert remote is not local
    np.testing.assert_array_equal(remote.predict(x)["y"], local.predict(x)["y"])

    pids = cache.load(tmp_path, options={"class": f"{MODELS}:Pid"}, workers={"processes": 2})
    raw = _raw(cache, tmp_path, "Pid", workers={"processes": 2})
    infos = raw.workers()
    assert len(infos) == 2 and len({i.pid for i in infos}) == 2
    assert all(i.pid != os.getpid() and i.state == "ready" for i in infos)
    # two threads each holding a call at once are served by both processes
    seen: set[int] = set()
    barrier = threading.Barrier(2)

    def call() -> None:
        barrier.wait()
        for _ in range(50):
            seen.update(pids.predict(x)["pid"].tolist())

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen <= {i.pid for i in infos}
    assert os.getpid() not in seen


def test_text_tensors_and_answers_larger_than_the_buffer(cache: ModelCache, tmp_path: Path) -> None:
    text = cache.load(tmp_path, options={"class": f"{MODELS}:Text"}, workers=True)
    out = text.predict({"s": np.array(["a", "bc"], dtype=object)})["t"]
    assert out.tolist() == ["A", "BC"]

    (tmp_path / "factor").write_text("64")
    wide = cache.load(tmp_path, options={"class": f"{MODELS}:Wide"}, workers=True)
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 16)  # 128 bytes in, 8 KiB out > 4 KiB
    for _ in range(2):  # the grown buffer is reused
        np.testing.assert_array_equal(wide.predict(x)["y"], np.tile(x, (1, 64)))
    big = np.ones((64, 256), np.float32)  # 64 KiB in: the buffer grows
    assert wide.predict(big)["y"].shape == (64, 256 * 64)


def test_inputs_over_the_buffer_limit_are_refused_clearly(
    cache: ModelCache, tmp_path: Path
) -> None:
    model = cache.load(tmp_path, options={"class": f"{MODELS}:Affine"}, workers=True)
    huge = np.zeros((300_000, 4), np.float32)  # 4.8 MB > max_buffer_bytes (4 MiB)
    with pytest.raises(ResourceExhaustedError, match="max_buffer_bytes=4194304"):
        model.predict(huge)
    assert model.predict(np.ones((1, 4), np.float32))["y"].tolist() == [[3.0] * 4]


def test_wrong_dtypes_are_refused_before_the_worker(cache: ModelCache, tmp_path: Path) -> None:
    model = cache.load(tmp_path, options={"class": f"{MODELS}:Affine"}, workers=True)
    with pytest.raises(InvalidInputError, match="float32"):
        model.predict(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(InvalidInputError):
        model.predict(np.ones((2, 5), np.float32))


def test_an_exception_in_the_worker_keeps_its_type_and_text(
    cache: ModelCache, tmp_path: Path
) -> None:
    model = cache.load(tmp_path, options={"class": f"{MODELS}:Raises"}, workers=True)
    with pytest.raises(ValueError, match="cannot handle 2 rows") as caught:
        model.predict(np.ones((2, 4), np.float32))
    assert "in the worker process" in "".join(caught.value.__notes__)
    assert "worker_models.py" in "".join(caught.value.__notes__)  # its traceback
    raw = _raw(cache, tmp_path, "Raises", workers=True)
    assert raw.workers()[0].restarts == 0  # the worker lives on


def test_a_class_the_worker_cannot_import_fails_the_load_naming_it(
    cache: ModelCache, tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="no_such_module_here"):
        cache.load(tmp_path, options={"class": "no_such_module_here:Model"}, workers=True)
    with pytest.raises(ModelLoadError, match="the weights are missing"):
        cache.load(tmp_path, options={"class": f"{MODELS}:FailsToLoad"}, workers=True)
    assert not [w for w in default_pool().workers() if "FailsToLoad" in str(w.models)]


def test_a_class_defined_in_a_function_is_refused_with_a_hint(
    cache: ModelCache, tmp_path: Path
) -> None:
    class Local:
        signature = None

    with pytest.raises(ModelLoadError, match="module level"):
        cache.load(tmp_path, options={"class": Local}, workers=True)


def test_closing_stops_the_workers_and_their_threads(cache: ModelCache, tmp_path: Path) -> None:
    raw = _raw(cache, tmp_path, "Affine", workers={"processes": 2})
    pids = [i.pid for i in raw.workers()]
    assert all(process_alive(pid) for pid in pids)
    assert cache.evict(tmp_path)
    # the reaper closes it on its own thread; the workers end, and so do their threads
    assert wait_until(lambda: not any(process_alive(pid) for pid in pids), 30)
    assert wait_until(lambda: not raw.workers(), 30)
    assert wait_until(lambda: not _worker_threads(), 30)


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("keepwarm-worker")]


def test_a_remote_error_of_an_unknown_type_keeps_its_name() -> None:
    from keepwarm.workers.messages import Failed
    from keepwarm.workers.remote import rebuilt

    exc = rebuilt(Failed("InvalidArgumentError", "tensorflow.errors", "bad shape"))
    assert isinstance(exc, RemoteError) and exc.type_name == "InvalidArgumentError"
    load = rebuilt(Failed("ModelLoadError", "keepwarm.errors", "nope", format="python"))
    assert isinstance(load, ModelLoadError) and load.format == "python"

"""A model's files deleted or replaced while its worker process runs: the worker keeps
serving what it loaded; once it must load again (it died), a deleted directory ends in a
FAILED version with a typed error naming the model, a replaced one serves the new files;
nothing hangs, and the other models keep serving throughout."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.core.states import State
from keepwarm.errors import KeepwarmError, UnavailableError
from keepwarm.model import Model
from keepwarm.workers import WorkerModel
from support.waiting import wait_until

MODELS = "support.worker_models"
X = np.ones((2, 3), np.float32)


@pytest.fixture
def cache(no_retry_cache: Callable[[int], ModelCache]) -> ModelCache:
    return no_retry_cache(1)  # one restart in a row, then FAILED


def _wide(directory: Path, factor: int) -> Path:
    directory.mkdir()
    (directory / "factor").write_text(str(factor))  # read at load, in the worker
    return directory


def _load(cache: ModelCache, directory: Path, cls: str = "Wide") -> Model:
    return cache.load(directory, options={"class": f"{MODELS}:{cls}"}, workers=True)


def _pid(model: Model) -> int:
    with model.acquire() as leased:
        raw = leased.raw
    assert isinstance(raw, WorkerModel)
    (info,) = raw.workers()
    return info.pid


def _width(model: Model) -> int:
    return int(model.predict(X)["y"].shape[1])


def _loaded_then_deleted(cache: ModelCache, tmp_path: Path, name: str) -> tuple[Model, Model]:
    """A steady model, and model ``name`` loaded in a worker, answering, then its
    directory deleted."""
    (tmp_path / "steady").mkdir()
    steady = _load(cache, tmp_path / "steady", "Affine")
    model = _load(cache, _wide(tmp_path / name, 2))
    assert _width(model) == 6
    shutil.rmtree(tmp_path / name)
    return steady, model


def _still_serves(steady: Model) -> None:
    np.testing.assert_array_equal(steady.predict(X[:, :1].repeat(4, 1))["y"], np.full((2, 4), 3))


def test_a_deleted_directory_is_served_until_a_restart_then_the_version_fails(
    cache: ModelCache, tmp_path: Path
) -> None:
    steady, doomed = _loaded_then_deleted(cache, tmp_path, "doomed")
    assert _width(doomed) == 6  # what the worker loaded, it keeps
    _still_serves(steady)

    os.kill(_pid(doomed), signal.SIGKILL)  # its restart must load the files again
    key = doomed._key
    assert cache.manager.wait_for(lambda: cache.manager.state(key) is State.FAILED, 60)
    with pytest.raises(KeepwarmError) as caught:
        doomed.predict(X)
    message = caught.value.message
    assert "model 'doomed'" in message, message
    assert "restarting it failed" in message and "doomed" in message.split("failed", 1)[1]
    assert isinstance(caught.value, UnavailableError)
    _still_serves(steady)  # the other model never noticed


def test_a_replaced_directory_is_served_as_loaded_until_a_restart_loads_the_new_files(
    cache: ModelCache, tmp_path: Path
) -> None:
    steady, model = _loaded_then_deleted(cache, tmp_path, "swapped")
    _wide(tmp_path / "swapped", 5)  # another model under the same name
    assert _width(model) == 6  # the worker serves what it loaded
    old = _pid(model)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: _answers_with(model, 15))  # the restart loaded the new files
    assert _pid(model) != old
    _still_serves(steady)


def _answers_with(model: Model, width: int) -> bool:
    try:
        return _width(model) == width  # 6 until the death is seen
    except UnavailableError:  # the call that found it dead
        return False

"""The library face used carelessly or with hostility: ``keepwarm.load`` with settings
and models that cannot be served as given gets a typed error naming what was wrong and
what was expected, never a silent wrong answer or a machine's memory spent."""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm import InvalidConfigError, InvalidInputError, ModelCache, Repository
from keepwarm.errors import InternalError, KeepwarmError
from keepwarm.logs import JsonLines
from keepwarm.settings import BatchingSettings, Settings
from support.misbehaving_models import (
    AddsOutput,
    AnswersFloat64,
    AnswersFloatsAsIntegers,
    AnswersScalar,
    AnswersText,
    AnswersWiderRows,
    Doubles,
    ModelsOwnError,
    RaisesItsOwn,
    RenamesOutput,
    TwoInputsNamedX,
    TwoOutputsNamedY,
    two_versions,
)
from support.waiting import wait_until


@pytest.fixture
def cache() -> Iterator[ModelCache]:
    cache = ModelCache()
    yield cache
    cache.close()


@pytest.mark.parametrize("size", [65_537, 2**40, 2**70])
def test_a_max_batch_size_past_the_bound_is_refused(
    tmp_path: Path, cache: ModelCache, size: int
) -> None:
    """Every bucket up to max_batch_size is warmed with generated rows: 2**40 allocated
    terabytes on a thread (MemoryError there, or the machine's memory gone) and loaded."""
    with pytest.raises(InvalidConfigError, match=rf"max_batch_size.*65536.*{size}"):
        cache.load(tmp_path, options={"class": Doubles}, batching={"max_batch_size": size})
    served = cache.load(tmp_path, options={"class": Doubles}, batching={"max_batch_size": 65_536})
    assert served.predict(np.ones((3, 2), np.float32))["y"].tolist() == [[2.0, 2.0]] * 3


def test_a_settings_max_batch_size_past_the_bound_is_refused() -> None:
    """The server-wide default is refused where Settings are made, naming the setting (it
    reached the batcher through ``batching=True`` and warmed every bucket up to it)."""
    with pytest.raises(InvalidConfigError, match=r"batching\.max_batch_size=.*65536"):
        Settings(batching=BatchingSettings(max_batch_size=2**40))


@pytest.mark.parametrize(
    ("pad_axes", "expected"),
    [
        ([5], r"pad_axes: axis 5 .*no input has one.*'x': 2 axes"),
        ({"x": [2]}, r"pad_axes\['x'\]: axis 2 .*'x' has 2 axes"),
        ({"nope": [1]}, r"pad_axes\['nope'\]: .*no input 'nope'.*inputs: x"),
    ],
)
def test_pad_axes_the_signature_lacks_are_refused(
    tmp_path: Path, cache: ModelCache, pad_axes: object, expected: str
) -> None:
    """Such a table loaded and batched nothing across sizes, silently."""
    with pytest.raises(InvalidConfigError, match=expected):
        cache.load(tmp_path, options={"class": Doubles}, batching={"pad_axes": pad_axes})
    padded = cache.load(tmp_path, options={"class": Doubles}, batching={"pad_axes": {"x": [1]}})
    assert padded.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (RenamesOutput, r"missing \['y'\], unexpected \['z'\]"),
        (AddsOutput, r"missing \[\], unexpected \['extra'\]"),
        (AnswersText, r"'y' .*str.*expected y: float32\[-1, 2\]"),
        (AnswersWiderRows, r"'y' .*\[\d, 3\].*expected y: float32\[-1, 2\]"),
        (AnswersScalar, r"'y' .*\[\].*expected y: float32\[-1, 2\]"),
        (AnswersFloatsAsIntegers, r"'y' .*int64.*expected y: float32\[-1, 2\]"),
    ],
)
def test_a_python_model_answering_off_its_signature_fails(
    tmp_path: Path, cache: ModelCache, cls: type, expected: str, batching: bool
) -> None:
    """Each was handed to the caller as it came (without batching; with it, those whose
    rows still split), an answer the model's signature never promised."""
    model = cache.load(tmp_path, options={"class": cls}, batching=batching)
    with pytest.raises(InternalError, match=expected) as info:
        model.predict(np.ones((3, 2), np.float32))
    assert cls.__qualname__ in str(info.value)


def test_a_python_model_answering_float64_for_float32_is_cast(
    tmp_path: Path, cache: ModelCache
) -> None:
    model = cache.load(tmp_path, options={"class": AnswersFloat64})
    answer = model.predict(np.ones((3, 2), np.float32))["y"]
    assert answer.dtype == np.float32 and answer.tolist() == [[2.0, 2.0]] * 3


def test_an_access_hook_that_raises_leaks_no_lease(tmp_path: Path) -> None:
    """``on_access`` is the caller's code, run on every hit: when it raised, the hit's
    count on the model was never given back, so the model could never unload."""
    failing = threading.Event()

    def hook(key: Hashable, hit: bool) -> None:
        if failing.is_set():
            raise RuntimeError("the hook broke")

    cache = ModelCache(on_access=hook)
    try:
        model = cache.load(tmp_path, options={"class": Doubles})
        failing.set()
        with pytest.raises(RuntimeError, match="the hook broke"):
            model.predict(np.ones((1, 2), np.float32))
        (status,) = cache.stats()["models"].values()
        assert status["leases"] == 0
        failing.clear()
        assert cache.evict(tmp_path)
        (status,) = cache.stats()["models"].values()
        assert status["state"] == "UNLOADED"
    finally:
        cache.close(1.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"policy": "lru"}, r"policy='lru': expected an EvictionPolicy"),
        ({"on_access": 5}, r"on_access=5: expected a callable"),
    ],
)
def test_a_cache_refuses_a_policy_or_hook_of_the_wrong_kind(
    kwargs: dict[str, object], expected: str
) -> None:
    """Both were taken, and failed later inside a load or a predict (AttributeError,
    TypeError: 'int' object is not callable)."""
    with pytest.raises(InvalidConfigError, match=expected):
        ModelCache(max_models=1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        ("5", r"timeout='5' \(str\): expected a number of seconds"),  # TypeError
        (True, r"timeout=True \(bool\): expected a number of seconds"),  # taken as 1 s
        (float("nan"), r"timeout=nan \(float\): expected a number of seconds"),
    ],
)
def test_a_wait_for_a_load_refuses_a_timeout_that_is_not_a_number(
    tmp_path: Path, cache: ModelCache, timeout: object, expected: str
) -> None:
    model = cache.handle(tmp_path, options={"class": Doubles})  # not loaded: acquire waits
    with pytest.raises(InvalidInputError, match=expected):
        model.acquire(timeout=timeout)  # type: ignore[arg-type]
    repo = Repository(two_versions(tmp_path / "repo"), on_demand=True, allow_unsafe=True)
    with repo, pytest.raises(InvalidInputError, match=expected):
        repo.acquire("m", timeout=timeout)  # type: ignore[arg-type]


def test_an_infinite_timeout_waits_without_bound(tmp_path: Path, cache: ModelCache) -> None:
    """It raised OverflowError from the condition's wait."""
    with cache.handle(tmp_path, options={"class": Doubles}).acquire(timeout=math.inf) as model:
        assert model.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]
    repo = Repository(two_versions(tmp_path / "repo"), on_demand=True, allow_unsafe=True)
    with repo, repo.lease("m", 1, timeout=math.inf) as leased:
        assert leased.version == 1


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (TwoInputsNamedX, r"TwoInputsNamedX.*input name 'x' twice"),
        (TwoOutputsNamedY, r"TwoOutputsNamedY.*output name 'y' twice"),
    ],
)
def test_a_python_signature_naming_a_tensor_twice_fails_the_load(
    tmp_path: Path, cache: ModelCache, cls: type, expected: str
) -> None:
    """Such a model loaded, then refused every request (no dict matches both inputs)."""
    with pytest.raises(InvalidConfigError, match=expected):
        cache.load(tmp_path, options={"class": cls})


def test_a_handle_reloaded_at_a_new_version_tells_that_version_s_signature(
    tmp_path: Path, cache: ModelCache
) -> None:
    """A handle on a versioned directory loads its highest version again after an
    eviction; its signature stayed the one first loaded (rows of two), while the model
    answering took rows of three."""
    for version, cls in ((1, "Doubles"), (2, "DoublesThree")):
        directory = tmp_path / str(version)
        directory.mkdir()
        (directory / "keepwarm.toml").write_text(
            f'[python]\nclass = "support.misbehaving_models:{cls}"\n'
        )
        if version == 1:
            model = cache.load(tmp_path, options={"allow_unsafe": True})
            assert model.signature.inputs[0].shape == (None, 2)
    assert cache.evict(tmp_path)
    assert model.predict(np.ones((1, 3), np.float32))["y"].tolist() == [[2.0] * 3]
    assert model.signature.inputs[0].shape == (None, 3)


@pytest.mark.parametrize("workers", [False, True])
def test_a_close_that_exits_is_logged_and_the_unloader_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: bool
) -> None:
    """A Python model's ``close()`` calling ``sys.exit()`` ended the thread that closes
    unloaded models, with no log line: later unloads were never closed. In a worker
    process, it ended the worker as it stopped, unheard of."""
    root = two_versions(tmp_path, "ExitsOnClose")
    if workers:
        with (root / "m" / "model.toml").open("a") as toml:
            toml.write("\n[workers]\nprocesses = 1\n")
    caplog.set_level(logging.ERROR, logger="keepwarm.manager")
    with Repository(root, allow_unsafe=True, poll_seconds=60) as repo:
        assert [repo.wait_ready("m", v, timeout=30) for v in (1, 2)] == [1, 2]
        for version in (1, 2):  # the second shows the unloader still closes models
            shutil.rmtree(root / "m" / str(version))
            repo.refresh()
            assert wait_until(lambda n=version: len(caplog.records) == n, timeout=10)
            entry = json.loads(JsonLines().format(caplog.records[-1]))
            assert entry["level"] == "error"
            assert f"model 'm' version {version}" in entry["message"]
            assert "SystemExit: 3" in entry["message"]
            assert "SystemExit: 3" in entry["exception"]


@pytest.mark.parametrize("batching", [False, True])
def test_a_model_s_own_exception_reaches_the_caller_as_it_was_raised(
    tmp_path: Path, cache: ModelCache, batching: bool
) -> None:
    """The documented contract (README, Errors): keepwarm does not wrap a model's own
    exception; a caller's ``except`` written for the model keeps working, batched or not."""
    model = cache.load(tmp_path, options={"class": RaisesItsOwn}, batching=batching)
    with pytest.raises(ModelsOwnError, match="no negative inputs") as caught:
        model.predict(-np.ones((1, 2), np.float32))
    assert not isinstance(caught.value, KeepwarmError)
    assert any(entry.path.name == "misbehaving_models.py" for entry in caught.traceback)
    assert model.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]

"""Batching through the load path, on real ONNX Runtime models: ``keepwarm.load(...,
batching=...)``, ``model.toml [batching]`` in a Repository, bucket warmup at load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm import InvalidConfigError, ModelCache, Repository
from keepwarm.batching import buckets
from keepwarm.batching.model import BatchedModel
from keepwarm.batching.registry import live_batchers
from keepwarm.loading import spec_from_call
from support import onnx_graphs
from support.batch_models import run_clients
from support.repo_builders import write_model_toml


@pytest.fixture
def cache() -> Iterator[ModelCache]:
    cache = ModelCache()
    yield cache
    cache.close()


def _versioned(tmp_path: Path, name: str = "dense") -> Path:
    model_dir = tmp_path / name
    onnx_graphs.dense(model_dir / "1" / "model.onnx")
    (model_dir / "1" / ".keepwarm-ready").touch()  # whole: a repository takes it at once
    return model_dir


def test_load_batches_only_when_asked(tmp_path: Path, cache: ModelCache) -> None:
    model_dir = _versioned(tmp_path)
    with cache.lease(model_dir) as plain:
        assert not isinstance(plain.raw, BatchedModel)
    write_model_toml(model_dir, "[batching]\nmax_batch_size = 4\n")
    on = cache.load(model_dir, batching=None, version=1)  # model.toml turns it on
    with cache.lease(model_dir, version=1) as leased:
        assert isinstance(leased.raw, BatchedModel)
        assert leased.raw.batcher.max_batch_size == 4
    off = cache.load(model_dir, batching=False)
    assert off is not on
    with cache.lease(model_dir, batching=False) as leased:
        assert not isinstance(leased.raw, BatchedModel)
    given = cache.load(model_dir, batching={"max_batch_size": 2, "max_queue": 5})
    with cache.lease(model_dir, batching={"max_batch_size": 2, "max_queue": 5}) as leased:
        raw = leased.raw
        assert isinstance(raw, BatchedModel)
        assert (raw.batcher.max_batch_size, raw.batcher.max_queue) == (2, 5)
        # The smallest bucket was run and timed at load, before the first request; the
        # others just after, on a thread.
        assert raw.batcher.latency.snapshot().keys() >= {1}
        assert raw.wait_warm(60)
        assert sorted(raw.batcher.latency.snapshot()) == [1, 2]
    assert given.predict(np.ones((3, 16), np.float32))["y"].shape == (3, 8)


@pytest.mark.parametrize(
    ("batching", "match"),
    [
        ("yes", "batching='yes': expected True, False, None or a table"),
        ({"max_batch_size": 0}, "max_batch_size: expected an integer from 1 to 65536, got 0"),
        ({"max_batch": 3}, "unknown key 'batching.max_batch'"),
        ({"pad_axes": [0]}, "pad_axes"),
        (3, "expected True, False, None or a table"),
    ],
)
def test_a_bad_batching_argument_is_refused(
    tmp_path: Path, cache: ModelCache, batching: object, match: str
) -> None:
    with pytest.raises(InvalidConfigError, match=match):
        cache.load(_versioned(tmp_path), batching=batching)  # type: ignore[arg-type]


def test_32_threads_get_the_results_of_the_direct_call(tmp_path: Path, cache: ModelCache) -> None:
    model_dir = _versioned(tmp_path)
    direct = cache.load(model_dir)  # the same file, unbatched
    batched = cache.load(model_dir, batching={"max_batch_size": 8, "max_delay_ms": 1})
    rng = np.random.default_rng(3)
    requests = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(32 * 4)]
    expected = [direct.predict(x)["y"] for x in requests]
    got: dict[int, np.ndarray] = {}

    def client(index: int) -> None:
        for i in range(index, len(requests), 32):
            got[i] = batched.predict(requests[i])["y"]

    run_clients(32, client)
    for i, want in enumerate(expected):
        # Row by row; a batched matrix product may round its last bit differently.
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)
    with cache.lease(model_dir, batching={"max_batch_size": 8, "max_delay_ms": 1}) as leased:
        stats = leased.raw.stats()
    assert stats.requests == len(requests) and stats.failed == 0
    views = [v for v in live_batchers() if v.stats.requests == len(requests)]
    assert len(views) == 1 and views[0].model == "dense" and views[0].version == 1
    cache.close()
    assert not [v for v in live_batchers() if v.stats.requests == len(requests)]


def test_repository_model_toml_turns_batching_on_and_warms_each_bucket(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _versioned(root, "dense")
    write_model_toml(root / "dense", "[batching]\nmax_batch_size = 8\nmax_queue = 7\n")
    fixed = root / "fixed"  # a batch axis of exactly 1: not batchable
    onnx_graphs.identity(fixed / "1" / "model.onnx", dims=[1, 4])
    (fixed / "1" / ".keepwarm-ready").touch()
    write_model_toml(fixed, "[batching]\n")
    with Repository(root, poll_seconds=60) as repo:
        repo.wait_ready("dense", timeout=60)
        repo.wait_ready("fixed", timeout=60)
        with repo.lease("dense") as model:
            raw = model.raw
            assert isinstance(raw, BatchedModel)
            assert raw.batcher.max_queue == 7 and raw.batcher.max_batch_size == 8
            assert raw.wait_warm(60)
            assert sorted(raw.batcher.latency.snapshot()) == list(buckets(8))
            assert (raw.name, raw.version) == ("dense", 1)
            out = model.predict({"x": np.ones((2, 16), np.float32)})
            assert out["y"].shape == (2, 8)
        with repo.lease("fixed") as model:
            assert model.predict({"x": np.ones((1, 4), np.int32)})["y"].shape == (1, 4)
            assert isinstance(model.raw, BatchedModel)
            assert model.raw.why_not == "input 'x' has no batch axis (a first axis of unknown size)"


def test_warmup_says_when_a_model_cannot_be_batched(tmp_path: Path) -> None:
    fixed = onnx_graphs.identity(tmp_path / "fixed.onnx", dims=[1, 4])
    spec = spec_from_call(str(fixed), batching=True)
    model = spec.load()
    try:
        assert spec.warmup(model) == (
            "batching off: input 'x' has no batch axis (a first axis of unknown size)"
        )
        dense = spec_from_call(str(onnx_graphs.dense(tmp_path / "d.onnx")), batching=True)
        batched = dense.load()
        assert dense.warmup(batched) is None
        batched.close()
    finally:
        model.close()

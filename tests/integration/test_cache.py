"""keepwarm.load / ModelCache with real TensorFlow and ONNX Runtime models."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import keepwarm
from keepwarm.core.states import State
from keepwarm.signature import Signature, TensorSpec
from support.http_server import serve
from support.waiting import wait_until, waiting_for_room

F32 = np.dtype("float32")


class GatedModel:
    """A Python-runtime model whose load and predict can be held open by a test."""

    load_gate: ClassVar[threading.Event] = threading.Event()
    predict_gate: ClassVar[threading.Event] = threading.Event()
    in_predict: ClassVar[threading.Event] = threading.Event()
    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, 2)),), outputs=(TensorSpec("y", F32, (None, 2)),)
    )

    def load(self, path: str) -> None:
        assert GatedModel.load_gate.wait(30)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        GatedModel.in_predict.set()
        assert GatedModel.predict_gate.wait(30)
        return {"y": inputs["x"] * 2}


@pytest.fixture
def gated(tmp_path: Path) -> Any:
    GatedModel.load_gate.clear()
    GatedModel.predict_gate.set()
    GatedModel.in_predict.clear()
    (tmp_path / "gated").mkdir()
    yield tmp_path / "gated"
    GatedModel.load_gate.set()
    GatedModel.predict_gate.set()


def direct_savedmodel(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return loaded.signatures["serving_default"](image=tf.constant(x))["probs"].numpy()


def test_32_threads_one_load_while_another_model_loads_in_parallel(
    example_models: Path, gated: Path
) -> None:
    cache = keepwarm.ModelCache()
    slow = threading.Thread(target=lambda: cache.load(gated, options={"class": GatedModel}))
    slow.start()
    uri = example_models / "mlp" / "1"
    barrier = threading.Barrier(32)
    models: list[keepwarm.Model] = []

    def worker() -> None:
        barrier.wait()
        models.append(keepwarm.load(uri, cache=cache))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # All 32 finished while the gated model was still loading: loads are not serialised.
    assert cache.stats()["models"][str(Path(gated).resolve())]["state"] == "LOADING"
    assert len(models) == 32 and len({id(m) for m in models}) == 1
    assert cache.stats()["loads"] == 2
    GatedModel.load_gate.set()
    slow.join(30)
    assert cache.stats()["models"][str(Path(gated).resolve())]["state"] == "READY"


def test_eviction_under_max_bytes_and_kept_handle_reloads(example_models: Path) -> None:
    uris = [example_models / name / "1" for name in ("mlp", "mlp_keras", "mlp_onnx")]
    sizes = []
    for uri in uris:
        probe = keepwarm.ModelCache(warmup=False)
        sizes.append(probe.load(uri).nbytes)
        probe.close()
    budget = sum(sizes) - min(sizes) // 2  # any two fit, all three do not
    cache = keepwarm.ModelCache(max_bytes=budget)
    a, b = cache.load(uris[0]), cache.load(uris[1])
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    before = a.predict(x)["probs"]
    c = cache.load(uris[2])
    stats = cache.stats()
    assert stats["evictions"] == 1 and stats["bytes"] <= budget
    states = {k: v["state"] for k, v in stats["models"].items()}
    assert sorted(states.values()) == ["READY", "READY", "UNLOADED"]
    for handle in (a, b, c):  # every kept handle still predicts, reloading when evicted
        handle.predict(x)
    np.testing.assert_allclose(a.predict(x)["probs"], before, atol=1e-6)
    assert cache.stats()["loads"] > 3


def test_model_inside_predict_is_not_unloaded_under_its_user(
    example_models: Path, gated: Path
) -> None:
    GatedModel.load_gate.set()
    GatedModel.predict_gate.clear()
    cache = keepwarm.ModelCache(max_models=1, budget_timeout=30, warmup=False)
    busy = cache.load(gated, options={"class": GatedModel})
    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.append(busy.predict(np.ones((1, 2)))))
    caller.start()
    assert GatedModel.in_predict.wait(10)
    other_uri = example_models / "mlp_onnx" / "1"
    other = threading.Thread(target=lambda: cache.load(other_uri))
    other.start()
    # The other load waits for room: the model in predict stays READY meanwhile.
    assert wait_until(
        lambda: waiting_for_room(cache.manager, cache.handle(other_uri)._key, ready=busy._key)
    )
    GatedModel.predict_gate.set()
    caller.join(10)
    other.join(30)
    np.testing.assert_array_equal(result[0]["y"], np.full((1, 2), 2.0, dtype=np.float32))
    assert cache.manager.state(busy._key) is State.UNLOADED


def test_missing_path_names_near_models(example_models: Path) -> None:
    cache = keepwarm.ModelCache()
    with pytest.raises(keepwarm.ModelNotFoundError, match="mlp_keras"):
        cache.load(example_models / "mlp_kera")


def test_corrupt_savedmodel_gives_load_error_and_is_not_retried_every_call(
    example_models: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(example_models / "mlp" / "1", broken)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf at all")
    cache = keepwarm.ModelCache()
    for _ in range(3):
        with pytest.raises(keepwarm.ModelLoadError, match="savedmodel"):
            cache.load(broken)
    assert cache.stats()["loads"] == 1
    cache.load(example_models / "mlp_onnx" / "1").predict(np.zeros((1, 784)))  # still usable


def test_truncated_and_mismatched_tarballs(example_hub_tarball: Path) -> None:
    body = example_hub_tarball.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    cache = keepwarm.ModelCache()
    with serve() as server:
        truncated = server.add("/truncated.tar.gz", body[: len(body) // 2])
        good = server.add("/mlp.tar.gz", body)
        with pytest.raises(keepwarm.DownloadError, match=r"truncated|corrupt|archive"):
            cache.load(truncated)
        with pytest.raises(keepwarm.DownloadError, match="sha256"):
            cache.load(good + "#sha256=" + "0" * 64)
        model = cache.load(good + "#sha256=" + digest)
        x = np.random.default_rng(1).random((2, 784), dtype=np.float32)
        with tarfile.open(example_hub_tarball) as tar:
            names = tar.getnames()
        assert any(n.endswith("saved_model.pb") for n in names)
        np.testing.assert_allclose(
            model.predict(x)["probs"], direct_savedmodel(model_dir(model), x), atol=1e-5
        )


def model_dir(model: keepwarm.Model) -> Path:
    from keepwarm.sources.resolve import resolve_uri

    return resolve_uri(model.uri)


@pytest.mark.parametrize("name", ["mlp", "mlp_keras", "mlp_onnx"])
def test_predictions_match_the_direct_call(example_models: Path, name: str) -> None:
    x64 = np.random.default_rng(2).random((3, 784))  # float64: cast to the model's float32
    model = keepwarm.load(example_models / name / "1", cache=keepwarm.ModelCache())
    got = model.predict(x64)["probs"]
    want = direct_savedmodel(example_models / "mlp" / "1", x64.astype(np.float32))
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(keepwarm.InvalidInputError, match=r"'image'.*784"):
        model.predict(np.zeros((1, 783), dtype=np.float32))


def test_same_model_whatever_the_spelling_of_its_path(
    example_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = keepwarm.ModelCache()
    monkeypatch.chdir(example_models)
    relative = cache.load("mlp_onnx/1")
    absolute = cache.load(example_models / "mlp_onnx" / "1")
    as_url = cache.load((example_models / "mlp_onnx" / "1").as_uri())
    assert relative is absolute is as_url
    assert cache.stats()["loads"] == 1


def test_a_lease_says_which_version_answered(example_models: Path) -> None:
    cache = keepwarm.ModelCache()
    try:
        with cache.lease(example_models / "mlp_onnx") as model:  # a versioned directory
            assert model.version == 1
        with cache.lease(example_models / "mlp_onnx", version=1) as model:
            assert model.version == 1
        with cache.lease(example_models / "mlp_onnx" / "1" / "model.onnx") as model:
            assert model.version is None  # a file: no version to speak of
    finally:
        cache.close()

"""The TensorFlow runtimes' flat call (``runtimes/_flatcall.py``): the same results as the
ordinary call on real models, typed errors for bad inputs, the ordinary call as fallback."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_models import random_inputs as _inputs
from runtime_models import same_outputs as _same
from runtime_models import save_several, several_inputs

from keepwarm.errors import InvalidInputError, UnavailableError
from keepwarm.model import LeasedModel
from keepwarm.runtimes._executor import FirstCallChooses
from keepwarm.runtimes.keras import KerasRuntime
from keepwarm.runtimes.savedmodel import SavedModel, SavedModelRuntime

RUNTIME = SavedModelRuntime()


@pytest.fixture(scope="module")
def several(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    path = save_several(tmp_path_factory.mktemp("several") / "model")
    return RUNTIME.load(path, signature=None, options={})


@pytest.mark.parametrize(("name", "batches"), [("mlp", (1, 32)), ("mobilenet_v2", (1, 3))])
def test_example_models_give_the_ordinary_call_s_results(
    example_models: Path, name: str, batches: tuple[int, ...]
) -> None:
    model = RUNTIME.load(example_models / name / "1", signature=None, options={})
    assert model.call_path == "flat"
    for batch in batches:
        inputs = _inputs(model, batch)
        _same(model.predict(inputs), model.call_ordinary(inputs))


def test_keras_model_gives_the_ordinary_call_s_results(example_models: Path) -> None:
    model = KerasRuntime().load(example_models / "mlp_keras" / "1", signature=None, options={})
    assert model.call_path == "flat"
    for batch in (1, 32):
        inputs = _inputs(model, batch)
        _same(model.predict(inputs), model.call_ordinary(inputs))
    model.close()
    with pytest.raises(UnavailableError):
        model.predict(_inputs(model, 1))


def test_several_inputs_and_outputs_of_different_dtypes(several: SavedModel) -> None:
    assert several.call_path == "flat"
    inputs = several.signature.coerce(several_inputs())
    out = several.predict(inputs)
    _same(out, several.call_ordinary(inputs))
    assert out["b_text"].tolist() == [b"AB", b"C"]
    assert out["flag"].tolist() == [False, True] and out["a_count"].tolist() == [2, 10]
    np.testing.assert_array_equal(out["z_out"], [[-0.5, 1.5, 5.5], [2.5, 7.5, 14.5]])
    # str text (numpy "U") is coerced to the string input's object dtype, sent as UTF-8
    texts = several.signature.coerce({**inputs, "text": np.array(["é", "x"])})
    assert several.predict(texts)["b_text"].tolist() == ["é".encode(), b"X"]  # ASCII upper
    _same(several.predict(texts), several.call_ordinary(texts))


def test_threads_each_get_their_own_results(example_models: Path) -> None:
    """From the first call on: the first calls choose the TensorFlow executor at once."""
    model = RUNTIME.load(example_models / "mlp" / "1", signature=None, options={})
    batches = [_inputs(model, 1 + i % 3, seed=i) for i in range(8)]
    expected = [model.call_ordinary(b) for b in batches]
    start, failures = threading.Barrier(4), []

    def work(offset: int) -> None:
        start.wait(timeout=30)
        for i in range(100):
            k = (offset + i) % len(batches)
            got = model.predict(batches[k])["probs"]
            if not np.array_equal(got, expected[k]["probs"]):
                failures.append(k)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and failures == []
    assert model.tf_executor == "single-threaded"
    assert not isinstance(model._call, FirstCallChooses)


BAD = [
    ("wrong dtype", {"alpha": np.array([1.5, 2.0])}, r"'alpha'.*int64.*float64"),
    ("wrong rank", {"zeta": np.zeros((2, 3, 1), np.float32)}, r"'zeta'.*expected shape"),
    ("wrong static dim", {"mid": np.zeros((2, 4), np.float32)}, r"'mid'.*expected shape"),
    ("missing input", {"text": None}, r"missing \['text'\]"),
    ("extra input", {"extra": np.zeros(2, np.float32)}, r"unexpected \['extra'\]"),
    ("objects, not text", {"text": np.array([1, 2], dtype=object)}, r"'text'"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_invalid_input_errors(
    several: SavedModel, case: str, change: dict[str, Any], message: str
) -> None:
    bad = {k: v for k, v in {**several_inputs(), **change}.items() if v is not None}
    # the library's path (coerce, then predict) and a caller of the runtime's predict alone
    for call in (LeasedModel(several, "several", None).predict, several.predict):
        with pytest.raises(InvalidInputError, match=message):
            call(bad)


def test_a_model_s_own_error_stays_tensorflow_s(several: SavedModel) -> None:
    import tensorflow as tf

    inputs = {**several_inputs(), "alpha": np.array([-1, 2], np.int64)}
    for call in (several.predict, several.call_ordinary):
        with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must not be negative"):
            call(inputs)


def test_missing_private_api_falls_back_to_the_ordinary_call(
    example_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorflow.python.eager import core

    loaded = RUNTIME.load(example_models / "mlp" / "1", signature=None, options={})
    inputs = _inputs(loaded, 2)
    monkeypatch.delattr(core, "_status_to_exception")  # as in a TensorFlow without it
    model = RUNTIME.load(example_models / "mlp" / "1", signature=None, options={})
    assert model.call_path.startswith("ordinary (TensorFlow's flat call API is missing")
    assert model._call == model.call_ordinary
    _same(model.predict(inputs), loaded.predict(inputs))
    with pytest.raises(InvalidInputError, match=r"'image'.*expected shape"):
        model.predict({"image": np.zeros((2, 5), np.float32)})


def test_outputs_never_share_the_caller_s_input_memory(tmp_path: Path) -> None:
    """Inputs are not copied into tensors (an aligned array is aliased), so an output that
    is the input (identity, reshape) must still come back as an array of its own, and
    kernels that could work in place must leave the caller's array alone."""
    import tensorflow as tf

    class Same(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"same": tf.identity(x), "flat": tf.reshape(x, [-1]), "up": tf.nn.relu(x) + 1}

    module = Same()
    signatures = {"serving_default": module.serve}
    tf.saved_model.save(module, str(tmp_path / "same"), signatures=signatures)
    model = RUNTIME.load(tmp_path / "same", signature=None, options={})
    assert model.call_path == "flat"
    buffer = np.zeros(4096 * 4 + 16, np.float32)
    start = (-buffer.ctypes.data % 64) // 4  # 64-byte aligned: TensorFlow aliases it
    x = buffer[start : start + 4096 * 4].reshape(4096, 4)
    x[:] = np.arange(x.size, dtype=np.float32).reshape(x.shape) - 100
    before = x.copy()
    out = model.predict({"x": x})
    for name, value in out.items():
        assert not np.shares_memory(value, x), name
        value[...] = 7
    np.testing.assert_array_equal(x, before)

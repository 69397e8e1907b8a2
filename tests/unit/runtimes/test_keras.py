from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_models import MLP_NBYTES, Mlp

from keepwarm.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.runtimes import detect_runtime
from keepwarm.runtimes.keras import KerasModel, KerasRuntime

RUNTIME = KerasRuntime()


@pytest.fixture(scope="module")
def loaded(mlp: Mlp) -> KerasModel:
    return RUNTIME.load(mlp.keras, signature=None, options={})


def test_detects_a_file_and_a_directory_holding_one(mlp: Mlp, tmp_path: Path) -> None:
    assert RUNTIME.detect(mlp.keras)
    assert RUNTIME.detect(mlp.keras / "model.keras")
    assert not RUNTIME.detect(mlp.savedmodel)
    assert detect_runtime(mlp.keras).name == "keras"
    for name in ("a.keras", "b.keras"):
        shutil.copy(mlp.keras / "model.keras", tmp_path / name)
    assert not RUNTIME.detect(tmp_path)  # ambiguous
    shutil.copy(mlp.keras / "model.keras", tmp_path / "model.keras")
    assert RUNTIME.detect(tmp_path)  # model.keras is preferred


def test_signature_uses_layer_names(loaded: KerasModel) -> None:
    sig = loaded.signature
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("x", np.dtype("float32"), (None, 8))
    ]
    assert [(s.name, s.dtype, s.shape) for s in sig.outputs] == [
        ("probs", np.dtype("float32"), (None, 4))
    ]
    assert (loaded.nbytes, loaded.nbytes_source) == (MLP_NBYTES, "framework")


def test_predict_matches_the_framework(mlp: Mlp, loaded: KerasModel, batch: np.ndarray) -> None:
    out = loaded.predict({"x": batch})
    assert np.abs(out["probs"] - mlp.reference(batch)).max() <= 1e-5
    single = loaded.predict({"x": batch[:1]})  # batch dimension is free
    assert single["probs"].shape == (1, 4)


def test_float64_is_cast_and_wrong_shape_refused(loaded: KerasModel, batch: np.ndarray) -> None:
    out = loaded.predict(loaded.signature.coerce(batch.astype(np.float64)))
    np.testing.assert_allclose(out["probs"], loaded.predict({"x": batch})["probs"], atol=1e-6)
    with pytest.raises(InvalidInputError, match="'x'"):
        loaded.signature.coerce({"x": np.zeros((3, 9), np.float32)})


def test_multiple_inputs_and_outputs(tmp_path: Path) -> None:
    import keras

    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b", dtype="int32")
    joined = keras.layers.Concatenate()([a, keras.ops.cast(b, "float32")])
    model = keras.Model(
        {"a": a, "b": b},
        [keras.layers.Dense(2, name="y1")(joined), keras.layers.Dense(1, name="y2")(joined)],
    )
    model.save(tmp_path / "multi.keras")
    served = RUNTIME.load(tmp_path / "multi.keras", signature=None, options={})
    assert [s.name for s in served.signature.inputs] == ["a", "b"]
    assert served.signature.inputs[1].dtype == np.dtype("int32")
    inputs = {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 2), np.int32)}
    out = served.predict(inputs)
    want = model(inputs)
    assert sorted(out) == ["y1", "y2"]
    np.testing.assert_allclose(out["y1"], np.asarray(want[0]), atol=1e-5)
    np.testing.assert_allclose(out["y2"], np.asarray(want[1]), atol=1e-5)


def test_truncated_file_is_incomplete_and_refused(mlp: Mlp, tmp_path: Path) -> None:
    data = (mlp.keras / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(data[: len(data) // 2])
    assert "truncated" in (RUNTIME.incomplete(tmp_path) or "")
    with pytest.raises(ModelLoadError) as info:
        RUNTIME.load(tmp_path, signature=None, options={})
    assert info.value.format == "keras"


def test_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(ModelLoadError, match="cannot load the Keras model") as info:
        RUNTIME.load(tmp_path, signature=None, options={})
    assert info.value.__cause__ is not None


def test_closed_model_refuses_calls(mlp: Mlp, batch: np.ndarray) -> None:
    model = RUNTIME.load(mlp.keras, signature=None, options={})
    model.close()
    with pytest.raises(UnavailableError):
        model.predict({"x": batch})


def test_an_unknown_signature_name_is_not_found(mlp: Mlp) -> None:
    with pytest.raises(ModelNotFoundError, match=r"'other'.*available signatures: serving_default"):
        RUNTIME.load(mlp.keras, signature="other", options={})
    model = RUNTIME.load(mlp.keras, signature="serving_default", options={})
    assert model.signature.name == "serving_default"
